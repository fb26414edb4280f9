"""Tables of results.json files: mean ± std over seeds, per variant.

  python experiments/summarize.py runs/fashion_mnist_small [--baseline=dml]
      [--chart=chart.png] [--curves=curves.png]
  python experiments/summarize.py runs/my-dml-seed0 runs/my-dml-seed1 runs/my-acn ...

Each PATH is a folder of model_dirs named VARIANT-seedS (as experiments/study.py
makes them) or a model_dir itself (its variant: its name without -seedS); every
run of a variant is one seed of its row. The main table: per variant, ensemble
and mean classifier top-1, the paired difference to the baseline over the seeds
both have (mean, and the two-sided p of a paired t-test), and the cost: training
seconds per run, training images per second (results.json) and training time in
the baseline's (paired by seed, over the seeds whose two runs had the same kind of
machine). Further tables:
per-classifier top-1 and divergence; each variant's
difference to the baseline against the pooled seed spread; Phase A's health on
the test split after training (results.json, acn_tf/method/health.py); the ACN
variants' Phase A training metrics of the last epoch (history.csv). `--chart`
draws mean ± std bars of ensemble and mean classifier top-1 per variant;
`--curves` the runs' training curves from history.csv, a colour per variant: each
seed a thin line, the mean over seeds a thick one (ensemble top-1 in training
and, where logged, validation; ACN's Phase A health Div(x̃0) / Div(x)).
"""

import argparse
import collections
import csv
import glob
import json
import math
import os
import re
import statistics
from typing import Dict, List, Sequence, Tuple, Union

_RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def _seed_of(model_dir: str):
  match = _RUN_NAME.match(os.path.basename(os.path.normpath(model_dir)))
  return int(match.group("seed")) if match else None


def finished_runs(paths: Union[str, Sequence[str]]) -> Dict[str, List[str]]:
  """Finished runs (a results.json) by variant, in name order. Each path is a
  model_dir itself (its variant: its name without -seedS) or a folder of
  VARIANT-seedS model_dirs."""
  runs = collections.defaultdict(list)
  for path in [paths] if isinstance(paths, str) else paths:
    if os.path.exists(os.path.join(path, "results.json")):
      name = os.path.basename(os.path.normpath(path))
      match = _RUN_NAME.match(name)
      runs[match.group("variant") if match else name].append(path)
      continue
    for results in sorted(glob.glob(os.path.join(path, "*", "results.json"))):
      model_dir = os.path.dirname(results)
      match = _RUN_NAME.match(os.path.basename(model_dir))
      if match:
        runs[match.group("variant")].append(model_dir)
  return dict(runs)


def load_runs(root: Union[str, Sequence[str]], split: str = "test") -> Dict[str, List[dict]]:
  """results.json of every finished run of `root` (see `finished_runs`), by variant.

  split="validation" replaces the test-split figures by the last epoch's
  validation ones (history.csv), for runs trained with a validation split:
  the numbers settings are chosen on.
  """
  runs = collections.defaultdict(list)
  for variant, model_dirs in finished_runs(root).items():
    for model_dir in model_dirs:
      with open(os.path.join(model_dir, "results.json")) as handle:
        results = json.load(handle)
      if results.get("seed") is None:  # Older results: the seed of the folder's name.
        results["seed"] = _seed_of(model_dir)
      if split == "validation":
        results = _validation_results(model_dir, results)
        if results is None:
          continue
      runs[variant].append(results)
  return dict(runs)


def _validation_results(model_dir: str, results: dict):
  """`results` with accuracies and divergence of the last validated epoch."""
  with open(os.path.join(model_dir, "history.csv")) as handle:
    rows = [row for row in csv.DictReader(handle)
            if row.get("val_ensemble_top1") not in (None, "", "NA", "nan")]
  if not rows:
    return None
  last = rows[-1]
  return {**results,
          "classifiers": [{**classifier, "top1": float(last[f"val_c{i}_top1"])}
                          for i, classifier in enumerate(results["classifiers"])],
          "ensemble_top1": float(last["val_ensemble_top1"]),
          "mean_divergence": float(last["val_divergence"]),
          "phase_a_health": None}


def _mean_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f"{100 * values[0]:.2f}"
  return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


# Baselines and DML's rivals first, then the method, then its ablations; other
# variants after.
_ORDER = ("independent", "dml", "dml_noise", "dml_compute_matched", "dml_epochs_3x", "acn",
          "acn_no_wrc", "acn_no_ras", "acn_no_gan")


def _display_order(variant: str):
  return (_ORDER.index(variant) if variant in _ORDER else len(_ORDER), variant)


# -- The main table: accuracy, paired difference to the baseline, cost -------------


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
  """The continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, epsilon = 1e-300, 1e-15
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  fraction = d
  for m in range(1, 1000):
    for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                      -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
      d = 1.0 + numerator * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + numerator / c
      c = c if abs(c) > tiny else tiny
      fraction *= c * d
    if abs(c * d - 1.0) < epsilon:
      break
  return fraction


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
  """I_x(a, b), by its continued fraction on the side where it converges fast."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) +
                   a * math.log(x) + b * math.log1p(-x))
  if x < (a + 1.0) / (a + b + 2.0):
    return front * _beta_continued_fraction(x, a, b) / a
  return 1.0 - front * _beta_continued_fraction(1.0 - x, b, a) / b


def t_two_sided_p(t: float, df: int) -> float:
  """P(|T| >= |t|) for Student's t with `df` degrees of freedom (no scipy here)."""
  if math.isinf(t):
    return 0.0
  return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def paired_t_test(differences: Sequence[float]):
  """(mean difference, two-sided p of the paired t-test; None below two pairs)."""
  mean = statistics.mean(differences)
  if len(differences) < 2:
    return mean, None
  spread = statistics.stdev(differences)
  if spread == 0.0:
    return mean, 1.0 if mean == 0.0 else 0.0
  t = mean / (spread / math.sqrt(len(differences)))
  return mean, t_two_sided_p(t, len(differences) - 1)


def _by_seed(results: List[dict]) -> Dict[int, dict]:
  """{seed: results} of the seeds that occur exactly once."""
  seeds = [r.get("seed") for r in results]
  return {seed: r for seed, r in zip(seeds, results)
          if seed is not None and seeds.count(seed) == 1}


def paired_differences(variant: List[dict], baseline: List[dict]) -> Dict[str, List[float]]:
  """{"ensemble" / "mean classifier": variant − baseline per seed} over the seeds
  that each has exactly once, in seed order."""
  mine, theirs = _by_seed(variant), _by_seed(baseline)
  common = sorted(set(mine) & set(theirs))
  differences = {}
  for kind in ("ensemble", "mean classifier"):
    differences[kind] = [_scores([mine[seed]])[kind][0] - _scores([theirs[seed]])[kind][0]
                         for seed in common]
  return differences


def same_machine(run: dict, other: dict) -> bool:
  """Whether two runs' `machine` records (results.json, acn_tf/platform.py's
  machine_info: what speed depends on, e.g. the instruction sets and
  ONEDNN_MAX_CPU_ISA) are equal. Runs written before the record existed count as
  the same: they ran on this project's one machine of the time."""
  if "machine" not in run or "machine" not in other:
    return True
  return run["machine"] == other["machine"]


def cost_pairs(variant: List[dict], baseline: List[dict]) -> Tuple[List[int], int]:
  """The seeds whose two runs (one each) both recorded their training seconds, on
  the same kind of machine (`same_machine`), and how many seeds both have."""
  mine, theirs = _by_seed(variant), _by_seed(baseline)
  both = sorted(set(mine) & set(theirs))
  paired = [seed for seed in both
            if mine[seed].get("train_seconds") and theirs[seed].get("train_seconds")
            and same_machine(mine[seed], theirs[seed])]
  return paired, len(both)


def training_time_ratio(variant: List[dict], baseline: List[dict]):
  """The variant's training seconds over the baseline's, summed over the seeds of
  `cost_pairs`: how many baseline runs' compute one run costs on the machine that
  ran both, e.g. the factor `dml_compute_matched` of experiments/study.py needs.
  A seed whose two runs ran on machines of different speed would measure the
  machines, so it is left out. None when no seed pairs."""
  mine, theirs = _by_seed(variant), _by_seed(baseline)
  common, _ = cost_pairs(variant, baseline)
  if not common:
    return None
  return (sum(mine[seed]["train_seconds"] for seed in common)
          / sum(theirs[seed]["train_seconds"] for seed in common))


def _ratio_cell(variant: List[dict], baseline: List[dict]) -> str:
  """training_time_ratio, naming the seeds it pairs when some of those both have
  were left out (run on machines of different kinds, or without their seconds)."""
  ratio = training_time_ratio(variant, baseline)
  if ratio is None:
    return "–"
  paired, both = cost_pairs(variant, baseline)
  if len(paired) == both:
    return f"{ratio:.2f}"
  return f"{ratio:.2f} (seeds {','.join(map(str, paired))})"


def _p_value(p) -> str:
  if p is None:
    return "–"
  return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cost(values: Sequence, digits: int) -> str:
  """Mean ± std of the values that were recorded (older runs have none)."""
  values = [value for value in values if value is not None]
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main_rows(runs: Dict[str, List[dict]], baseline: str = "dml") -> List[List[str]]:
  """One row per variant: seeds, ensemble and mean classifier top-1 (mean ± std),
  the paired difference to `baseline` in points with its p, for each of the two,
  then training seconds per run, training images per second and the training
  time in the baseline's (`training_time_ratio`)."""
  rows = []
  for variant in sorted(runs, key=_display_order):
    results = runs[variant]
    scores = _scores(results)
    row = [variant, str(len(results)), _mean_std(scores["ensemble"]),
           _mean_std(scores["mean classifier"])]
    if variant == baseline or baseline not in runs:
      row += ["–"] * 5
    else:
      differences = paired_differences(results, runs[baseline])
      row.append(str(len(differences["ensemble"])))
      for kind in ("ensemble", "mean classifier"):
        if not differences[kind]:
          row += ["–", "–"]
          continue
        mean, p = paired_t_test(differences[kind])
        row += [f"{100 * mean:+.2f}", _p_value(p)]
    row += [_cost([r.get("train_seconds") for r in results], 0),
            _cost([r.get("train_images_per_second") for r in results], 0)]
    row.append(_ratio_cell(results, runs.get(baseline, [])))
    rows.append(row)
  return rows


def main_header(baseline: str = "dml") -> List[str]:
  return ["variant", "seeds", "ensemble top-1 (%)", "mean classifier top-1 (%)",
          f"seeds paired with {baseline}", f"ensemble − {baseline}", "p",
          f"mean classifier − {baseline}", "p", "train s / run", "train images / s",
          f"train time / {baseline}'s"]


# -- Further tables -------------------------------------------------------------------


def summary_rows(runs: Dict[str, List[dict]]) -> List[List[str]]:
  """One row per variant: seeds, per-classifier top-1, mean top-1, ensemble top-1,
  test divergence, seconds per epoch."""
  rows = []
  for variant in sorted(runs, key=_display_order):
    results = runs[variant]
    count = len(results[0]["classifiers"])
    per_classifier = [_mean_std([r["classifiers"][i]["top1"] for r in results])
                      for i in range(count)]
    mean_top1 = [statistics.mean(c["top1"] for c in r["classifiers"]) for r in results]
    rows.append([
        variant,
        str(len(results)),
        " / ".join(per_classifier),
        _mean_std(mean_top1),
        _mean_std([r["ensemble_top1"] for r in results]),
        f"{statistics.mean(r['mean_divergence'] for r in results):.4f}",
        f"{statistics.median(r['seconds_per_epoch'] for r in results):.1f}",
    ])
  return rows


HEADER = ["variant", "seeds", "top-1 per classifier (%)", "mean classifier top-1 (%)",
          "ensemble top-1 (%)", "divergence (JS)", "s / epoch (median)"]


# What the search did, in training: Div at x̃0 and at x̃, and the share kept.
PHASE_A_METRICS = ("divergence_x0", "divergence_search", "kept_fraction")
PHASE_A_HEADER = ["variant", "seeds", "Div at x̃0 (JS)", "Div at x̃ (JS)", "kept fraction"]


def last_epoch(model_dir: str) -> Dict[str, float]:
  """The last row of a run's history.csv, as numbers (NA entries dropped)."""
  with open(os.path.join(model_dir, "history.csv")) as handle:
    rows = list(csv.DictReader(handle))
  values = {}
  for key, value in rows[-1].items():
    try:
      values[key] = float(value)
    except (TypeError, ValueError):
      continue
  return values


def phase_a_rows(root: Union[str, Sequence[str]]) -> List[List[str]]:
  """Mean over seeds of the last epoch's Phase A metrics, per ACN variant
  (finished runs only, as in `load_runs`)."""
  histories = {variant: [last_epoch(model_dir) for model_dir in model_dirs
                         if os.path.exists(os.path.join(model_dir, "history.csv"))]
               for variant, model_dirs in finished_runs(root).items()}
  rows = []
  for variant in sorted(histories, key=_display_order):
    epochs = [h for h in histories[variant] if all(k in h for k in PHASE_A_METRICS)]
    if not epochs:
      continue
    rows.append([variant, str(len(epochs))] + [
        f"{statistics.mean(h[key] for h in epochs):.4f}" for key in PHASE_A_METRICS])
  return rows


# Phase A health after training on the test split (results.json "phase_a_health").
HEALTH_FIGURES = (("divergence_real", "Div(x)", 4), ("divergence_generated", "Div(x̃0)", 4),
                  ("divergence_searched", "Div(x̃)", 4),
                  ("divergence_ratio_generated", "Div(x̃0) / Div(x)", 2),
                  ("divergence_ratio_searched", "Div(x̃) / Div(x)", 2),
                  ("kept_searched", "kept fraction (x̃)", 3),
                  ("discriminator_real_accuracy", "d accuracy, real", 2),
                  ("discriminator_fake_accuracy", "d accuracy, generated", 2),
                  ("residual_linf", "|x̃0 − x|∞", 3))
HEALTH_HEADER = ["variant", "seeds", *[label for _, label, _ in HEALTH_FIGURES]]


def health_rows(runs: Dict[str, List[dict]]) -> List[List[str]]:
  """Mean ± std over seeds of each health figure, per ACN variant."""
  rows = []
  for variant in sorted(runs, key=_display_order):
    healths = [r["phase_a_health"] for r in runs[variant] if r.get("phase_a_health")]
    if not healths:
      continue
    row = [variant, str(len(healths))]
    for key, _, digits in HEALTH_FIGURES:
      values = [h[key] for h in healths if h.get(key) is not None]
      if not values:
        row.append("–")
      elif len(values) == 1:
        row.append(f"{values[0]:.{digits}f}")
      else:
        row.append(f"{statistics.mean(values):.{digits}f} ± "
                   f"{statistics.stdev(values):.{digits}f}")
    rows.append(row)
  return rows


def _scores(results: List[dict]) -> Dict[str, List[float]]:
  return {"ensemble": [r["ensemble_top1"] for r in results],
          "mean classifier": [statistics.mean(c["top1"] for c in r["classifiers"])
                              for r in results]}


def comparison_rows(runs: Dict[str, List[dict]], baseline: str) -> List[List[str]]:
  """Each variant minus `baseline` (points of top-1), and the pooled seed spread
  sqrt((s_a^2 + s_b^2) / 2) it must exceed to say more than the seeds do."""
  if baseline not in runs or len(runs[baseline]) < 2:
    return []
  reference = _scores(runs[baseline])
  rows = []
  for variant in sorted(runs, key=_display_order):
    scores = _scores(runs[variant])
    if variant == baseline or len(runs[variant]) < 2:
      continue
    row = [variant, str(len(runs[variant]))]
    for kind in ("ensemble", "mean classifier"):
      difference = 100 * (statistics.mean(scores[kind]) - statistics.mean(reference[kind]))
      pooled = 100 * ((statistics.variance(scores[kind]) +
                       statistics.variance(reference[kind])) / 2) ** 0.5
      row += [f"{difference:+.2f}", f"{pooled:.2f}",
              "yes" if abs(difference) > pooled else "no"]
    rows.append(row)
  return rows


def comparison_header(baseline: str) -> List[str]:
  return ["variant", "seeds", f"ensemble − {baseline}", "pooled std", "beyond spread",
          f"mean classifier − {baseline}", "pooled std", "beyond spread"]


def draw_chart(runs: Dict[str, List[dict]], path: str) -> None:
  """Mean ± std (over seeds) of ensemble and mean classifier top-1, per variant."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot

  variants = sorted(runs, key=_display_order)
  figure, axis = pyplot.subplots(figsize=(1.2 * len(variants) + 2, 4))
  width = 0.38
  for offset, kind in ((-width / 2, "ensemble"), (width / 2, "mean classifier")):
    scores = [[100 * v for v in _scores(runs[variant])[kind]] for variant in variants]
    means = [statistics.mean(values) for values in scores]
    spreads = [statistics.stdev(values) if len(values) > 1 else 0.0 for values in scores]
    axis.bar([i + offset for i in range(len(variants))], means, width, yerr=spreads,
             capsize=4, label=f"{kind} top-1")
  low = min(100 * min(min(_scores(runs[v])["mean classifier"]),
                      min(_scores(runs[v])["ensemble"])) for v in variants)
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
  """Training curves of each variant's runs (`finished_runs`) from history.csv.

  A colour per variant: each seed a thin line, the mean over the seeds with a
  value at each epoch a thick one. Returns what was drawn, read back from the
  lines: {column: {variant: {"seeds": [(epochs, values)], "mean": (epochs, values)}}}.
  """
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot
  import numpy as np

  import plot  # experiments/plot.py: its history.csv reader.

  variants = sorted(run_dirs, key=_display_order)
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
      axis.set_yscale("log")  # Ratios: without WRC they reach 50, with it about 2.
    axis.set_title(title)
    axis.set_xlabel("epoch")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  pyplot.close(figure)
  return drawn


def format_markdown(rows: List[List[str]], header: Sequence[str] = HEADER) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", metavar="PATH",
                      help="a folder of VARIANT-seedS model_dirs, or a model_dir")
  parser.add_argument("--baseline", default="dml")
  parser.add_argument("--split", choices=("test", "validation"), default="test",
                      help="validation: the last validated epoch of history.csv")
  parser.add_argument("--chart", default=None, help="PNG file for the bar chart")
  parser.add_argument("--curves", default=None,
                      help="PNG file for the training curves (history.csv) of every "
                      "finished run")
  arguments = parser.parse_args()
  runs = load_runs(arguments.paths, arguments.split)
  if not runs:
    raise SystemExit("No finished run (results.json) in or under "
                     f"{' '.join(arguments.paths)}.")
  print(f"Against {arguments.baseline}, paired over the seeds both have "
        f"(points of {arguments.split} top-1; p: paired t-test, two-sided):\n")
  print(format_markdown(main_rows(runs, arguments.baseline), main_header(arguments.baseline)))
  print("\nPer classifier:\n")
  print(format_markdown(summary_rows(runs)))
  comparison = comparison_rows(runs, arguments.baseline)
  if comparison:
    print(f"\nDifference to {arguments.baseline} (points of {arguments.split} top-1):\n")
    print(format_markdown(comparison, comparison_header(arguments.baseline)))
  health = health_rows(runs)
  if health:
    print("\nPhase A health on the test split after training (mean ± std over seeds):\n")
    print(format_markdown(health, HEALTH_HEADER))
  if arguments.chart:
    draw_chart(runs, arguments.chart)
  if arguments.curves:
    draw_curves(finished_runs(arguments.paths), arguments.curves)
  phase_a = phase_a_rows(arguments.paths)
  if phase_a:
    print("\nPhase A in training, last epoch (mean over seeds):\n")
    print(format_markdown(phase_a, PHASE_A_HEADER))


if __name__ == "__main__":
  main()
