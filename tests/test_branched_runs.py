"""ONE and CL-ILR as run.py runs them: per-branch results, export, eval, `.keras`
round trips, two replicas, resume after a kill, the tuner, and their config errors."""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import api, errors
from acn_tf.config import command_line, registry, schema as config_lib
from acn_tf.config.schema import BranchedConfig, ConfigError, ExperimentConfig
from acn_tf.data import pipeline
from acn_tf.method.cl_ilr import CollaborativeLearning
from acn_tf.method.one import OnTheFlyNativeEnsemble
from acn_tf.networks import branched
from acn_tf.run import distribute, optimizers, training, tuning
from acn_tf.run.export import ENSEMBLE_NAME
from conftest import assert_one_error_line, kill_run_py_after_checkpoint, read_json

THREE = "--override=architectures=small_cnn,small_cnn,small_cnn"
TINY = ["--experiment=digits", THREE, "--override=epochs=1", "--override=train_examples=256",
        "--verbose=0"]


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("method", ["one", "cl_ilr"])
def test_run_py_reports_each_branch_and_exports_branches_and_ensemble(run_py_here, tmp_path,
                                                                      method):
  model_dir = str(tmp_path / method)
  completed = run_py_here(*TINY, f"--method={method}", f"--model_dir={model_dir}")
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = read_json(os.path.join(model_dir, "results.json"))
  assert results["method"] == method
  assert [c["architecture"] for c in results["classifiers"]] == ["small_cnn"] * 3
  assert all(0.0 <= c["top1"] <= 1.0 for c in results["classifiers"])
  assert set(results["optimizer_iterations"]) == {"classifiers"}

  # Each export serves its Keras predictions: trunk + branch i, and the ensemble
  # (ONE's gated teacher, CL-ILR's mean of the heads' softmax).
  _, model, splits = training.restore_run(model_dir)
  images = next(splits.test.batch(50).as_numpy_iterator())[0]
  outputs = [o.numpy() for o in model(pipeline.pixels_to_unit_range(images))]
  expected = {f"classifier_{i}": _softmax(outputs[i]) for i in range(3)}
  expected[ENSEMBLE_NAME] = (_softmax(outputs[3]) if method == "one" else
                             np.mean([_softmax(z) for z in outputs], axis=0))
  export_dir = os.path.join(model_dir, "export")
  assert sorted(os.listdir(export_dir)) == sorted(expected)
  for name, probabilities in expected.items():
    serve = tf.saved_model.load(os.path.join(export_dir, name)).signatures["serving_default"]
    served = serve(images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5,
                               err_msg=name)
    assert set(served) == {"probabilities", "classes", "class_names"}

  # --mode=eval restores the run and measures what training measured.
  evaluated = run_py_here(*TINY, f"--method={method}", "--mode=eval",
                          f"--model_dir={model_dir}")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  again = read_json(os.path.join(model_dir, "results.json"))
  assert again["ensemble_top1"] == pytest.approx(results["ensemble_top1"], abs=1e-6)
  for before, after in zip(results["classifiers"], again["classifiers"]):
    assert after["top1"] == pytest.approx(before["top1"], abs=1e-6)


def _model(method, strategy=None, seed=3):
  one = method == "one"
  with (strategy or tf.distribute.get_strategy()).scope():
    network = branched.build_branched_network(
        "small_cnn", (8, 8, 1), 5, [0.5], [0.08], branches=3, with_gate=one,
        scale_trunk_gradient=not one, seed=seed)
    model = (OnTheFlyNativeEnsemble if one else CollaborativeLearning)(network, 3)
    model.compile(optimizers.PyTorchSGD(0.1, momentum=0.9, weight_decay=1e-3),
                  branched=BranchedConfig())
    model(tf.zeros((1, 8, 8, 1)))
    model.build_optimizers()
  return model


def _repeated_halves(steps=2, half=8, seed=0):
  """Batches of 2 x `half` examples whose two halves are equal: each of two replicas
  sees one half, so its batch-norm statistics are the whole batch's."""
  rng = np.random.default_rng(seed)
  images = rng.random((steps, half, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, 5, (steps, half))
  images = np.concatenate([images, images], axis=1).reshape(-1, 8, 8, 1)
  labels = np.concatenate([labels, labels], axis=1).reshape(-1)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(2 * half)


@pytest.mark.parametrize("method", ["one", "cl_ilr"])
def test_two_replicas_match_one_replica(method):
  single = _model(method)
  mirrored = _model(method, distribute.create_strategy("mirrored"))  # conftest: 2 CPUs.
  for a, b in zip(single.weights, mirrored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  start = [w.numpy() for w in single.weights]
  single_logs = single.fit(_repeated_halves(), epochs=1, verbose=0, shuffle=False).history
  mirrored_logs = mirrored.fit(_repeated_halves(), epochs=1, verbose=0, shuffle=False).history
  moved = 0
  for a, b, before in zip(single.weights, mirrored.weights, start):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    moved += not np.allclose(a.numpy(), before)
  assert moved > 10
  for key in ("loss", "c0_loss", "c2_top1", "ensemble_top1"):
    np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4, err_msg=key)


@pytest.mark.parametrize("method", ["one", "cl_ilr"])
def test_keras_format_round_trips_the_network(method, tmp_path):
  model = _model(method)
  model.fit(_repeated_halves(steps=1), epochs=1, verbose=0, shuffle=False)
  path = str(tmp_path / f"{method}.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  assert type(loaded) is type(model) and loaded.branches == 3
  images = np.random.default_rng(1).random((4, 8, 8, 1), dtype=np.float32)
  for original, restored in zip(model(images), loaded(images)):
    np.testing.assert_allclose(restored.numpy(), original.numpy(), atol=1e-6)
  loaded.compile(optimizers.PyTorchSGD(0.1, momentum=0.9, weight_decay=1e-3))
  loaded.build_optimizers()
  loaded.load_weights(path)
  assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 1


@pytest.mark.slow
def test_a_killed_run_resumes_and_finishes_every_step(tmp_path, run_py_here):
  """Killed in a process of its own; the same command resumes it through run.py's
  main in this process."""
  model_dir = str(tmp_path / "run")
  epochs, steps = 4, 256 // 64
  command = ["--experiment=digits", "--method=one", THREE, f"--model_dir={model_dir}",
             "--verbose=0", "--noexport", f"--override=epochs={epochs}",
             "--override=train_examples=256"]
  resumed_from = kill_run_py_after_checkpoint(command, model_dir, 1)
  assert 1 <= resumed_from < epochs
  completed = run_py_here(*command)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = read_json(os.path.join(model_dir, "results.json"))
  assert results["optimizer_iterations"] == {"classifiers": epochs * steps}
  assert 0 < results["train_steps"] < epochs * steps
  with open(os.path.join(model_dir, "history.csv")) as handle:
    assert [int(row["epoch"]) for row in csv.DictReader(handle)][-1] == epochs - 1


def test_a_search_samples_the_methods_own_settings_only(tmp_path):
  config = command_line.resolve_config("digits", "cl_ilr", overrides=[
      "architectures=small_cnn,small_cnn", "epochs=1", "train_examples=128",
      "validation_fraction=0.25",
      "search_space=cl_ilr_hard_weight=0.2:0.8,one_temperature=choice:2|4,wrc_alpha=0.02:0.2"])
  assert [d.field for d in tuning.search_dimensions(config)] == ["cl_ilr_hard_weight"]
  summary = tuning.tune(config, str(tmp_path), tuner="random", max_trials=1, verbose=0)
  assert summary["num_completed"] == 1
  best = command_line.resolve_config(
      "digits", config_file=os.path.join(str(tmp_path), tuning.BEST_CONFIG_FILE))
  assert best.method == "cl_ilr"
  assert best.branched.cl_ilr_hard_weight == summary["best_values"]["cl_ilr_hard_weight"]
  assert 0.2 <= best.branched.cl_ilr_hard_weight <= 0.8


def test_config_errors_name_the_fix(run_py_here, tmp_path):
  mixed = ExperimentConfig.from_fields(name="x", dataset="digits", method="one",
                                       architectures=("resnet8", "resnet20"))
  with pytest.raises(ConfigError, match="branches one backbone.*architectures=resnet8,"):
    mixed.validate()
  completed = run_py_here("--experiment=digits", "--method=cl_ilr",
                          "--override=split_after=stage2", f"--model_dir={tmp_path / 'x'}")
  assert_one_error_line(completed, "split_after='stage2'", "stage1")
  with pytest.raises(errors.ConfigError, match="builds from `architectures`"):
    api.build_model([keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                       keras.layers.Dense(3)])] * 2,
                    api.config(method="one"), steps_per_epoch=1)


@pytest.mark.parametrize("method", ["one", "cl_ilr"])
def test_the_step_under_xla_matches_the_plain_graph(method):
  plain, xla = _model(method), _model(method)
  plain.jit_compile, xla.jit_compile = False, True
  plain.fit(_repeated_halves(), epochs=1, verbose=0, shuffle=False)
  xla.fit(_repeated_halves(), epochs=1, verbose=0, shuffle=False)
  assert xla.jit_compile is True  # Keras stores False if a layer cannot compile.
  for a, b in zip(plain.weights, xla.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


@pytest.mark.parametrize("method", ["one", "cl_ilr"])
def test_mixed_precision_keeps_logits_and_losses_in_float32(method):
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = _model(method)
    logs = model.fit(_repeated_halves(), epochs=1, verbose=0, shuffle=False).history
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert all(output.dtype == tf.float32 for output in model(tf.zeros((2, 8, 8, 1))))
  assert np.isfinite(logs["loss"][-1])


@pytest.mark.parametrize("method", ["one", "cl_ilr"])
def test_settings_the_method_does_not_read_change_nothing_in_its_step(method):
  """What the tuner leaves out of a search (`fields_unused_by`) is what the step
  ignores: every such setting changed at once gives the same weights; a setting it
  reads (its temperature) changes them."""
  from test_config import _another_value, _weights_after_a_step
  base = registry.get_experiment("digits").replace(method=method)
  unused = config_lib.fields_unused_by(method)
  assert {"temperature", "kd_weight", "wrc_alpha", "input_noise"} <= unused
  assert "split_after" not in unused
  assert ("one_temperature" in unused) == (method == "cl_ilr")
  changed = base.replace(**{name: _another_value(name, base.get(name))
                            for name in unused}).validate()
  for before, after in zip(_weights_after_a_step(base), _weights_after_a_step(changed)):
    np.testing.assert_array_equal(before, after)
  own = "one_temperature" if method == "one" else "cl_ilr_temperature"
  read = base.replace(**{own: 1.5})
  assert any(not np.array_equal(a, b) for a, b in
             zip(_weights_after_a_step(base), _weights_after_a_step(read)))
