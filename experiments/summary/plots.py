"""The figures of a summary: mean ± std bars per variant, and the runs'
training curves from history.csv."""

import math
import os
import statistics
from typing import Dict, List

from summary import runs


def draw_chart(by_variant: Dict[str, List[dict]], path: str) -> None:
  """Mean ± std (over seeds) of ensemble and mean classifier top-1, per variant."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot

  variants = sorted(by_variant, key=runs.display_order)
  figure, axis = pyplot.subplots(figsize=(1.2 * len(variants) + 2, 4))
  width = 0.38
  for offset, kind in ((-width / 2, "ensemble"), (width / 2, "mean classifier")):
    scores = [[100 * v for v in runs.scores(by_variant[variant])[kind]]
              for variant in variants]
    means = [statistics.mean(values) for values in scores]
    spreads = [statistics.stdev(values) if len(values) > 1 else 0.0 for values in scores]
    axis.bar([i + offset for i in range(len(variants))], means, width, yerr=spreads,
             capsize=4, label=f"{kind} top-1")
  low = min(100 * min(min(runs.scores(by_variant[v])["mean classifier"]),
                      min(runs.scores(by_variant[v])["ensemble"])) for v in variants)
  axis.set_ylim(low - 1.0, None)
  axis.set_xticks(range(len(variants)), variants, rotation=20)
  axis.set_ylabel("test top-1 (%), mean ± std over seeds")
  axis.legend(loc="upper left", ncol=2)  # Above the bars: their tops are near each other.
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  pyplot.close(figure)


# Panels of --curves: history.csv column and title. A panel is drawn when some
# run logged the column (val_* needs a validation split, health_* an ACN run).
CURVE_PANELS = (("ensemble_top1", "ensemble top-1, training"),
                ("val_ensemble_top1", "ensemble top-1, validation"),
                ("health_divergence_ratio_generated",
                 "Phase A health: Div(x̃0) / Div(x)"))


def _curve(history: Dict[str, list], column: str) -> Dict[int, float]:
  """{epoch (from 1): value} of one history.csv column, NA and nan left out."""
  epochs = history.get("epoch") or []
  values = history.get(column) or []
  return {int(epoch) + 1: value for epoch, value in zip(epochs, values)
          if epoch is not None and value is not None and not math.isnan(value)}


def draw_curves(run_dirs: Dict[str, List[str]], path: str
                ) -> Dict[str, Dict[str, dict]]:
  """Training curves of each variant's runs (`runs.finished_runs`) from history.csv.

  A colour per variant: each seed a thin line, the mean over the seeds with a
  value at each epoch a thick one. Returns what was drawn, read back from the
  lines: {column: {variant: {"seeds": [(epochs, values)], "mean": (epochs, values)}}}.
  """
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot
  import numpy as np

  import plot  # experiments/plot.py: its history.csv reader.

  variants = sorted(run_dirs, key=runs.display_order)
  histories = {variant: [plot.read_history(model_dir) for model_dir in run_dirs[variant]
                         if os.path.exists(os.path.join(model_dir, "history.csv"))]
               for variant in variants}
  curves = {column: {variant: [curve for curve in (_curve(history, column)
                                                   for history in histories[variant])
                               if curve]
                     for variant in variants}
            for column, _ in CURVE_PANELS}
  panels = [(column, title) for column, title in CURVE_PANELS
            if any(curves[column].values())]
  if not panels:
    raise SystemExit("No history.csv with ensemble_top1 among the runs.")
  figure, axes = pyplot.subplots(1, len(panels), figsize=(5 * len(panels), 3.8),
                                 squeeze=False)
  drawn = {}
  for axis, (column, title) in zip(axes[0], panels):
    drawn[column] = {}
    for index, variant in enumerate(variants):
      seeds = curves[column][variant]
      if not seeds:
        continue
      colour = f"C{index}"
      seed_lines = [axis.plot(sorted(curve), [curve[e] for e in sorted(curve)],
                              color=colour, linewidth=0.8, alpha=0.4)[0]
                    for curve in seeds]
      epochs = sorted(set().union(*seeds))
      mean = [float(np.mean([curve[e] for curve in seeds if e in curve])) for e in epochs]
      (mean_line,) = axis.plot(epochs, mean, color=colour, linewidth=2.2,
                               label=f"{variant} (n={len(seeds)})")
      drawn[column][variant] = {
          "seeds": [(line.get_xdata(), line.get_ydata()) for line in seed_lines],
          "mean": (mean_line.get_xdata(), mean_line.get_ydata())}
    if column == "health_divergence_ratio_generated":
      axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)  # x̃0 ≈ x.
      axis.set_yscale("log")  # Ratios: variants lie orders of magnitude apart.
    axis.set_title(title)
    axis.set_xlabel("epoch")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  pyplot.close(figure)
  return drawn
