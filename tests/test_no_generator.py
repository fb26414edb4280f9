"""The "no generator" ablation (use_generator=False): x̃0 = x, the search alone
makes the divergent batch, and nothing but the classifiers trains."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.config.schema import ExperimentConfig
from acn_tf.data.pipeline import DatasetInfo
from acn_tf.method import health
from acn_tf.run import builders
from conftest import read_json, run_py
from tiny_models import IMAGE_SHAPE, random_batch, small_cnns

NUM_CLASSES = 5  # tiny_models' default.
STEP, EPSILON, TEMPERATURE = 0.05, 0.1, 2.0


def _model():
  config = ExperimentConfig.from_fields(
      name="test", dataset="digits", method="acn", architectures=("small_cnn", "small_cnn"),
      use_generator=False, ras_epsilon=EPSILON, ras_step_size=STEP, ras_steps=1,
      divergence="js", divergence_temperature=TEMPERATURE, fold_batch_norm=False)
  info = DatasetInfo("test", NUM_CLASSES, IMAGE_SHAPE, 64, 0, 64, "test")
  model = builders.build_adversarial_model(config, info, small_cnns(seeds=(0, 1)))
  model.compile(keras.optimizers.SGD(0.05), adversarial=config.adversarial,
                **builders.phase_a_optimizers(config, with_discriminator=False,
                                              with_generator=False))
  model(tf.zeros((1, *IMAGE_SHAPE)))
  model.build_optimizers()
  return model


def _js_by_hand(classifiers, images):
  """Sum over the batch of JS between the pair's tempered softmaxes, written out."""
  p, q = (tf.nn.softmax(c(images, training=False) / TEMPERATURE) for c in classifiers)
  m = (p + q) / 2
  kl = lambda a, b: tf.reduce_sum(a * (tf.math.log(a) - tf.math.log(b)), -1)
  return tf.reduce_sum(0.5 * kl(p, m) + 0.5 * kl(q, m))


def test_the_model_has_no_generator_nor_discriminator():
  model = _model()
  assert model.generator is None and model.discriminator is None
  assert model.generator_optimizer is None and model.discriminator_optimizer is None
  images, _ = random_batch()
  np.testing.assert_array_equal(model.generate(tf.constant(images)).numpy(), images)


def test_the_search_starts_at_the_real_images():
  """x̃ = Proj(x + step sign(grad_x JS(x))): one signed step from x, by hand."""
  model = _model()
  images, labels = (tf.constant(a) for a in random_batch())
  with tf.GradientTape() as tape:
    tape.watch(images)
    total = _js_by_hand(model.classifiers, images)
  expected = np.clip(images.numpy() + STEP * np.sign(tape.gradient(total, images).numpy()),
                     0.0, 1.0)
  divergent = model.adversarial_phase(images, labels).images.numpy()
  assert np.abs(divergent - images.numpy()).max() <= EPSILON + 1e-6
  # Only pixels whose gradient is round-off small may take the other sign.
  assert np.mean(np.isclose(divergent, expected, atol=1e-6)) > 0.999
  assert np.abs(divergent - images.numpy()).max() > STEP / 2  # It moved.


def test_a_step_is_phase_b_on_the_searched_batch():
  """train_step = the classifiers' update on x and on the x̃ Phase A returns: the
  same weights as a second model updated by hand with that x̃; Div(x) is
  reported as Div(x̃0)."""
  stepped, by_hand = _model(), _model()
  images, labels = (tf.constant(a) for a in random_batch())
  divergent = by_hand.adversarial_phase(images, labels)
  by_hand.classifier_update(images, labels, divergent)
  logs = stepped.train_on_batch(images, labels, return_dict=True)
  for a, b in zip(stepped.classifiers, by_hand.classifiers):
    for wa, wb in zip(a.weights, b.weights):
      np.testing.assert_allclose(wa.numpy(), wb.numpy(), rtol=1e-5, atol=1e-6)
  p, q = (tf.nn.softmax(c(images, training=False)) for c in _model().classifiers)
  m = (p + q) / 2
  kl = lambda a, b: tf.reduce_sum(a * (tf.math.log(a) - tf.math.log(b)), -1)
  reported = tf.reduce_mean(0.5 * kl(p, m) + 0.5 * kl(q, m)).numpy()
  np.testing.assert_allclose(logs["divergence_x0"], reported, rtol=1e-4)
  assert stepped.optimizer.iterations.numpy() == 1


def test_health_says_x0_is_x():
  model = _model()
  figures = health.HealthMeter(model, [random_batch(16)], seed=0).measure()
  assert figures["residual_linf"] == 0.0
  np.testing.assert_allclose(figures["divergence_ratio_generated"], 1.0, rtol=1e-6)
  assert figures["discriminator_real_accuracy"] is None


@pytest.mark.slow
def test_a_run_without_generator_trains_evaluates_and_exports(tmp_path, run_py_here):
  """Two steps an epoch: the warm-up epoch, then one whose steps run Phase A's search.
  The evaluation runs in this process (run.py's own main): the restore without g is
  the code under test, not a process's start-up."""
  model_dir = str(tmp_path / "run")
  flags = ("--experiment=digits", "--method=acn", f"--model_dir={model_dir}",
           "--override=use_generator=false", "--override=epochs=2",
           "--override=adv_warmup_epochs=1", "--override=train_examples=128", "--verbose=0")
  completed = run_py(*flags)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = read_json(os.path.join(model_dir, "results.json"))
  assert results["optimizer_iterations"] == {"classifiers": 2 * 2}
  assert results["phase_a_health"]["residual_linf"] == 0.0
  assert os.path.isdir(os.path.join(model_dir, "export"))
  evaluated = run_py_here("--mode=eval", f"--model_dir={model_dir}")  # Restores without g.
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert f"{results['ensemble_top1']:.4f}" in evaluated.stdout + evaluated.stderr
