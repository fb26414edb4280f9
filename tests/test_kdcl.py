"""KDCL (acn_tf/method/kdcl.py): its loss against a numpy transcription of the paper's
equations, one step's gradient against a hand-built one, two replicas against one, XLA
and mixed precision, resume, export, run.py's results and the tuner."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.config import command_line, saved_runs, schema as config_lib
from acn_tf.config.schema import DistillationConfig
from acn_tf.data.pipeline import DatasetInfo
from acn_tf.method import kdcl
from acn_tf.method.kdcl import EnsembleTargetDistillation
from acn_tf.run import builders, distribute, export, optimizers, run_dir, safety, tuning
from conftest import ROOT, read_json, run_py
from tiny_models import (EXACT_CLASSES, IMAGE_SHAPE, dense_classifier, exact_batches,
                         random_batch)


# -- numpy transcription of the paper's equations --------------------------------------


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _numpy_min_logit(logits, labels):
  """z_t,c = min_i (z_i,c − z_i,y), example by example, class by class."""
  peers, batch, classes = logits.shape
  target = np.empty((batch, classes))
  for b in range(batch):
    for c in range(classes):
      target[b, c] = min(logits[i, b, c] - logits[i, b, labels[b]] for i in range(peers))
  return target


def _numpy_kdcl(logits, labels, temperature, kd_weight, target_logits):
  """L_i = CE(z_i, y) + κ T² KL(t^T ‖ p_i^T), per peer and example."""
  t = _softmax(target_logits / temperature)
  result = []
  for z in logits:
    cross_entropy = -np.log(_softmax(z)[np.arange(len(labels)), labels])
    p = _softmax(z / temperature)
    kl = np.sum(t * (np.log(t) - np.log(p)), axis=-1)
    result.append(cross_entropy + kd_weight * temperature**2 * kl)
  return np.array(result)


def test_min_logit_target_by_hand():
  """Two peers, three classes, true class 0: z1 − z1,0 = (0, −2, −1) and
  z2 − z2,0 = (0, 1, 3), whose elementwise minimum is (0, −2, −1); with true
  class 2, (1, −1, 0) and (−3, −2, 0) give (−3, −2, 0)."""
  logits = [tf.constant([[2.0, 0.0, 1.0], [2.0, 0.0, 1.0]]),
            tf.constant([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]])]
  np.testing.assert_array_equal(kdcl.min_logit_target(logits, tf.constant([0, 2])).numpy(),
                                [[0.0, -2.0, -1.0], [-3.0, -2.0, 0.0]])


@pytest.mark.parametrize("target", config_lib.KDCL_TARGETS)
@pytest.mark.parametrize("temperature,kd_weight", [(1.0, 1.0), (3.0, 0.5)])
def test_losses_match_the_numpy_transcription(target, temperature, kd_weight):
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 3.0, (3, 8, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 8)
  target_logits = (_numpy_min_logit(logits, labels) if target == "min_logit"
                   else logits.mean(axis=0))
  got = kdcl.kdcl_losses([tf.constant(z) for z in logits], tf.constant(labels), temperature,
                         kd_weight, target)
  np.testing.assert_allclose(np.array([loss.numpy() for loss in got]),
                             _numpy_kdcl(logits, labels, temperature, kd_weight,
                                         target_logits), rtol=1e-5, atol=1e-5)


def test_the_min_logit_target_fits_the_label_at_least_as_well_as_every_peer():
  """The paper's reason for MinLogit: CE(z_t, y) ≤ CE(z_i, y) for every peer i."""
  rng = np.random.default_rng(1)
  logits = rng.normal(0.0, 3.0, (4, 64, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 64)
  rows = np.arange(64)
  target = kdcl.min_logit_target([tf.constant(z) for z in logits], tf.constant(labels))
  target_cross_entropy = -np.log(_softmax(target.numpy())[rows, labels])
  for z in logits:
    assert np.all(target_cross_entropy <= -np.log(_softmax(z)[rows, labels]) + 1e-5)


def test_the_target_choices_are_the_configs():
  assert tuple(kdcl.TARGETS) == config_lib.KDCL_TARGETS


# -- One training step -------------------------------------------------------------------


def _linear_peers():
  return [dense_classifier(seed, classes=4, shape=(3, 3, 1)) for seed in (11, 12)]


@pytest.mark.parametrize("target", config_lib.KDCL_TARGETS)
def test_one_step_moves_each_peer_by_its_hand_built_gradient(target):
  """Linear peers z_i = x W_i + b_i, plain SGD: dL/dz_i = [softmax(z_i) − onehot(y)
  + κ T (softmax(z_i / T) − t)] / B, with t fixed, W_i −= η xᵀ dL/dz_i,
  b_i −= η Σ_b dL/dz_i. A gradient through MinLogit's target would add terms; through
  the mean logits' it is zero (Σ_i log p_i^T is n log t^T up to a per-example constant)."""
  temperature, kd_weight, rate = 2.0, 0.7, 0.5
  model = EnsembleTargetDistillation(_linear_peers())
  model.compile(keras.optimizers.SGD(rate),
                distillation=DistillationConfig(temperature=temperature, kd_weight=kd_weight,
                                                kdcl_target=target))
  model(tf.zeros((1, 3, 3, 1)))
  model.build_optimizers()
  images, labels = random_batch(6, num_classes=4, image_shape=(3, 3, 1), seed=2)
  flat = images.reshape(6, -1).astype(np.float64)
  before = [[w.numpy().astype(np.float64) for w in c.trainable_weights]
            for c in model.classifiers]
  logits = np.array([flat @ kernel + bias for kernel, bias in before])
  target_logits = (_numpy_min_logit(logits, labels) if target == "min_logit"
                   else logits.mean(axis=0))
  soft_target = _softmax(target_logits / temperature)
  onehot = np.eye(4)[labels]
  model.train_on_batch(images, labels)
  for (kernel, bias), z, classifier in zip(before, logits, model.classifiers):
    grad_logits = (_softmax(z) - onehot
                   + kd_weight * temperature * (_softmax(z / temperature) - soft_target)) / 6
    new_kernel, new_bias = (w.numpy() for w in classifier.trainable_weights)
    np.testing.assert_allclose(new_kernel, kernel - rate * flat.T @ grad_logits, atol=1e-6)
    np.testing.assert_allclose(new_bias, bias - rate * grad_logits.sum(axis=0), atol=1e-6)


# -- Two replicas ----------------------------------------------------------------------


def _exact_kdcl(strategy):
  with strategy.scope():
    model = EnsembleTargetDistillation(
        [dense_classifier(seed, classes=EXACT_CLASSES, shape=IMAGE_SHAPE) for seed in (1, 2)])
    model.compile(optimizers.PyTorchSGD(0.1, momentum=0.9, weight_decay=1e-3),
                  distillation=DistillationConfig(temperature=2.0))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
  return model


def test_two_replicas_match_one_replica():
  """tests/test_distribute.py's check: a loss not scaled for the replicas would differ."""
  strategy = distribute.create_strategy("mirrored")  # conftest: two logical CPUs.
  assert strategy.num_replicas_in_sync == 2
  single, mirrored = _exact_kdcl(tf.distribute.get_strategy()), _exact_kdcl(strategy)
  start = [weight.numpy() for weight in single.weights]
  single_logs = single.fit(exact_batches(), epochs=1, verbose=0, shuffle=False).history
  mirrored_logs = mirrored.fit(exact_batches(), epochs=1, verbose=0, shuffle=False).history
  for a, b, before in zip(single.weights, mirrored.weights, start):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)
    assert not np.allclose(a.numpy(), before), a.path
  for key in ("loss", "c0_loss", "c1_loss", "ensemble_top1"):
    np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4, err_msg=key)


def test_the_step_under_xla_matches_the_plain_graph():
  plain, xla = (_exact_kdcl(tf.distribute.get_strategy()) for _ in range(2))
  xla.jit_compile = True
  plain.fit(exact_batches(), epochs=1, verbose=0, shuffle=False)
  xla.fit(exact_batches(), epochs=1, verbose=0, shuffle=False)
  assert xla.jit_compile is True and plain.jit_compile is False
  for a, b in zip(plain.weights, xla.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_losses_and_variables(precision):
  config = command_line.resolve_config("digits", "kdcl",
                                       overrides=[f"mixed_precision={precision}"])
  try:
    model = _built_kdcl(config)
  finally:
    keras.mixed_precision.set_global_policy("float32")  # Never leak into other tests.
  assert model.classifiers[0].layers[2].compute_dtype == precision.split("_")[1]
  assert all(v.dtype == "float32" for v in model.trainable_variables)
  assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
      precision == "mixed_float16")
  images, labels = random_batch(32, num_classes=10)
  before = [v.numpy() for v in model.trainable_variables]
  logs = model.train_on_batch(images, labels, return_dict=True)
  assert all(np.isfinite(logs[key]) for key in ("loss", "c0_loss", "c1_loss")), logs
  assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables))


# -- Resume, export, run.py, the tuner --------------------------------------------------


def _built_kdcl(config):
  info = DatasetInfo("digits", 10, (8, 8, 1), 64, 0, 64, "synthetic")
  keras.utils.set_random_seed(config.seed)
  return builders.build_model(config, info, [0.5], [0.08], steps=2)


class _StopAfter(keras.callbacks.Callback):
  def __init__(self, epochs):
    super().__init__()
    self.epochs = epochs

  def on_epoch_end(self, epoch, logs=None):
    if epoch + 1 == self.epochs:
      raise KeyboardInterrupt


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
  """Stopped after epoch 1 of 3 and resumed from SafeBackupAndRestore's checkpoint:
  the same weights and optimizer state (momentum, step count) as three epochs in one go."""
  config = command_line.resolve_config("digits", "kdcl", overrides=["architectures=small_cnn,"
                                                                    "small_cnn"])
  images, labels = random_batch(64, num_classes=10, seed=3)
  data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
  straight = _built_kdcl(config)
  straight.fit(data, epochs=3, verbose=0, shuffle=False)
  backup_dir = str(tmp_path / "backup")
  interrupted = _built_kdcl(config)
  with pytest.raises(KeyboardInterrupt):
    interrupted.fit(data, epochs=3, verbose=0, shuffle=False,
                    callbacks=[safety.SafeBackupAndRestore(backup_dir), _StopAfter(1)])
  resumed = _built_kdcl(config)
  backup = safety.SafeBackupAndRestore(backup_dir)
  resumed.fit(data, epochs=3, verbose=0, shuffle=False, callbacks=[backup])
  assert backup.restored["epoch"] == 1
  assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 6
  for a, b in zip(straight.weights, resumed.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_exports_its_peers_and_their_ensemble_and_round_trips(tmp_path):
  config = command_line.resolve_config("digits", "kdcl", overrides=["architectures=small_cnn,"
                                                                    "small_cnn"])
  model = _built_kdcl(config)
  model.train_on_batch(*random_batch(32, num_classes=10, seed=4))
  paths = export.export_saved_models(model, str(tmp_path / "export"))
  assert sorted(paths) == ["classifier_0", "classifier_1", export.ENSEMBLE_NAME]
  images = (random_batch(16, num_classes=10, seed=5)[0] * 255).astype(np.uint8)
  pixels = images.astype(np.float32) / 255.0
  peers = [tf.nn.softmax(c(pixels, training=False)).numpy() for c in model.classifiers]
  expected = {"classifier_0": peers[0], "classifier_1": peers[1],
              export.ENSEMBLE_NAME: (peers[0] + peers[1]) / 2}
  for name, probabilities in expected.items():
    serve = tf.saved_model.load(paths[name]).signatures["serving_default"]
    np.testing.assert_allclose(serve(images=tf.constant(images))["probabilities"].numpy(),
                               probabilities, atol=1e-5, err_msg=name)
  model.save(str(tmp_path / "kdcl.keras"))
  loaded = keras.saving.load_model(str(tmp_path / "kdcl.keras"))
  assert type(loaded) is EnsembleTargetDistillation
  for a, b in zip(model(pixels), loaded(pixels)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_run_py_trains_evaluates_and_exports_kdcl(tmp_path, run_py_here):
  """results.json carries each peer's and the ensemble's top-1, which --mode=eval of
  the stored run repeats (through run.py's main in this process); the SavedModels
  are DML's."""
  model_dir = str(tmp_path / "run")
  command = ["--experiment=digits", "--method=kdcl", f"--model_dir={model_dir}",
             "--verbose=0", "--override=epochs=1", "--override=train_examples=256",
             "--override=kdcl_target=mean_logit"]
  completed = run_py(*command)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = read_json(os.path.join(model_dir, "results.json"))
  assert results["method"] == "kdcl" and results["config"]["kdcl_target"] == "mean_logit"
  assert len(results["classifiers"]) == 2
  for classifier in results["classifiers"]:
    assert 0.0 <= classifier["top1"] <= classifier["top5"] <= 1.0
  assert 0.0 <= results["ensemble_top1"] <= 1.0
  assert results["optimizer_iterations"] == {"classifiers": 256 // 64}
  for name in ("classifier_0", "classifier_1", "ensemble"):
    assert os.path.exists(os.path.join(model_dir, "export", name, "saved_model.pb")), name
  assert run_dir.run_config(model_dir).distillation.kdcl_target == "mean_logit"
  evaluated = run_py_here("--mode=eval", f"--model_dir={model_dir}", "--verbose=0")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  again = read_json(os.path.join(model_dir, "results.json"))
  assert again["ensemble_top1"] == pytest.approx(results["ensemble_top1"], abs=1e-6)
  for first, second in zip(results["classifiers"], again["classifiers"]):
    assert second["top1"] == pytest.approx(first["top1"], abs=1e-6)


def test_a_kdcl_search_samples_its_settings_and_leaves_phase_a_out(tmp_path):
  config = command_line.resolve_config(
      "digits", "kdcl", overrides=["epochs=1", "train_examples=128", "validation_fraction=0.25",
                                   "search_space=temperature=choice:1|4,"
                                   "wrc_alpha=0.02:0.2,input_noise=0.05:0.2"])
  assert [d.field for d in tuning.search_dimensions(config)] == ["temperature"]
  summary = tuning.tune(config, str(tmp_path), tuner="random", max_trials=1, verbose=0)
  assert summary["num_completed"] == 1
  best = command_line.resolve_config(
      "digits", config_file=os.path.join(str(tmp_path), tuning.BEST_CONFIG_FILE))
  assert best.method == "kdcl"
  assert best.distillation.temperature == summary["best_values"]["temperature"] in (1.0, 4.0)


def test_kdcl_reads_its_target_and_the_distillation_weights_alone():
  """The settings method=kdcl reads beside the recipe: T, κ and its target; none of
  Phase A's or of the divergent batch's, and no other method reads kdcl_target."""
  unused = config_lib.fields_unused_by("kdcl")
  assert {"temperature", "kd_weight", "kdcl_target", "learning_rate"}.isdisjoint(unused)
  assert {"adv_weight", "input_noise", "wrc_alpha", "ras_label_restrict"} <= unused
  assert config_lib.methods_reading("kdcl_target") == ("kdcl",)


def test_the_python_api_builds_kdcl_with_the_configs_settings():
  from acn_tf import api
  config = api.config(method="kdcl", temperature=3.0, kd_weight=0.5, kdcl_target="mean_logit")
  model = api.build_model([dense_classifier(0), dense_classifier(1)], config,
                          steps_per_epoch=5)
  assert type(model) is EnsembleTargetDistillation
  assert (model.distillation.temperature, model.distillation.kd_weight,
          model.distillation.kdcl_target) == (3.0, 0.5, "mean_logit")
  images = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype(np.float32)
  labels = np.array([0, 1, 2, 0])
  logits = model(images, training=True)
  expected = kdcl.kdcl_losses(logits, labels, 3.0, 0.5, "mean_logit")
  metrics = model.train_on_batch(images, labels, return_dict=True)
  assert metrics["loss"] == pytest.approx(float(sum(np.mean(loss) for loss in expected)),
                                          rel=1e-5)


def test_a_config_written_before_kdcl_compares_equal_to_todays():
  """config.json files of earlier runs have no kdcl_target: it counts as the default,
  so resuming, evaluating or comparing them reports no difference."""
  config = command_line.resolve_config("digits", "dml")
  saved = {key: value for key, value in config.to_dict().items() if key != "kdcl_target"}
  saved = {key: list(value) if isinstance(value, tuple) else value
           for key, value in saved.items()}
  assert saved_runs.config_differences(saved, config) == []
  assert saved_runs.config_from_dict(saved) == config
  assert saved_runs.differing_fields(saved, config.replace(kdcl_target="mean_logit")) == [
      "kdcl_target"]


@pytest.mark.parametrize("experiment", ["fashion_mnist_small", "cifar100"])
def test_the_study_variant_is_kdcl_with_the_dml_rows_recipe(experiment):
  """experiments/study.py's `kdcl`: the experiment's DML config but for the method
  (MinLogit), so that the two rows differ in the training objective alone."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import study  # pylint: disable=import-outside-toplevel
  assert study.VARIANTS["kdcl"] == ("--method=kdcl",)
  variant = command_line.resolve_config(experiment, "kdcl")
  dml = command_line.resolve_config(experiment, "dml")
  assert variant.distillation.kdcl_target == "min_logit"
  assert variant == dml.replace(method="kdcl")
