"""run.py end to end: trainings in a subprocess, as a user runs them; bad flags
through run.py's own main in this process (the same exit status and message)."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from acn_tf import strict_json
from acn_tf.config import command_line, registry, schema as config_lib
from acn_tf.run import run_dir
from conftest import (DIGITS_RUNS, RUN_PY, assert_one_error_line, early_runs, read_json,
                      snapshot, subprocess_environment, write_json)


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
  # The training command retyped with --mode=eval: its flags agree with the run's.
  evaluated = run_py_here("--experiment=digits", *DIGITS_RUNS[method], "--mode=eval",
                          f"--model_dir={model_dir}", "--verbose=0")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  again = read_json(os.path.join(model_dir, "results.json"))
  assert again["ensemble_top1"] == pytest.approx(results["ensemble_top1"], abs=1e-6)
  for key in ("train_seconds", "train_steps", "train_images_per_second"):  # Kept.
    assert again[key] == results[key], key
  # --mode=config of the training command prints what training wrote to config.json.
  printed = run_py_here("--experiment=digits", *DIGITS_RUNS[method], "--mode=config")
  with open(os.path.join(trained, "config.json")) as handle:
    assert printed.stdout == handle.read()


def test_independent_method_with_three_classifiers(digits_runs):
  results = _check_results(digits_runs["independent"].succeeded(), "independent",
                           num_classifiers=3)
  assert results["config"]["kd_weight"] == 1.0  # Kept, but switched off by the method.


@pytest.mark.parametrize("arguments,expected", [
    (["--experiment=imagenet"], "Unknown experiment 'imagenet'. Known experiments: "
     "cifar10, cifar100, digits, fashion_mnist"),
    (["--experiment=digits", "--override=learning_rat=0.1"],
     "Unknown config key 'learning_rat'; did you mean 'learning_rate', "
     "'generator_learning_rate' or 'discriminator_learning_rate'? Valid keys:"),
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


# -- --mode=eval and export with the flags of the training command ------------------------

# The command a run below was "trained" with (its config.json, written as training
# writes it), and a config file of two fields.
_TRAINED = ["--experiment=digits", "--method=acn", "--override=epochs=2",
            "--override=log_every_steps=7", "--mixed_precision=mixed_bfloat16"]


def _trained_run(tmp_path, file_fields=None):
  """A run dir holding only config.json: no weights, so a command whose flags pass
  stops at the next check (no final.weights.h5), before TensorFlow does any work."""
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  config_file = write_json(tmp_path / "tuned.json", file_fields or {"learning_rate": 0.05})
  config = command_line.resolve_config("digits", "acn", config_file if file_fields else None,
                                       ["epochs=2", "log_every_steps=7",
                                        "mixed_precision=mixed_bfloat16"])
  strict_json.write(str(model_dir / "config.json"), config.to_dict())  # As training does.
  return str(model_dir), config_file


@pytest.mark.parametrize("mode", ["eval", "export"])
@pytest.mark.parametrize("arguments", [
    [],  # Nothing to compare.
    _TRAINED,  # The training command, retyped.
    ["--method=acn", "--override=epochs=2"],  # Without a base: over the run's own config.
    ["--mixed_precision=mixed_bfloat16", "--override=seed=0"],  # Values equal to stored.
    # Training-only fields (run_dir.TRAINING_ONLY_FIELDS) need not agree: dropped ...
    ["--experiment=digits", "--method=acn", "--override=epochs=2",
     "--mixed_precision=mixed_bfloat16"],
    # ... or changed.
    [*_TRAINED, "--override=log_every_steps=0", "--override=search_space=kd_weight=0:1"],
])
def test_eval_and_export_accept_flags_that_agree_with_the_run(run_py_here, tmp_path, mode,
                                                              arguments):
  model_dir, _ = _trained_run(tmp_path)
  before = snapshot(model_dir)
  completed = run_py_here(f"--mode={mode}", f"--model_dir={model_dir}", *arguments)
  assert_one_error_line(completed, "No final.weights.h5")  # Past the flags' check.
  assert snapshot(model_dir) == before


@pytest.mark.parametrize("mode", ["eval", "export"])
@pytest.mark.parametrize("arguments,culprits", [
    (["--method=dml"], ["--method=dml conflicts with the run's stored method='acn'"]),
    ([*_TRAINED, "--method=dml"], ["--method=dml conflicts with the run's stored "
                                   "method='acn'"]),
    (["--override=epochs=3"], ["--override=epochs=3 conflicts with the run's stored "
                               "epochs=2"]),
    (["--mixed_precision=none"], ["--mixed_precision=none conflicts with the run's stored "
                                  "mixed_precision='mixed_bfloat16'"]),
    (["--deterministic"], ["--deterministic conflicts with the run's stored "
                           "deterministic=False"]),
    # A base gives the values the command left out: the registry's epochs.
    (["--experiment=digits", "--method=acn", "--mixed_precision=mixed_bfloat16"],
     ["--experiment=digits (its epochs=20) conflicts with the run's stored epochs=2"]),
    (["--experiment=cifar10", "--method=acn", "--override=epochs=2",
      "--mixed_precision=mixed_bfloat16"],
     ["--experiment=cifar10 (its name='cifar10', architectures=['resnet32', 'resnet32'], ",
      "dataset='cifar10'", "conflicts with the run's stored name='digits'"]),
    (["--override=epochs=3", "--method=dml"],
     ["--method=dml conflicts with the run's stored method='acn'; --override=epochs=3 "
      "conflicts with the run's stored epochs=2", "drop the flags"]),
])
def test_eval_and_export_refuse_a_flag_that_conflicts(run_py_here, tmp_path, mode, arguments,
                                                      culprits):
  model_dir, _ = _trained_run(tmp_path)
  before = snapshot(model_dir)
  completed = run_py_here(f"--mode={mode}", f"--model_dir={model_dir}", *arguments)
  line = assert_one_error_line(completed, *culprits,
                               f"in {os.path.join(model_dir, 'config.json')}")
  assert "use another --model_dir" in line and len(line) < 800
  assert snapshot(model_dir) == before


def test_eval_compares_a_config_files_fields(run_py_here, tmp_path):
  model_dir, config_file = _trained_run(tmp_path, {"learning_rate": 0.05, "name": "tuned"})
  trained = [*_TRAINED, f"--config_file={config_file}"]
  completed = run_py_here("--mode=eval", f"--model_dir={model_dir}", *trained)
  assert_one_error_line(completed, "No final.weights.h5")
  other = write_json(tmp_path / "other.json", {"learning_rate": 0.01, "name": "tuned"})
  completed = run_py_here("--mode=eval", f"--model_dir={model_dir}", *_TRAINED,
                          f"--config_file={other}")
  assert_one_error_line(completed, f"--config_file={other} (its learning_rate=0.01) "
                        "conflicts with the run's stored learning_rate=0.05")
  # Without --experiment the file is a whole experiment: its fields over the defaults.
  whole = write_json(tmp_path / "whole.json",
                     {"learning_rate": 0.05, "name": "tuned", "dataset": "digits"})
  completed = run_py_here("--mode=eval", f"--model_dir={model_dir}", f"--config_file={whole}")
  assert_one_error_line(completed, f"--config_file={whole} (its method='dml', "
                        "architectures=['resnet32', 'resnet32'], ",
                        "conflicts with the run's stored method='acn', "
                        "architectures=['small_cnn', 'small_cnn'], ")


# -- --mode=config ---------------------------------------------------------------------


def test_mode_config_prints_the_resolved_config(run_py_here, tmp_path):
  completed = run_py_here("--mode=config", "--experiment=digits", "--method=acn",
                          "--override=epochs=3", "--override=architectures=resnet8,resnet8",
                          "--override=wrc_alpha=0.05", "--mixed_precision=mixed_bfloat16")
  assert completed.returncode == 0, completed.stderr[-3000:]
  # The second way to the same config: the registry's, changed in Python.
  expected = registry.get_experiment("digits").replace(
      method="acn", epochs=3, architectures=("resnet8", "resnet8"), wrc_alpha=0.05,
      mixed_precision="mixed_bfloat16").to_dict()
  printed = strict_json.loads(completed.stdout)
  assert printed == strict_json.loads(strict_json.dumps(expected))
  assert list(printed) == list(config_lib.FIELDS)  # The schema's order, as config.json.
  assert os.listdir(tmp_path) == []  # Nothing written (the working directory).
  bad = run_py_here("--mode=config", "--experiment=digits", "--override=wieght_decay=0")
  assert_one_error_line(bad, "did you mean 'weight_decay'")
  assert bad.stdout == ""


def test_mode_config_of_a_stored_run_prints_its_config(run_py_here, tmp_path):
  model_dir, _ = _trained_run(tmp_path)
  with open(os.path.join(model_dir, "config.json")) as handle:
    stored = handle.read()
  completed = run_py_here("--mode=config", f"--model_dir={model_dir}")
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert completed.stdout == stored
  # Other flags over it: what --mode=eval with them would compare.
  reseeded = run_py_here("--mode=config", f"--model_dir={model_dir}", "--override=seed=3")
  assert strict_json.loads(reseeded.stdout) == dict(json.loads(stored), seed=3)
  assert_one_error_line(run_py_here("--mode=config"), "--mode=config", "--model_dir")


def test_mode_config_loads_no_tensorflow(tmp_path):
  """A process of its own: python -X importtime lists every module imported."""
  completed = subprocess.run(
      [sys.executable, "-X", "importtime", RUN_PY, "--mode=config", "--experiment=digits"],
      cwd=tmp_path, env=subprocess_environment(), capture_output=True, text=True,
      timeout=120)
  assert completed.returncode == 0, completed.stderr[-3000:]
  imported = [line.rsplit("|", 1)[-1].strip() for line in completed.stderr.splitlines()
              if line.startswith("import time:")]
  assert "absl.flags" in imported or "absl" in imported  # The listing is read right.
  assert not [name for name in imported if name.split(".")[0] in ("tensorflow", "keras")]
  assert strict_json.loads(completed.stdout)["name"] == "digits"
  assert os.listdir(tmp_path) == []


def test_the_training_only_fields_are_fields():
  assert set(run_dir.TRAINING_ONLY_FIELDS) <= set(config_lib.FIELDS)


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
                     match="divergence='kl' is not one of js, total_variation"):
    command_line.resolve_config("digits", overrides=["divergence=kl"])


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
