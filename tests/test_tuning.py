"""Tests of acn_tf.run.tuning: search-space parsing, a tiny ACN search, its resumption,
its TensorBoard HParams runs, and training from the best_config.json it writes."""

import csv
import errno
import json
import os
import signal
import subprocess
import time

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2 as hparams_api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from acn_tf import errors
from acn_tf.config import command_line, schema as config_lib, search_space
from acn_tf.config.schema import ConfigError
from acn_tf.config.search_space import SearchDimension
from acn_tf.run import builders, hparams_log, run_dir, storage, training, tuning
from conftest import error_lines, read_json, start_run_py

TINY_ACN = ["epochs=2", "train_examples=128", "adv_warmup_epochs=0",
            "validation_fraction=0.2"]
# For the tests of how a search handles its trials' failures, which no method's
# step reaches: one epoch of one DML step.
TINY_DML = ["epochs=1", "train_examples=128", "validation_fraction=0.2"]


def _digits(method="acn", overrides=TINY_ACN):
  return command_line.resolve_config("digits", method, overrides=list(overrides))


# -- Search space parsing ------------------------------------------------------------


@pytest.mark.parametrize("entry,expected", [
    ("learning_rate=log:0.01:0.2", SearchDimension("learning_rate", "log", 0.01, 0.2)),
    ("wrc_alpha=0.02:0.2", SearchDimension("wrc_alpha", "linear", 0.02, 0.2)),
    ("ras_steps=int:0:3", SearchDimension("ras_steps", "int", 0, 3)),
    ("temperature=choice:1|2|4", SearchDimension("temperature", "choice",
                                                 choices=(1.0, 2.0, 4.0))),
    ("batch_size=choice:32|64", SearchDimension("batch_size", "choice", choices=(32, 64))),
    ("divergence=choice:js|total_variation",
     SearchDimension("divergence", "choice", choices=("js", "total_variation"))),
    (" kd_weight = 0.5:2 ", SearchDimension("kd_weight", "linear", 0.5, 2.0)),
])
def test_parses_each_spec_kind(entry, expected):
  (dimension,) = search_space.parse_search_space([entry], config_lib.field_types())
  assert dimension == expected
  assert type(dimension.choices[0] if dimension.choices else dimension.low) is type(
      expected.choices[0] if expected.choices else expected.low)


@pytest.mark.parametrize("entry,message", [
    ("learning_rate", "expected field=SPEC"),
    ("learning_rate=", "expected field=SPEC"),
    ("learning_rat=log:0.01:0.2", "'learning_rat' is not a config field; did you mean "
     "'learning_rate', 'generator_learning_rate' or 'discriminator_learning_rate'? "
     "Searchable fields: "),
    ("method=choice:dml|acn", "'method' is not a numeric or text config field"),
    ("dataset=choice:digits|fashion_mnist", "'dataset' is not a numeric or text config field"),
    ("nesterov=choice:0|1", "'nesterov' is not a numeric or text config field"),
    ("divergence=js:total_variation", "divergence is a text setting: use choice:A|B"),
    ("seed=int:0:5", "seed shapes the data splits"),
    ("validation_fraction=0.1:0.2", "validation_fraction shapes the data splits"),
    ("image_size=int:16:32", "image_size shapes the data splits or the images"),
    ("learning_rate=log:0:0.2", "log sampling needs LOW > 0"),
    ("learning_rate=0.2:0.01", "LOW=0.2 must be below HIGH=0.01"),
    ("learning_rate=0.1", "linear needs exactly two bounds"),
    ("learning_rate=log:0.01:0.1:1", "log needs exactly two bounds"),
    ("learning_rate=lin:0.01:0.1", "unknown kind 'lin'"),
    ("learning_rate=fast:slow", "could not convert string to float"),
    ("ras_steps=0:3", "ras_steps is an integer field: use int:LOW:HIGH or choice"),
    ("ras_steps=int:0:2.5", "invalid literal for int()"),
    ("ras_steps=choice:1|1.5", "invalid literal for int()"),
    ("temperature=choice:2", "at least two distinct values"),
    ("temperature=choice:2|2", "at least two distinct values"),
])
def test_bad_entries_raise_clear_config_errors(entry, message):
  with pytest.raises(ConfigError, match="search_space entry") as error:
    search_space.parse_search_space([entry], config_lib.field_types())
  assert message in str(error.value)
  assert repr(entry) in str(error.value)


def test_validate_checks_the_search_space():
  config = _digits()
  assert config.tuning.search_space == config_lib.TuningConfig().search_space
  with pytest.raises(ConfigError, match="more than once"):
    config.replace(search_space=("kd_weight=0:1", "kd_weight=1:2")).validate()
  with pytest.raises(ConfigError, match="'wrc_alpa' is not a config field; did you mean 'wrc_alpha'"):
    _digits(overrides=["search_space=wrc_alpa=0.1:0.2"])
  # The override parser splits on commas, which is why choices use "|".
  overridden = _digits(overrides=["search_space=kd_weight=0.5:2,temperature=choice:1|4"])
  assert overridden.tuning.search_space == ("kd_weight=0.5:2", "temperature=choice:1|4")


def test_search_config_is_checked_before_any_training():
  with pytest.raises(ConfigError, match="allows wrc_alpha=2.0, which is invalid"):
    tuning.prepare_search_config(_digits().replace(search_space=("wrc_alpha=0.5:2.0",)))
  with pytest.raises(ConfigError, match="allows divergence=kl, which is invalid: "
                     "divergence='kl' is not one of js, total_variation"):
    tuning.prepare_search_config(_digits().replace(search_space=("divergence=choice:js|kl",)))
  with pytest.raises(ConfigError, match="Nothing to tune: search_space has no field "
                     "that method=dml uses"):
    tuning.prepare_search_config(_digits("dml").replace(search_space=("wrc_alpha=0:1",)))
  config, notes = tuning.prepare_search_config(
      _digits("independent", ["validation_fraction=0"]))
  assert config.data.validation_fraction == tuning.DEFAULT_VALIDATION_FRACTION
  assert "validation_fraction was 0" in notes[0]
  assert [dimension.field for dimension in tuning.search_dimensions(config)] == [
      "learning_rate"]
  assert "kd_weight" in notes[1] and "wrc_alpha" in notes[1]


def test_a_text_setting_is_chosen_among_its_values_and_logged_as_text():
  config = _digits().replace(search_space=("divergence=choice:total_variation|js",
                                           "wrc_alpha=0.02:0.2"))
  dimensions = tuning.search_dimensions(config)
  hp = kt.HyperParameters()
  trial = tuning.trial_config(config, hp, dimensions)
  # keras-tuner's first draw of a Choice is its first value, of a Float its low end.
  assert (trial.adversarial.divergence, trial.adversarial.wrc_alpha) == (
      "total_variation", 0.02)
  domain = hparams_log.hparam_domain(dimensions[0])
  assert sorted(domain.values) == ["js", "total_variation"]


def test_unknown_tuner_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="Unknown tuner 'grid'. Valid tuners: random, "
                     "bayesian, hyperband."):
    tuning.tune(_digits(), str(tmp_path), tuner="grid")
  assert not os.listdir(tmp_path)


def _first_trial_values(directory, seed):
  """The oracle's first sample for `seed`, with a trivial model in place of ACN's."""
  config = _digits().replace(seed=seed)
  dimensions = tuning.search_dimensions(config)

  def build(hp):
    for dimension in dimensions:
      tuning.sample(hp, dimension)
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

  tuner = kt.RandomSearch(build, objective=tuning.OBJECTIVE, max_trials=2,
                          seed=tuning.oracle_seed(config), directory=str(directory),
                          project_name="search")
  return tuner.oracle.create_trial("tuner0").hyperparameters.values


def test_sampling_is_deterministic_given_the_seed(tmp_path):
  # Seed 0 included: keras-tuner itself would replace it by a random seed.
  first = _first_trial_values(tmp_path / "a", seed=0)
  assert _first_trial_values(tmp_path / "b", seed=0) == first
  assert _first_trial_values(tmp_path / "c", seed=1) != first


# -- A tiny search, resumed, and a run from its best config ---------------------------


@pytest.fixture(scope="module")
def search(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("tune"))
  summary = tuning.tune(_digits(), model_dir, tuner="random", max_trials=2, verbose=0)
  return model_dir, summary


def _trial_folders(model_dir):
  return sorted(name for name in os.listdir(os.path.join(model_dir, tuning.TUNER_DIR))
                if name.startswith("trial_"))


def _within(dimension, value):
  if dimension.choices:
    return value in dimension.choices
  return dimension.low <= value <= dimension.high


def test_search_writes_the_best_trials_full_config(search, tmp_path):
  model_dir, summary = search
  assert summary["num_trials"] == summary["num_completed"] == 2
  assert len(_trial_folders(model_dir)) == 2
  scores = [trial["score"] for trial in summary["trials"]]
  assert summary["best_score"] == max(scores) and 0.0 <= max(scores) <= 1.0
  assert summary["trials"][0]["values"] != summary["trials"][1]["values"]

  path = os.path.join(model_dir, tuning.BEST_CONFIG_FILE)
  with open(path) as handle:
    written = json.load(handle)
  defaults = _digits()
  assert set(written) == set(defaults.to_dict())  # Config fields only, all of them.
  best = command_line.resolve_config("digits", config_file=path)
  for dimension in search_space.parse_search_space(defaults.tuning.search_space,
                                                   config_lib.field_types()):
    value = best.get(dimension.field)
    assert _within(dimension, value), (dimension, value)
    assert value == summary["best_values"][dimension.field]
    if dimension.kind in ("log", "linear"):
      assert value != defaults.get(dimension.field)
  searched = {dimension.field for dimension in tuning.search_dimensions(defaults)}
  assert best.replace(**{field: defaults.get(field) for field in searched}) == defaults

  results = training.train(best, str(tmp_path / "best_run"), verbose=0)
  assert os.path.exists(tmp_path / "best_run" / run_dir.RESULTS_FILE)
  assert results["method"] == "acn" and results["config"] == best.to_dict()


def test_a_dml_noise_search_samples_its_noise_and_leaves_phase_a_out(tmp_path):
  config = _digits("dml_noise", ["epochs=1", "train_examples=128", "validation_fraction=0.25",
                                 "search_space=input_noise=0.05:0.2,wrc_alpha=0.02:0.2"])
  assert [d.field for d in tuning.search_dimensions(config)] == ["input_noise"]
  summary = tuning.tune(config, str(tmp_path), tuner="random", max_trials=1, verbose=0)
  assert summary["num_completed"] == 1
  best = command_line.resolve_config(
      "digits", config_file=os.path.join(str(tmp_path), tuning.BEST_CONFIG_FILE))
  assert best.method == "dml_noise" and 0.05 <= best.distillation.input_noise <= 0.2
  assert best.distillation.input_noise == summary["best_values"]["input_noise"]


def _read_events(run_dir):
  """The event files directly in run_dir (not its subdirectories)."""
  accumulator = event_accumulator.EventAccumulator(
      run_dir, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def _hparams_runs(model_dir):
  """The HParams experiment at the log root, and per trial run its trial id, values,
  (step, score) records and status."""
  log_dir = os.path.join(model_dir, tuning.HPARAMS_DIR)
  root = _read_events(log_dir)
  content = root.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  experiment = hparams_metadata.parse_experiment_plugin_data(
      content[hparams_metadata.EXPERIMENT_TAG])
  trials = {}
  for name in sorted(os.listdir(log_dir)):
    if not os.path.isdir(os.path.join(log_dir, name)):
      continue
    run = _read_events(os.path.join(log_dir, name))
    content = run.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    end = hparams_metadata.parse_session_end_info_plugin_data(
        content[hparams_metadata.SESSION_END_INFO_TAG])
    values = {key: getattr(value, value.WhichOneof("kind"))
              for key, value in start.hparams.items()}
    scores = ([(event.step, float(tf.make_ndarray(event.tensor_proto)))
               for event in run.Tensors(tuning.OBJECTIVE.name)]
              if tuning.OBJECTIVE.name in run.Tags()["tensors"] else [])
    trials[name] = (start.group_name, values, scores,
                    hparams_api_pb2.Status.Name(end.status))
  root_files = [name for name in os.listdir(log_dir) if name.startswith("events.out")]
  return experiment, root_files, trials


def test_each_trial_is_a_tensorboard_hparams_run(search):
  model_dir, _ = search
  with open(os.path.join(model_dir, tuning.RESULTS_FILE)) as handle:
    recorded = json.load(handle)
  assert recorded["hparams_logdir"] == os.path.join(model_dir, tuning.HPARAMS_DIR)
  experiment, root_files, trials = _hparams_runs(model_dir)

  dimensions = tuning.search_dimensions(_digits())
  assert len(root_files) == 1
  assert [info.name for info in experiment.hparam_infos] == [d.field for d in dimensions]
  for info, dimension in zip(experiment.hparam_infos, dimensions):
    if dimension.choices:
      assert [value.number_value for value in info.domain_discrete.values] == list(
          dimension.choices)
    else:
      assert (info.domain_interval.min_value, info.domain_interval.max_value) == (
          dimension.low, dimension.high)
  assert [metric.name.tag for metric in experiment.metric_infos] == ["val_ensemble_top1"]

  assert sorted(trials) == [f"trial_{trial['trial']}" for trial in recorded["trials"]]
  assert len(trials) == 2
  for trial in recorded["trials"]:
    trial_id, values, scores, status = trials[f"trial_{trial['trial']}"]
    assert trial_id == trial["trial"] and status == "STATUS_SUCCESS"
    assert values == trial["values"]
    # The score at its best epoch, float32 like the Keras metric it was.
    best_step = read_json(os.path.join(model_dir, tuning.TUNER_DIR,
                                       f"trial_{trial['trial']}", "trial.json"))["best_step"]
    assert scores == [(best_step, np.float32(trial["score"]))]
  assert trials["trial_" + recorded["best_trial"]][2][0][1] == np.float32(
      recorded["best_score"])


def test_a_failed_trial_is_a_run_without_score(tmp_path):
  dimensions = tuning.search_dimensions(_digits())
  hp = kt.HyperParameters()
  for dimension in dimensions:
    tuning.sample(hp, dimension)
  # The Bayesian oracle hands back numpy values.
  hp.values = {field: np.float64(value) if isinstance(value, float) else np.int64(value)
               for field, value in hp.values.items()}
  log = tuning.HParamsLog(str(tmp_path / tuning.HPARAMS_DIR), dimensions)
  log.write_config()
  log.write_config()  # Written once.
  log.write_trial(kt.engine.trial.Trial(hp, trial_id="7", status="FAILED"))
  _, root_files, trials = _hparams_runs(str(tmp_path))
  assert len(root_files) == 1
  assert trials == {"trial_7": ("7", {k: v.item() for k, v in hp.values.items()}, [],
                                 "STATUS_FAILURE")}


def test_running_again_continues_the_search(search):
  model_dir, first = search
  again = tuning.tune(_digits(), model_dir, tuner="random", max_trials=2, verbose=0)
  assert again["trials"] == first["trials"]  # Reloaded, nothing new run.
  assert len(_trial_folders(model_dir)) == 2

  more = tuning.tune(_digits(), model_dir, tuner="random", max_trials=3, verbose=0)
  assert more["num_trials"] == more["num_completed"] == 3
  assert more["trials"][:2] == first["trials"]
  assert len(_trial_folders(model_dir)) == 3
  assert more["best_score"] == max(trial["score"] for trial in more["trials"])
  # The new trial is a third HParams run; the experiment is still written once.
  _, root_files, trials = _hparams_runs(model_dir)
  assert len(root_files) == 1
  assert sorted(trials) == [f"trial_{trial['trial']}" for trial in more["trials"]]


def test_a_different_search_in_the_same_model_dir_is_refused(search):
  model_dir, _ = search
  with pytest.raises(ConfigError, match=r"holds a search of another configuration.*"
                     r"learning_rate=log:0.01:0.1"):
    tuning.tune(_digits().replace(search_space=("learning_rate=log:0.01:0.1",)),
                model_dir, max_trials=2, verbose=0)
  with pytest.raises(ConfigError, match="tuner \\(saved 'random', now 'bayesian'\\)"):
    tuning.tune(_digits(), model_dir, tuner="bayesian", max_trials=2, verbose=0)


def _failing_fit(monkeypatch, succeed_first: int):
  """Makes every trial after the first `succeed_first` raise in fit."""
  original = tuning.CoDistillationHyperModel.fit
  calls = []

  def fit(self, hp, model, *args, **kwargs):
    calls.append(1)
    if len(calls) > succeed_first:
      raise ValueError(f"trial {len(calls)} exploded")
    return original(self, hp, model, *args, **kwargs)

  monkeypatch.setattr(tuning.CoDistillationHyperModel, "fit", fit)


def test_a_search_without_a_completed_trial_is_a_clear_error(tmp_path, monkeypatch):
  """keras-tuner stops after 3 failed trials in a row; the error names the last
  trial's exception and where every trial's is, and that file is written."""
  _failing_fit(monkeypatch, succeed_first=0)
  model_dir = str(tmp_path / "tune")
  with pytest.raises(errors.SearchFailedError) as raised:
    tuning.tune(_digits("dml", TINY_DML), model_dir, max_trials=5, verbose=0)
  message = str(raised.value)
  assert "No trial" in message and "(3 failed)" in message
  assert "ValueError: trial 3 exploded" in message
  with open(os.path.join(model_dir, tuning.RESULTS_FILE)) as handle:
    recorded = json.load(handle)
  assert recorded["num_completed"] == 0 and recorded["best_trial"] is None
  assert [trial["status"] for trial in recorded["trials"]] == ["FAILED"] * 3
  assert any("stopped early" in note for note in recorded["notes"])
  assert not os.path.exists(os.path.join(model_dir, tuning.BEST_CONFIG_FILE))


def test_a_search_stopped_by_failures_keeps_its_completed_trial(tmp_path, monkeypatch):
  _failing_fit(monkeypatch, succeed_first=1)
  model_dir = str(tmp_path / "tune")
  config = _digits("dml", TINY_DML)
  summary = tuning.tune(config, model_dir, max_trials=6, verbose=0)
  assert [trial["status"] for trial in summary["trials"]] == ["COMPLETED"] + ["FAILED"] * 3
  assert summary["best_trial"] == summary["trials"][0]["trial"]
  assert any("stopped early" in note for note in summary["notes"])
  assert os.path.exists(os.path.join(model_dir, tuning.BEST_CONFIG_FILE))
  # The trial that triggered the stop is on the HParams dashboard and saved as
  # FAILED, like the others...
  _, _, logged = _hparams_runs(model_dir)
  assert {name: run[3] for name, run in logged.items()} == {
      f"trial_{trial['trial']}": "STATUS_SUCCESS" if trial["status"] == "COMPLETED"
      else "STATUS_FAILURE" for trial in summary["trials"]}
  for trial in summary["trials"]:
    with open(os.path.join(model_dir, tuning.TUNER_DIR, f"trial_{trial['trial']}",
                           "trial.json")) as f:
      assert json.load(f)["status"] == trial["status"]
  # ...so running the command again starts a new trial rather than repeating it.
  again = tuning.tune(config, model_dir, max_trials=6, verbose=0)
  assert again["trials"][:4] == summary["trials"]
  assert len(again["trials"]) == 5 and again["trials"][4]["status"] == "FAILED"


@pytest.mark.slow
def test_sigterm_stops_a_search_saying_where_and_the_same_command_continues_it(
    tmp_path, run_py_here):
  """Before, SIGTERM ended a search silently (no message, killed by the signal).
  The signalled search is a process of its own; the same command continues it
  through run.py's main in this process."""
  model_dir = str(tmp_path / "search")
  command = ["--experiment=digits", "--method=dml", "--mode=tune", f"--model_dir={model_dir}",
             "--max_trials=2", "--verbose=0", "--override=epochs=2",
             "--override=train_examples=256", "--override=validation_fraction=0.2",
             "--override=search_space=learning_rate=log:0.01:0.2"]
  process = start_run_py(*command, stdout=subprocess.DEVNULL)
  tuner_dir = os.path.join(model_dir, tuning.TUNER_DIR)
  deadline = time.time() + 240
  while process.poll() is None and time.time() < deadline and not (
      os.path.isdir(tuner_dir) and _trial_folders(model_dir)):
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=240)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  lines = error_lines(stderr)
  assert len(lines) == 1 and lines[0].startswith("interrupted: Interrupted by SIGTERM "), stderr
  assert "Run the same command again to continue the search" in lines[0]
  assert "during trial" in lines[0] or "after trial" in lines[0]
  assert not os.path.exists(os.path.join(model_dir, tuning.RESULTS_FILE))

  completed = run_py_here(*command)
  assert completed.returncode == 0, completed.stderr[-3000:]
  summary = read_json(os.path.join(model_dir, tuning.RESULTS_FILE))
  assert summary["num_trials"] == 2 and summary["num_completed"] == 2


def test_a_full_disk_ends_the_search_with_one_error_instead_of_failing_every_trial(
    tmp_path, monkeypatch):
  """Before, keras-tuner recorded the OSError as a failed trial and went on to the
  next, which failed the same way, until it stopped after three in a row."""
  def full(*arguments, **keywords):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(keras.Model, "save_weights", full)
  model_dir = str(tmp_path / "search")
  config = _digits("dml", ["epochs=1", "train_examples=256", "validation_fraction=0.2",
                           "search_space=learning_rate=log:0.01:0.2"])
  with pytest.raises(storage.StorageError) as raised:
    tuning.tune(config, model_dir, max_trials=3, verbose=0)
  message = str(raised.value)
  assert f"Cannot write {os.path.join(model_dir, tuning.TUNER_DIR)}" in message
  assert "No space left on device" in message and "run the same command again" in message
  assert len(_trial_folders(model_dir)) == 1  # It stopped at the first trial.


def test_each_acn_trial_records_phase_a_health(search):
  """Every trial's keras-tuner record holds Phase A's health figures of its best
  epoch (PhaseAHealth on the validation split), and its history.csv those of every
  epoch, beside its scores: what a search that constrains the generator's health
  chooses among."""
  model_dir, _ = search
  for folder in _trial_folders(model_dir):
    trial_dir = os.path.join(model_dir, tuning.TUNER_DIR, folder)
    with open(os.path.join(trial_dir, "trial.json")) as handle:
      record = json.load(handle)
    metrics = record["metrics"]["metrics"]
    with open(os.path.join(trial_dir, "history.csv")) as handle:
      history = list(csv.DictReader(handle))
    # One row an epoch, the epoch keras-tuner scored among them with its figures.
    assert [int(row["epoch"]) for row in history] == list(range(_digits().optimization.epochs))
    best = history[record["best_step"]]
    for name in ("health_residual_linf", "val_ensemble_top1", "val_c0_top1"):
      np.testing.assert_allclose(float(best[name]),
                                 metrics[name]["observations"][-1]["value"][0], rtol=1e-6)
    for name in ("health_divergence_ratio_generated", "health_residual_linf",
                 "val_ensemble_top1"):
      values = [value for observation in metrics[name]["observations"]
                for value in observation["value"]]
      assert values and all(np.isfinite(values)), (folder, name)
    residual = metrics["health_residual_linf"]["observations"][-1]["value"][0]
    assert 0.0 <= residual <= 1.0  # |x̃0 - x| of [0, 1] images.


def test_a_hyperband_trial_that_continues_its_parent_reads_the_data_from_there():
  """Hyperband trains a trial on from its parent's weights, from `initial_epoch`:
  its first batch is the one the stream holds after that many epochs."""
  config = _digits("dml", TINY_DML)
  splits = training.load_data(config, None)
  hypermodel = tuning.CoDistillationHyperModel(config, splits)
  steps = builders.steps_per_epoch(config, splits.info)

  class FirstBatch:
    def fit(self, data, **kwargs):
      self.images, self.labels = next(iter(data))
      self.kwargs = kwargs

  model = FirstBatch()
  hypermodel.fit(kt.HyperParameters(), model, epochs=4, initial_epoch=2, verbose=0)
  assert (model.kwargs["epochs"], model.kwargs["initial_epoch"]) == (4, 2)
  stream = list(training.training_pipeline(config, splits).take(2 * steps + 1))
  np.testing.assert_array_equal(model.images, stream[2 * steps][0])
  np.testing.assert_array_equal(model.labels, stream[2 * steps][1])
  assert not np.array_equal(model.labels, stream[0][1])
