"""The run directories a summary reads: finished runs by variant, their results
(test split, or the last validated epoch), their last epoch's metrics, and the
order variants are shown in."""

import collections
import csv
import glob
import json
import os
import re
import statistics
from typing import Dict, List, Sequence, Union

_RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")

# Baselines and DML's rivals first, then the method, then its ablations; other
# variants after.
_ORDER = ("independent", "dml", "dml_noise", "dml_compute_matched", "dml_epochs_3x",
          "dml_epochs_16x", "kdcl", "one", "cl_ilr", "acn", "acn_epochs_4x", "acn_no_wrc",
          "acn_no_ras", "acn_no_gan", "acn_no_generator", "acn_no_generator_epochs_4x")


def display_order(variant: str):
  """Sort key of a variant in tables and plots."""
  return (_ORDER.index(variant) if variant in _ORDER else len(_ORDER), variant)


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


def scores(results: List[dict]) -> Dict[str, List[float]]:
  """{"ensemble" / "mean classifier": top-1 of each run}."""
  return {"ensemble": [r["ensemble_top1"] for r in results],
          "mean classifier": [statistics.mean(c["top1"] for c in r["classifiers"])
                              for r in results]}
