"""Accuracy and divergence curves of one or more runs, from their history.csv.

  python experiments/plot.py runs/a runs/b --out=curves.png [--metrics=ensemble_top1,divergence]

Each metric gets a panel; each run a line (its directory name), and the
validation curve (val_METRIC) dashed when the run had a validation split.
"""

import argparse
import csv
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_history(model_dir: str):
  """{column: [float or None per epoch]} from MODEL_DIR/history.csv."""
  path = os.path.join(model_dir, "history.csv")
  if not os.path.exists(path):
    raise SystemExit(f"No history.csv in {model_dir}: is it a run directory?")
  with open(path) as handle:
    rows = list(csv.DictReader(handle))
  columns = {}
  for row in rows:
    for key, value in row.items():
      try:
        number = float(value)
      except (TypeError, ValueError):  # Keras' CSVLogger writes NA for absent values.
        number = None
      columns.setdefault(key, []).append(number)
  return columns


def plot(model_dirs, metrics, out: str) -> None:
  columns = math.ceil(len(metrics) / 2) if len(metrics) > 2 else len(metrics)
  rows = math.ceil(len(metrics) / columns)
  figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows),
                              squeeze=False)
  histories = {os.path.basename(os.path.normpath(d)): read_history(d) for d in model_dirs}
  for index, metric in enumerate(metrics):
    axis = axes[index // columns][index % columns]
    for run_index, (name, history) in enumerate(histories.items()):
      epochs = [e + 1 for e in range(len(history.get("epoch", [])))]
      for key, style in ((metric, "-"), (f"val_{metric}", "--")):
        values = history.get(key)
        if values and any(v is not None for v in values):
          points = [(e, v) for e, v in zip(epochs, values) if v is not None]
          axis.plot(*zip(*points), style, color=f"C{run_index}",
                    label=f"{name} {'val' if style == '--' else 'train'}")
    axis.set_title(metric)
    axis.set_xlabel("epoch")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
  for index in range(len(metrics), rows * columns):
    axes[index // columns][index % columns].axis("off")
  figure.tight_layout()
  figure.savefig(out, dpi=110)
  plt.close(figure)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("model_dirs", nargs="+")
  parser.add_argument("--out", required=True)
  parser.add_argument("--metrics", default="ensemble_top1,c0_top1,divergence,loss")
  arguments = parser.parse_args()
  plot(arguments.model_dirs, arguments.metrics.split(","), arguments.out)
  print(f"Wrote {arguments.out}")


if __name__ == "__main__":
  main()
