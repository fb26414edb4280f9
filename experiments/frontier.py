"""Test top-1 against training compute: every method and length a point.

  python experiments/frontier.py experiments/results/main experiments/results/frontier \
      --step_costs=experiments/results/frontier/step_costs.json \
      [--figure=experiments/figures/fashion_mnist_small_frontier.png]

Each PATH is what summarize.py reads (folders of VARIANT-seedS runs). A run's
compute is its training steps times its method's step time, in DML steps, from
`--step_costs` (the JSON of `benchmark.py --json --experiment=EXPERIMENT`, measured
alone): ACN's warm-up epochs count as DML steps. The unit is one DML run of the
run's experiment at its registered length, so a point's cost does not depend on
what else shared the CPU while it trained. Runs of several experiments (regimes)
make one table and one row of the figure each, every point compared with DML of its
own regime. Prints the tables (mean ± std over seeds, and paired differences with
two-sided paired t-tests against DML of the same length and against the DML point
nearest in compute) and draws the figure: ensemble and mean classifier top-1, mean ±
std over seeds, against compute on a log scale.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from acn_tf.config import registry  # noqa: E402
from summary import comparison, runs, tables  # noqa: E402

# A variant's method family: its name without a length suffix; DML's 4x is a length.
_LENGTH_SUFFIX = re.compile(r"_epochs_\d+(_\d+)?x$")
_ALIASES = {"dml_compute_matched": "dml"}

LABELS = {
    "independent": "independent",
    "dml": "DML",
    "dml_noise": "DML + noise",
    "kdcl": "KDCL",
    "one": "ONE",
    "cl_ilr": "CL-ILR",
    "acn": "ACN (registered)",
    "acn_spec": "ACN, the spec's weight",
    "acn_no_generator": "ACN without generator (search alone)",
    "acn_live_generator": "ACN, live generator",
    "acn_live_generator_wide_ball": "ACN, live generator, ball of its reach",
}

# A point of fewer seeds than a study's five says how many beside it in the figure.
FEW_SEEDS = 5

# Matplotlib's ten default colours and three more, so that no two families share one.
_COLOURS = [f"C{i}" for i in range(10)] + ["black", "gold", "lightseagreen"]

# The benchmark's configuration whose step time each family's Phase A steps take
# (ACN at the spec's weight does the same work per step as the registered one, and
# a wider search ball the same as the live generator's own).
_STEP_COST_KEYS = {"independent": "independent", "dml": "dml", "dml_noise": "dml_noise",
                   "kdcl": "kdcl", "one": "one", "cl_ilr": "cl_ilr", "acn": "acn",
                   "acn_spec": "acn", "acn_no_generator": "acn_no_generator",
                   "acn_live_generator": "acn_live_generator",
                   "acn_live_generator_wide_ball": "acn_live_generator"}


class Point(NamedTuple):
  experiment: str  # The regime: the registered experiment the runs trained.
  family: str
  epochs: int
  runs: List[dict]  # results.json of each seed
  costs: List[float]  # each run's compute, in DML runs of the registered length


def family_of(variant: str) -> str:
  family = _LENGTH_SUFFIX.sub("", variant)
  return _ALIASES.get(variant, _ALIASES.get(family, family))


def step_costs_in_dml_steps(benchmark: dict) -> Dict[str, float]:
  """Each benchmarked configuration's step time in DML steps: DML's images/s over
  its own (the same batch)."""
  return {name: benchmark["dml"] / benchmark[name]
          for name in set(_STEP_COST_KEYS.values()) if name in benchmark}


def run_cost(results: dict, config: dict, step_costs: Dict[str, float], family: str,
             unit_epochs: int) -> Optional[float]:
  """Training compute of one run in DML runs of `unit_epochs` epochs of the same
  steps per epoch (the run's images and batch); None when the family's step was not
  benchmarked."""
  key = _STEP_COST_KEYS.get(family)
  if key not in step_costs:
    return None
  epochs = results["epochs"]
  warmup = min(config.get("adv_warmup_epochs", 0), epochs) if config["method"] == "acn" else 0
  return (warmup + (epochs - warmup) * step_costs[key]) / unit_epochs


def registered_epochs(experiment: str) -> int:
  """The length of the unit DML run: `experiment`'s registered epochs."""
  return registry.get_experiment(experiment).optimization.epochs


def collect_points(paths: Sequence[str], step_costs: Dict[str, float]) -> List[Point]:
  """Points of every family with a benchmarked step, by (experiment, family,
  epochs), in the order of the experiments' first appearance."""
  grouped: Dict[tuple, Point] = {}
  for variant, model_dirs in runs.finished_runs(paths).items():
    family = family_of(variant)
    if family not in LABELS:
      continue
    for model_dir in model_dirs:
      with open(os.path.join(model_dir, "results.json")) as handle:
        results = json.load(handle)
      with open(os.path.join(model_dir, "config.json")) as handle:
        config = json.load(handle)
      experiment = results["experiment"]
      cost = run_cost(results, config, step_costs, family, registered_epochs(experiment))
      if cost is None:
        continue
      key = (experiment, family, results["epochs"])
      point = grouped.setdefault(key, Point(experiment, family, results["epochs"], [], []))
      point.runs.append(results)
      point.costs.append(cost)
  order = list(dict.fromkeys(key[0] for key in grouped))
  return sorted(grouped.values(), key=lambda p: (order.index(p.experiment),
                                                 list(LABELS).index(p.family), p.epochs))


def regimes(points: Sequence[Point]) -> Dict[str, List[Point]]:
  """The points of each experiment, in their order."""
  grouped: Dict[str, List[Point]] = {}
  for point in points:
    grouped.setdefault(point.experiment, []).append(point)
  return grouped


def _scores(point: Point) -> Dict[str, List[float]]:
  return runs.scores(point.runs)


def _difference_cell(point: Point, baseline: Optional[Point], kind: str) -> str:
  if baseline is None or baseline is point:
    return ""
  differences = comparison.paired_differences(point.runs, baseline.runs)[kind]
  if not differences:
    return ""
  mean, p = comparison.paired_t_test(differences)
  return (f"{100 * mean:+.2f} (p {tables.p_value(p)}, {len(differences)} seeds) "
          f"vs DML {baseline.epochs}")


def nearest_dml(points: Sequence[Point], cost: float) -> Optional[Point]:
  """The DML point whose mean compute is nearest `cost` (on a log scale), among
  `points` (one regime's)."""
  dml = [p for p in points if p.family == "dml"]
  if not dml:
    return None
  return min(dml, key=lambda p: abs(math.log(statistics.mean(p.costs) / cost)))


HEADER = ["method", "epochs", "seeds", "compute (DML runs)", "ensemble top-1 (%)",
          "mean classifier top-1 (%)", "ensemble − DML, same length",
          "mean classifier − DML, same length", "ensemble − DML, nearest compute",
          "mean classifier − DML, nearest compute"]


def table_rows(points: Sequence[Point]) -> List[List[str]]:
  """One regime's rows."""
  rows = []
  for point in points:
    same_length = next((p for p in points if p.family == "dml" and p.epochs == point.epochs),
                       None)
    cost = statistics.mean(point.costs)
    nearest = nearest_dml(points, cost)
    scores = _scores(point)
    rows.append([
        LABELS[point.family], str(point.epochs), str(len(point.runs)), f"{cost:.2f}",
        tables.mean_std(scores["ensemble"]), tables.mean_std(scores["mean classifier"]),
        _difference_cell(point, same_length, "ensemble"),
        _difference_cell(point, same_length, "mean classifier"),
        _difference_cell(point, nearest, "ensemble"),
        _difference_cell(point, nearest, "mean classifier")])
  return rows


def draw(points: Sequence[Point], path: str) -> None:
  """One row of panels per regime: ensemble and mean classifier top-1 against
  compute."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  by_regime = regimes(points)
  height = 1.2 + 4.6 * len(by_regime)  # Inches: the legend's strip, then a row each.
  figure, axes = plt.subplots(len(by_regime), 2, figsize=(12, height), squeeze=False)
  for row, (experiment, mine_all) in zip(axes, by_regime.items()):
    regime_costs = [statistics.mean(p.costs) for p in mine_all]
    # At least a factor of 4 wide, so that a regime of few points is not stretched.
    x_limits = (min(min(regime_costs), max(regime_costs) / 4) / 1.3, max(regime_costs) * 1.3)
    for axis, kind in zip(row, ("ensemble", "mean classifier")):
      for family in LABELS:
        mine = [p for p in mine_all if p.family == family]
        if not mine:
          continue
        costs = [statistics.mean(p.costs) for p in mine]
        means = [100 * statistics.mean(_scores(p)[kind]) for p in mine]
        spreads = [100 * statistics.stdev(_scores(p)[kind]) if len(p.runs) > 1 else 0.0
                   for p in mine]
        index = list(LABELS).index(family)  # A colour each, then the next marker.
        axis.errorbar(costs, means, yerr=spreads, capsize=3, label=LABELS[family],
                      marker="os^"[index // len(_COLOURS) % 3],
                      color=_COLOURS[index % len(_COLOURS)])
        for p, x, y in zip(mine, costs, means):
          seeds = f" (n={len(p.runs)})" if len(p.runs) < FEW_SEEDS else ""
          axis.annotate(f"{p.epochs}{seeds}", (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
      axis.set_xscale("log", base=2)
      axis.set_xlim(*x_limits)
      axis.set_xlabel(f"training compute (DML runs of "
                      f"{registered_epochs(experiment)} epochs)")
      axis.set_title(f"{experiment}\n{kind} top-1 (labels: epochs; n: seeds, where "
                     f"fewer than {FEW_SEEDS})", fontsize=10)
      axis.grid(alpha=0.3)
    row[0].set_ylabel("test top-1 (%), mean ± std over seeds")
  handles = {}
  for axis in axes.flat:
    for handle, label in zip(*axis.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=5,
                fontsize=8)
  figure.tight_layout(rect=(0, 0.9 / height, 1, 1))
  figure.savefig(path, dpi=120)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+")
  parser.add_argument("--step_costs", required=True,
                      help="JSON of benchmark.py --json --experiment=EXPERIMENT")
  parser.add_argument("--figure", default=None)
  arguments = parser.parse_args()
  with open(arguments.step_costs) as handle:
    step_costs = step_costs_in_dml_steps(json.load(handle))
  points = collect_points(arguments.paths, step_costs)
  for experiment, mine in regimes(points).items():
    print(f"\n{experiment}\n")
    print(tables.format_markdown(table_rows(mine), HEADER))
  if arguments.figure:
    draw(points, arguments.figure)


if __name__ == "__main__":
  main()
