"""Tables of results.json files: mean ± std over seeds, per variant.

  python experiments/summarize.py runs/fashion_mnist_study

Run directories are named VARIANT-seedS (as experiments/fashion_mnist_study.py
makes them); every run of a variant is one seed of its row. A second table gives
the ACN variants' Phase A training metrics of the last epoch (history.csv).
"""

import argparse
import collections
import csv
import glob
import json
import os
import re
import statistics
from typing import Dict, List, Sequence

_RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def load_runs(root: str) -> Dict[str, List[dict]]:
  """results.json of every VARIANT-seedS directory under `root`, by variant."""
  runs = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(root, "*", "results.json"))):
    match = _RUN_NAME.match(os.path.basename(os.path.dirname(path)))
    if not match:
      continue
    with open(path) as handle:
      runs[match.group("variant")].append(json.load(handle))
  return dict(runs)


def _mean_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f"{100 * values[0]:.2f}"
  return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


# Baselines first, then the method, then its ablations; other variants after.
_ORDER = ("independent", "dml", "acn", "acn_no_wrc", "acn_no_ras", "acn_no_gan")


def _display_order(variant: str):
  return (_ORDER.index(variant) if variant in _ORDER else len(_ORDER), variant)


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
          "ensemble top-1 (%)", "test divergence (JS)", "s / epoch (median)"]


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


def phase_a_rows(root: str) -> List[List[str]]:
  """Mean over seeds of the last epoch's Phase A metrics, per ACN variant
  (finished runs only, as in `load_runs`)."""
  histories = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(root, "*", "results.json"))):
    model_dir = os.path.dirname(path)
    match = _RUN_NAME.match(os.path.basename(model_dir))
    if match and os.path.exists(os.path.join(model_dir, "history.csv")):
      histories[match.group("variant")].append(last_epoch(model_dir))
  rows = []
  for variant in sorted(histories, key=_display_order):
    epochs = [h for h in histories[variant] if all(k in h for k in PHASE_A_METRICS)]
    if not epochs:
      continue
    rows.append([variant, str(len(epochs))] + [
        f"{statistics.mean(h[key] for h in epochs):.4f}" for key in PHASE_A_METRICS])
  return rows


def format_markdown(rows: List[List[str]], header: Sequence[str] = HEADER) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("root")
  arguments = parser.parse_args()
  runs = load_runs(arguments.root)
  if not runs:
    raise SystemExit(f"No VARIANT-seedS/results.json under {arguments.root}.")
  print(format_markdown(summary_rows(runs)))
  phase_a = phase_a_rows(arguments.root)
  if phase_a:
    print("\nPhase A in training, last epoch (mean over seeds):\n")
    print(format_markdown(phase_a, PHASE_A_HEADER))


if __name__ == "__main__":
  main()
