"""Ranks a search's trials by a score at their last epoch, among those that meet
constraints, and writes the best ones' configs for runs of their own.

  python experiments/choose_trial.py MODEL_DIR \
      --require='health_residual_linf>0.0314' \
      --require='health_divergence_ratio_generated>=1.5' [--top=3] [--configs=DIR]

MODEL_DIR is a `run.py --mode=tune` directory. keras-tuner ranks trials by the
best epoch of its objective; a study that trains every setting for its whole
schedule reads each trial where it ends instead: the last row of the trial's
`history.csv` (acn_tf/run/tuners.py writes one per trial). The score is the mean
classifier's validation top-1 there (the mean of `val_c*_top1`), so that accuracy
is the objective and each `--require` (a logged figure, `<`, `<=`, `>` or `>=`, a
number) a constraint on the same epoch, never the other way round. Prints every
trial in a Markdown table, best first, and with `--configs=DIR` writes the `--top`
best trials that meet every constraint as DIR/trial_ID.json: the search's config
with the trial's values, whole, for `run.py --config_file=`.

The chosen trials run again on other seeds (`run.py --config_file=... --override=seed=S
--model_dir=AGAIN/trial_ID`); then

  python experiments/choose_trial.py MODEL_DIR --again=AGAIN [--again=...] --require=...

ranks the trials that ran again in every AGAIN folder by their score averaged over
the search's run and the repeats, each constraint required of every run, and names
the best: the choice over seeds.
"""

import argparse
import csv
import operator
import os
import re
import statistics
import sys
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acn_tf import strict_json  # noqa: E402
from acn_tf.run import tuners, tuning  # noqa: E402

_COMPARISONS: Dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")
_CLASSIFIER_TOP1 = re.compile(r"^val_c\d+_top1$")


class Requirement(NamedTuple):
  metric: str
  comparison: str
  bound: float

  def met_by(self, row: Dict[str, float]) -> bool:
    return _COMPARISONS[self.comparison](row[self.metric], self.bound)

  def __str__(self) -> str:
    return f"{self.metric} {self.comparison} {self.bound:g}"


def parse_requirement(text: str) -> Requirement:
  match = _REQUIREMENT.match(text)
  if not match:
    raise ValueError(f"--require={text!r}: expected METRIC<BOUND, METRIC<=BOUND, "
                     "METRIC>BOUND or METRIC>=BOUND, e.g. health_residual_linf>0.0314")
  metric, comparison, bound = match.groups()
  try:
    return Requirement(metric, comparison, float(bound))
  except ValueError:
    raise ValueError(f"--require={text!r}: {bound!r} is not a number") from None


def classifier_mean(row: Dict[str, float]) -> float:
  """The mean classifier's validation top-1 in one history row."""
  return statistics.fmean(value for name, value in row.items() if _CLASSIFIER_TOP1.match(name))


class Trial(NamedTuple):
  trial_id: str
  values: Dict[str, object]  # The searched settings' values.
  last_epoch: Dict[str, float]  # The last row of the trial's history.csv.
  # The last rows of the trial's runs on other seeds (`--again`), in their order.
  repeats: Tuple[Dict[str, float], ...] = ()

  @property
  def runs(self) -> Tuple[Dict[str, float], ...]:
    return (self.last_epoch, *self.repeats)

  @property
  def score(self) -> float:
    """The mean classifier's validation top-1 at the last epoch, averaged over the
    trial's runs."""
    return statistics.fmean(classifier_mean(run) for run in self.runs)


def last_epoch(history_file: str) -> Dict[str, float]:
  with open(history_file, newline="") as handle:
    rows = list(csv.DictReader(handle))
  if not rows:
    raise ValueError(f"{history_file} has no epoch: the trial did not train.")
  return {name: float(value) for name, value in rows[-1].items() if value != ""}


def completed_trials(model_dir: str) -> List[Trial]:
  """The search's completed trials, read from tuning_results.json and each trial's
  history.csv."""
  summary = strict_json.read(os.path.join(model_dir, tuning.RESULTS_FILE))
  trials = []
  for record in summary["trials"]:
    if record["status"] != "COMPLETED":
      continue
    history = os.path.join(model_dir, tuning.TUNER_DIR, f"trial_{record['trial']}",
                           tuners.TRIAL_HISTORY_FILE)
    if not os.path.exists(history):
      raise FileNotFoundError(f"{history} is missing: the search predates per-trial "
                              "histories, so its trials cannot be read at their last "
                              "epoch.")
    trials.append(Trial(record["trial"], record["values"], last_epoch(history)))
  return trials


def with_repeats(trials: Sequence[Trial], again_dirs: Sequence[str]) -> List[Trial]:
  """The trials that ran again in every folder of `again_dirs`
  (AGAIN/trial_ID/history.csv), each with those runs' last epochs."""
  repeated = []
  for trial in trials:
    histories = [os.path.join(again, f"trial_{trial.trial_id}", tuners.TRIAL_HISTORY_FILE)
                 for again in again_dirs]
    if all(os.path.exists(history) for history in histories):
      repeated.append(trial._replace(repeats=tuple(last_epoch(h) for h in histories)))
  if not repeated:
    raise FileNotFoundError(f"no trial ran again in every one of {', '.join(again_dirs)} "
                            "(expected AGAIN/trial_ID/history.csv)")
  return repeated


def rank(trials: Sequence[Trial], requirements: Sequence[Requirement]
         ) -> List[tuple]:
  """(trial, requirements one of its runs fails) for every trial, best score first."""
  for trial in trials:
    for run in trial.runs:
      for requirement in requirements:
        if requirement.metric not in run:
          raise ValueError(f"--require names {requirement.metric!r}, which trial "
                           f"{trial.trial_id} did not log; it logged: "
                           f"{', '.join(sorted(run))}")
  ordered = sorted(trials, key=lambda trial: (-trial.score, trial.trial_id))
  return [(trial, [str(requirement) for requirement in requirements
                   if not all(requirement.met_by(run) for run in trial.runs)])
          for trial in ordered]


def trial_config(model_dir: str, trial: Trial) -> dict:
  """The search's base config (search.json) with the trial's values."""
  base = strict_json.read(os.path.join(model_dir, tuning.SEARCH_FILE))["config"]
  unknown = sorted(set(trial.values) - set(base))
  if unknown:
    raise ValueError(f"trial {trial.trial_id} sets {', '.join(unknown)}, which the "
                     "search's config does not hold")
  return {**base, **trial.values}


def table(ranked: Sequence[tuple], requirements: Sequence[Requirement]) -> str:
  searched = sorted({name for trial, _ in ranked for name in trial.values})
  shown = [requirement.metric for requirement in requirements]
  shown = list(dict.fromkeys(shown))
  repeated = any(trial.repeats for trial, _ in ranked)
  header = ["trial", "mean classifier top-1 (%)", "ensemble top-1 (%)", *shown,
            "meets", *searched]
  if repeated:
    header.insert(1, "mean over runs (%)")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for trial, failed in ranked:
    def per_run(figure: Callable[[Dict[str, float]], str]) -> str:
      return " / ".join(figure(run) for run in trial.runs)  # Search's run first.
    cells = [trial.trial_id,
             per_run(lambda run: f"{100 * classifier_mean(run):.2f}"),
             per_run(lambda run: f"{100 * run.get('val_ensemble_top1', float('nan')):.2f}"),
             *(per_run(lambda run, metric=metric: f"{run[metric]:.4g}") for metric in shown),
             "yes" if not failed else "no: " + "; ".join(failed),
             *(_value(trial.values.get(name)) for name in searched)]
    if repeated:
      cells.insert(1, f"{100 * trial.score:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _value(value: object) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("model_dir", help="a run.py --mode=tune directory")
  parser.add_argument("--require", action="append", default=[],
                      help="a constraint on a logged figure at the last epoch, e.g. "
                      "health_residual_linf>0.0314 (repeatable)")
  parser.add_argument("--again", action="append", default=[],
                      help="a folder of the trials' runs on another seed, "
                      "AGAIN/trial_ID/history.csv (repeatable): rank the trials that "
                      "ran again in every one by their score over all their runs")
  parser.add_argument("--top", type=int, default=3)
  parser.add_argument("--configs", help="write the --top best trials that meet every "
                      "constraint as DIR/trial_ID.json")
  arguments = parser.parse_args(argv)
  try:
    requirements = [parse_requirement(text) for text in arguments.require]
    trials = completed_trials(arguments.model_dir)
    if arguments.again:
      trials = with_repeats(trials, arguments.again)
    ranked = rank(trials, requirements)
  except (ValueError, FileNotFoundError) as error:
    parser.exit(2, f"choose_trial.py: {error}\n")
  print(table(ranked, requirements))
  chosen = [trial for trial, failed in ranked if not failed][:arguments.top]
  pool = (f"trials run {len(arguments.again) + 1} times, scored over their runs"
          if arguments.again else "completed trials")
  print(f"\n{len(chosen)} chosen (best {arguments.top} of the "
        f"{sum(not failed for _, failed in ranked)} of {len(ranked)} {pool} "
        f"that meet every constraint): {', '.join(t.trial_id for t in chosen) or 'none'}")
  if arguments.configs and chosen:
    os.makedirs(arguments.configs, exist_ok=True)
    for trial in chosen:
      path = os.path.join(arguments.configs, f"trial_{trial.trial_id}.json")
      strict_json.write(path, trial_config(arguments.model_dir, trial))
      print(f"Wrote {path}")


if __name__ == "__main__":
  main()
