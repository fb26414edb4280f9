"""run.py end to end: trainings in a subprocess, as a user runs them; bad flags
through run.py's own main in this process (the same exit status and message)."""

import csv
import os
import shutil

import pytest

from acn_tf.config import command_line, schema as config_lib
from conftest import (DIGITS_RUNS, assert_one_error_line, early_runs, read_json, snapshot,
                      write_json)


def _check_results(model_dir, method, num_classifiers=2, epochs=1):
  results = read_json(os.path.join(model_dir, "results.json"))
  assert results["experiment"] == "digits" and results["method"] == method
  assert results["epochs"] == epochs
  assert len(results["classifiers"]) == num_classifiers
  for classifier in results["classifiers"]:
    assert 0.0 <= classifier["top1"] <= classifier["top5"] <= 1.0
  assert 0.0 <= results["ensemble_top1"] <= 1.0
  assert 0.0 <= results["mean_divergence"] <= 0.7  # JS is bounded by log 2.
  assert results["wall_seconds"] > 0
  assert results["num_test"] == 360
  # The training's cost: every step of every epoch, at the config's batch size.
  batch_size = results["config"]["batch_size"]
  assert results["train_steps"] == epochs * (results["num_train"] // batch_size)
  assert results["train_images_per_second"] == pytest.approx(
      epochs * (results["num_train"] // batch_size) * batch_size / results["train_seconds"])
  with open(os.path.join(model_dir, "history.csv")) as handle:
    rows = list(csv.DictReader(handle))
  assert len(rows) == epochs and "ensemble_top1" in rows[0]
  return results


@pytest.mark.parametrize("method", ["dml", "dml_noise", "acn"])
def test_digits_trains_and_writes_results(digits_runs, run_py_here, tmp_path, method):
  """The session's runs (conftest.DIGITS_RUNS: the ACN's without warm-up), then
  --mode=eval of a copy of each."""
  epochs = int(next(argument for argument in DIGITS_RUNS[method]
                    if argument.startswith("--override=epochs=")).rsplit("=", 1)[1])
  trained = digits_runs[method].succeeded()
  results = _check_results(trained, method, epochs=epochs)
  if method == "acn":
    with open(os.path.join(trained, "history.csv")) as handle:
      row = next(csv.DictReader(handle))
    # Phase A ran (no warm-up): its metrics were recorded, not left at zero.
    assert float(row["g_loss"]) != 0.0 and 0.0 < float(row["kept_fraction"]) <= 1.0
  if method == "dml_noise":  # The noisy batch's figures, and nothing of Phase A.
    with open(os.path.join(trained, "history.csv")) as handle:
      row = next(csv.DictReader(handle))
    assert 0.0 < float(row["kept_fraction"]) <= 1.0 and float(row["divergence_noisy"]) > 0
    assert "g_loss" not in row and "phase_a_health" not in results
    assert set(results["optimizer_iterations"]) == {"classifiers"}
  model_dir = shutil.copytree(trained, tmp_path / method)
  evaluated = run_py_here("--mode=eval", f"--model_dir={model_dir}", "--verbose=0")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  again = read_json(os.path.join(model_dir, "results.json"))
  assert again["ensemble_top1"] == pytest.approx(results["ensemble_top1"], abs=1e-6)
  for key in ("train_seconds", "train_steps", "train_images_per_second"):  # Kept.
    assert again[key] == results[key], key


def test_independent_method_with_three_classifiers(digits_runs):
  results = _check_results(digits_runs["independent"].succeeded(), "independent",
                           num_classifiers=3)
  assert results["config"]["kd_weight"] == 1.0  # Kept, but switched off by the method.


@pytest.mark.parametrize("arguments,expected", [
    (["--experiment=imagenet"], "Unknown experiment 'imagenet'. Known experiments: "
     "cifar10, cifar100, digits, fashion_mnist"),
    (["--experiment=digits", "--override=learning_rat=0.1"],
     "Unknown config key 'learning_rat'. Valid keys:"),
    (["--experiment=digits", "--override=epochs=ten"], "Override epochs: expected int"),
    (["--experiment=digits", "--override=epochs"], "is not of the form key=value"),
    (["--experiment=digits", "--override=batch_size=0"], "batch_size must be > 0"),
    (["--experiment=digits", "--override=architectures=resnet31,resnet32"],
     "CIFAR ResNet depth must be 6n+2"),
    (["--experiment=digits", "--method=dml", "--override=architectures=small_cnn"],
     "needs at least 2 classifiers"),
    (["--mode=eval", "--model_dir=/nonexistent/run"], "holds no trained run"),
])
def test_bad_input_gives_a_clear_error(run_py_here, tmp_path, arguments, expected):
  completed = run_py_here(*arguments)
  assert_one_error_line(completed, expected)
  assert os.listdir(tmp_path) == []  # No default model_dir (runs/...) in the working dir.


def test_missing_data_names_where_it_looked(run_py_here, tmp_path):
  completed = run_py_here("--experiment=cifar100", f"--data_dir={tmp_path}",
                          f"--model_dir={tmp_path / 'run'}")
  assert_one_error_line(completed, "Could not find the cifar100 dataset")
  assert os.path.join(str(tmp_path), "cifar-100-python.tar.gz") in completed.stderr
  assert "download_and_prepare" in completed.stderr
  assert not os.path.exists(tmp_path / "run"), "nothing is written before data is found"


def test_existing_model_dir_is_refused_not_clobbered(run_py_here, tmp_path):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  (model_dir / "results.json").write_text('{"keep": "me"}')
  before = snapshot(str(model_dir))
  completed = run_py_here("--experiment=digits", f"--model_dir={model_dir}",
                          "--override=epochs=1", "--override=train_examples=256",
                          "--verbose=0")
  assert_one_error_line(completed, "already holds a finished run")
  assert (model_dir / "results.json").read_text() == '{"keep": "me"}'
  assert snapshot(str(model_dir)) == before


def test_config_overrides_are_typed():
  config = command_line.resolve_config(
      "digits", "acn", overrides=["epochs=3", "ras_label_restrict=false",
                                  "architectures=resnet20,wrn16_2", "wrc_alpha=0",
                                  "lr_decay_epochs=2,3"])
  assert config.optimization.epochs == 3 and config.adversarial.search.ras_label_restrict is False
  assert config.architectures == ("resnet20", "wrn16_2")
  assert config.adversarial.wrc_alpha == 0.0 and isinstance(config.adversarial.wrc_alpha, float)
  assert config.optimization.lr_decay_epochs == (2, 3)
  with pytest.raises(config_lib.ConfigError, match="expected bool"):
    command_line.resolve_config("digits", overrides=["nesterov=maybe"])
  with pytest.raises(config_lib.ConfigError,
                     match="ras_mask_source='phase_b' is not one of search, update"):
    command_line.resolve_config("digits", overrides=["ras_mask_source=phase_b"])


def test_config_file_is_applied_before_overrides(tmp_path):
  path = write_json(tmp_path / "best.json",
                    {"name": "digits_tuned", "learning_rate": 0.01, "epochs": 4})
  config = command_line.resolve_config("digits", config_file=path, overrides=["epochs=2"])
  assert config.optimization.learning_rate == 0.01 and config.optimization.epochs == 2
  assert config.name == "digits_tuned"  # The file's name names the run.


@early_runs
def output_runs(directory):
  """Two digits DML runs of 2 epochs of 2 steps, with export: "quiet" as run.py
  runs by default, "chatty" with absl's -v (--verbosity=0). Processes of their
  own: the chatter of TensorFlow's start-up is a process's."""
  arguments = ["--experiment=digits", "--override=epochs=2", "--override=train_examples=128"]
  return {"quiet": [*arguments, f"--model_dir={os.path.join(directory, 'quiet')}"],
          "chatty": [*arguments, f"--model_dir={os.path.join(directory, 'chatty')}",
                     "--verbosity=0"]}


def test_default_output_is_keras_progress_and_the_projects_lines(output_runs):
  """Output to a file: one line per epoch, no progress bar; the libraries' INFO
  chatter (SavedModel export) only with absl's -v."""
  quiet, chatty = output_runs["quiet"], output_runs["chatty"]
  quiet.succeeded()
  lines = quiet.stdout.splitlines()
  assert lines[0] == "Epoch 1/2" and "Epoch 2/2" in lines
  assert sum(line.startswith("2/2 - ") and "ensemble_top1" in line for line in lines) == 2
  assert "\r" not in quiet.stdout and "━" not in quiet.stdout  # No progress bar.
  assert lines[-1].startswith("digits dml: c0 top1")
  chatter = ("Assets written to", "Writing fingerprint", "Sharding callback duration",
             "oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")
  assert not any(text in quiet.stderr for text in chatter), quiet.stderr[-3000:]
  chatty.succeeded()
  assert "Assets written to" in chatty.stderr
