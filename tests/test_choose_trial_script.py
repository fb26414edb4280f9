"""experiments/choose_trial.py: trials ranked by the mean classifier's top-1 at their
last epoch (checked by hand), constraints on the same epoch, and the written configs
read back by run.py's own config reader."""

import csv
import json
import os
import sys

import pytest

from acn_tf.config import command_line
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import choose_trial  # noqa: E402

# Two epochs per trial: the best epoch (the first) is not the last, so a ranking by
# keras-tuner's score would differ from one at the last epoch.
HISTORIES = {
    "00": [{"val_c0_top1": 0.90, "val_c1_top1": 0.90, "val_ensemble_top1": 0.91,
            "health_residual_linf": 0.05},
           {"val_c0_top1": 0.70, "val_c1_top1": 0.74, "val_ensemble_top1": 0.73,
            "health_residual_linf": 0.05}],
    "01": [{"val_c0_top1": 0.60, "val_c1_top1": 0.60, "val_ensemble_top1": 0.60,
            "health_residual_linf": 0.01},
           {"val_c0_top1": 0.80, "val_c1_top1": 0.78, "val_ensemble_top1": 0.80,
            "health_residual_linf": 0.01}],
    "02": [{"val_c0_top1": 0.60, "val_c1_top1": 0.60, "val_ensemble_top1": 0.60,
            "health_residual_linf": 0.04},
           {"val_c0_top1": 0.75, "val_c1_top1": 0.77, "val_ensemble_top1": 0.77,
            "health_residual_linf": 0.04}],
}
VALUES = {"00": {"wrc_alpha": 0.1, "divergence": "js"},
          "01": {"wrc_alpha": 0.2, "divergence": "total_variation"},
          "02": {"wrc_alpha": 0.15, "divergence": "total_variation"}}


@pytest.fixture
def search(tmp_path):
  model_dir = tmp_path / "search"
  base = command_line.resolve_config("digits", "acn").to_dict()
  trials = []
  for trial_id, rows in HISTORIES.items():
    trial_dir = model_dir / "tuner" / f"trial_{trial_id}"
    trial_dir.mkdir(parents=True)
    with open(trial_dir / "history.csv", "w", newline="") as handle:
      writer = csv.DictWriter(handle, ["epoch", *rows[0]])
      writer.writeheader()
      for epoch, row in enumerate(rows):
        writer.writerow({"epoch": epoch, **row})
    trials.append({"trial": trial_id, "status": "COMPLETED", "score": rows[0][
        "val_ensemble_top1"], "values": VALUES[trial_id], "message": None})
  trials.append({"trial": "03", "status": "FAILED", "score": None,
                 "values": {"wrc_alpha": 0.3, "divergence": "js"}, "message": "boom"})
  (model_dir / "tuning_results.json").write_text(json.dumps({"trials": trials}))
  (model_dir / "search.json").write_text(json.dumps({"tuner": "random", "config": base}))
  return str(model_dir)


def test_trials_rank_by_the_mean_classifier_at_the_last_epoch(search):
  ranked = choose_trial.rank(choose_trial.completed_trials(search), [])
  # Last epochs by hand: 00 (0.70 + 0.74) / 2 = 0.72, 01 0.79, 02 0.76; 03 failed.
  assert [(trial.trial_id, round(trial.score, 6)) for trial, _ in ranked] == [
      ("01", 0.79), ("02", 0.76), ("00", 0.72)]
  assert all(not failed for _, failed in ranked)


def test_a_constraint_on_the_last_epoch_leaves_out_the_trials_that_fail_it(search):
  requirement = choose_trial.parse_requirement("health_residual_linf>0.0314")
  ranked = choose_trial.rank(choose_trial.completed_trials(search), [requirement])
  assert [(trial.trial_id, failed) for trial, failed in ranked] == [
      ("01", ["health_residual_linf > 0.0314"]), ("02", []), ("00", [])]


def test_the_chosen_configs_are_the_search_config_with_the_trials_values(search, tmp_path,
                                                                         capsys):
  configs = tmp_path / "chosen"
  choose_trial.main([search, "--require=health_residual_linf>=0.04", "--top=1",
                     f"--configs={configs}"])
  printed = capsys.readouterr().out
  assert "1 chosen (best 1 of the 2 of 3 completed trials" in printed
  assert os.listdir(configs) == ["trial_02.json"]
  config = command_line.resolve_config(None, config_file=str(configs / "trial_02.json"))
  expected = command_line.resolve_config("digits", "acn").replace(
      wrc_alpha=0.15, divergence="total_variation")
  assert config.to_dict() == expected.to_dict()


@pytest.mark.parametrize("text,message", [
    ("health_residual_linf=0.03", "expected METRIC<BOUND"),
    ("health_residual_linf>big", "'big' is not a number"),
])
def test_a_malformed_constraint_is_a_clear_error(text, message):
  with pytest.raises(ValueError, match=message):
    choose_trial.parse_requirement(text)


def test_a_constraint_on_a_figure_never_logged_names_what_was(search):
  requirement = choose_trial.parse_requirement("health_residual>0.03")
  with pytest.raises(ValueError, match="'health_residual', which trial 00 did not log; "
                     "it logged: epoch, health_residual_linf, val_c0_top1"):
    choose_trial.rank(choose_trial.completed_trials(search), [requirement])


def _write_history(path, row):
  path.parent.mkdir(parents=True)
  with open(path, "w", newline="") as handle:
    writer = csv.DictWriter(handle, ["epoch", *row])
    writer.writeheader()
    writer.writerow({"epoch": 0, **row})


def test_trials_run_again_rank_by_their_score_over_every_run(search, tmp_path, capsys):
  """Trials 00 and 02 ran again on one seed (01 did not, so it drops out). By hand:
  00 scores (0.72 + 0.90) / 2 = 0.81 and 02 (0.76 + 0.70) / 2 = 0.73, so the repeat
  reverses their order; a constraint must hold on every run: 00's repeat fails it."""
  again = tmp_path / "seed1"
  _write_history(again / "trial_00" / "history.csv",
                 {"val_c0_top1": 0.92, "val_c1_top1": 0.88, "val_ensemble_top1": 0.9,
                  "health_residual_linf": 0.02})
  _write_history(again / "trial_02" / "history.csv",
                 {"val_c0_top1": 0.70, "val_c1_top1": 0.70, "val_ensemble_top1": 0.7,
                  "health_residual_linf": 0.05})
  trials = choose_trial.with_repeats(choose_trial.completed_trials(search), [str(again)])
  ranked = choose_trial.rank(trials, [])
  assert [(trial.trial_id, round(trial.score, 6)) for trial, _ in ranked] == [
      ("00", 0.81), ("02", 0.73)]
  choose_trial.main([search, f"--again={again}", "--require=health_residual_linf>0.03",
                     "--top=1"])
  printed = capsys.readouterr().out
  assert "| 02 | 73.00 | 76.00 / 70.00 | 77.00 / 70.00 | 0.04 / 0.05 | yes |" in printed
  assert "| 00 | 81.00 | 72.00 / 90.00 |" in printed and "no: health_residual_linf" in printed
  assert "1 chosen (best 1 of the 1 of 2 trials run 2 times, scored over their runs" \
      " that meet every constraint): 02" in printed
  with pytest.raises(FileNotFoundError, match="no trial ran again"):
    choose_trial.with_repeats(choose_trial.completed_trials(search), [str(tmp_path / "x")])
