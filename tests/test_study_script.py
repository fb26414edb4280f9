"""experiments/study.py: each variant's run.py command, without training anything."""

import os
import subprocess
import sys

import pytest

from acn_tf.config import registry
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import fashion_mnist_study  # noqa: E402
import study  # noqa: E402


def _commands(monkeypatch, tmp_path, experiment, names, settings=()):
  """The run.py arguments run_study would start, one list per run."""
  started = []
  monkeypatch.setattr(subprocess, "run",
                      lambda command, check: started.append(command[2:]))
  study.run_study(experiment, str(tmp_path), study.VARIANTS, names, [0], settings)
  return started


def _epochs(command):
  """The last epochs override of a command: the one run.py applies."""
  return [argument for argument in command if argument.startswith("--override=epochs=")][-1]


@pytest.mark.parametrize("experiment", ["fashion_mnist_small", "cifar100"])
def test_compute_matched_dml_trains_three_times_the_experiments_epochs(
    monkeypatch, tmp_path, experiment):
  (command,) = _commands(monkeypatch, tmp_path, experiment, ["dml_compute_matched"])
  epochs = registry.get_experiment(experiment).optimization.epochs
  assert (experiment, epochs) in (("fashion_mnist_small", 40), ("cifar100", 300))
  assert "--method=dml" in command and _epochs(command) == f"--override=epochs={3 * epochs}"


def test_the_multiple_is_of_the_epochs_the_studys_settings_give(monkeypatch, tmp_path):
  (command,) = _commands(monkeypatch, tmp_path, "fashion_mnist", ["dml_compute_matched"],
                         fashion_mnist_study.CPU_SETTINGS)
  assert "--override=epochs=6" in command and _epochs(command) == "--override=epochs=18"


def test_dml_noise_and_finished_runs(monkeypatch, tmp_path):
  (tmp_path / "dml-seed0").mkdir()
  (tmp_path / "dml-seed0" / "results.json").write_text("{}")  # Finished: skipped.
  commands = _commands(monkeypatch, tmp_path, "fashion_mnist_small", ["dml", "dml_noise"])
  assert len(commands) == 1 and commands[0][-1] == "--method=dml_noise"
  assert f"--model_dir={tmp_path / 'dml_noise-seed0'}" in commands[0]
  assert "dml_noise" in fashion_mnist_study.VARIANTS


def test_a_malformed_setting_is_named(monkeypatch, tmp_path):
  with pytest.raises(SystemExit, match="--override=epochs is not of the form FIELD=VALUE"):
    _commands(monkeypatch, tmp_path, "digits", ["dml_compute_matched"], ["epochs"])
