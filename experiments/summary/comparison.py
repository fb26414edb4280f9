"""A variant against the baseline: runs paired by seed (and, for the cost, by
machine), the paired t-test of their differences, and the training-time ratio."""

import statistics
from typing import Dict, List, Sequence, Tuple

from scipy import stats

from summary import runs


def paired_t_test(differences: Sequence[float]):
  """(mean difference, two-sided p of the paired t-test; None below two pairs).

  Differences that are all equal have no spread, where the t statistic is
  undefined: p is 1 when they are all zero, else 0."""
  mean = statistics.mean(differences)
  if len(differences) < 2:
    return mean, None
  if statistics.stdev(differences) == 0.0:
    return mean, 1.0 if mean == 0.0 else 0.0
  return mean, float(stats.ttest_1samp(differences, 0.0).pvalue)


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
    differences[kind] = [runs.scores([mine[seed]])[kind][0]
                         - runs.scores([theirs[seed]])[kind][0]
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
