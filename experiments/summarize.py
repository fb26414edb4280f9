"""Tables of results.json files: mean ± std over seeds, per variant.

  python experiments/summarize.py runs/fashion_mnist_study [--markdown]

Run directories are named VARIANT-seedS (as experiments/fashion_mnist_study.py
makes them); every run of a variant is one seed of its row.
"""

import argparse
import collections
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


def format_markdown(rows: List[List[str]]) -> str:
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
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


if __name__ == "__main__":
  main()
