"""Phase A health figures against a numpy computation of their definitions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.method import health
from acn_tf.run import builders
from acn_tf.config.schema import ExperimentConfig
from acn_tf.data.pipeline import DatasetInfo
from tiny_models import IMAGE_SHAPE, random_batch, small_cnns

NUM_CLASSES = 5  # tiny_models' default.


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _js(p, q):
  m = (p + q) / 2
  kl = lambda a, b: np.sum(a * np.log(np.clip(a, 1e-7, 1) / np.clip(b, 1e-7, 1)), -1)
  return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _moved_acn(**fields):
  """A small ACN whose generator has taken five steps, so that x̃0 differs from x."""
  config = ExperimentConfig.from_fields(name="test", dataset="digits", method="acn",
                            architectures=("small_cnn", "small_cnn"), generator_filters=8,
                            discriminator_filters=8, ras_epsilon=0.1, ras_step_size=0.05,
                            **fields)
  info = DatasetInfo("test", NUM_CLASSES, IMAGE_SHAPE, 64, 0, 64, "test")
  acn = builders.build_adversarial_model(config, info, small_cnns(seeds=(0, 1)))
  acn.compile(keras.optimizers.SGD(0.05), adversarial=config.adversarial,
                **builders.phase_a_optimizers(config, with_discriminator=True))
  acn(tf.zeros((1, *IMAGE_SHAPE)))
  acn.build_optimizers()
  images, labels = (tf.constant(array) for array in random_batch(48))
  for _ in range(5):
    acn.generator_update(images, labels)
  return acn


@pytest.fixture(scope="module")
def model():
  return _moved_acn()


def test_health_figures_match_their_definitions(model):
  rng = np.random.default_rng(1)
  batches = [(rng.random((n, *IMAGE_SHAPE), dtype=np.float32),
              rng.integers(0, NUM_CLASSES, n)) for n in (32, 16)]
  meter = health.HealthMeter(model, batches, seed=3)
  figures = meter.measure()
  real, generated, kept, d_real, d_fake, residual = [], [], [], [], [], []
  for (images, labels), (_, _, noise) in zip(batches, meter.batches):
    x0 = model.generate(tf.constant(images), noise=noise).numpy()
    z_real = [c(images, training=False).numpy() for c in model.classifiers]
    z_gen = [c(x0, training=False).numpy() for c in model.classifiers]
    real.append(_js(*map(_softmax, z_real)))
    generated.append(_js(*map(_softmax, z_gen)))
    kept.append(np.argmax(sum(map(_softmax, z_gen)), -1) == labels)
    d_real.append(model.discriminator(images, training=False).numpy()[:, 0] > 0)
    d_fake.append(model.discriminator(x0, training=False).numpy()[:, 0] < 0)
    residual.append(np.abs(x0 - images).reshape(len(labels), -1).max(-1))
  mean = lambda parts: float(np.mean(np.concatenate(parts)))
  assert figures["examples"] == 48
  assert figures["divergence_real"] == pytest.approx(mean(real), rel=1e-4)
  assert figures["divergence_generated"] == pytest.approx(mean(generated), rel=1e-4)
  assert figures["divergence_ratio_generated"] == pytest.approx(mean(generated) / mean(real),
                                                                rel=1e-4)
  assert figures["kept_generated"] == pytest.approx(mean(kept))
  assert figures["discriminator_real_accuracy"] == pytest.approx(mean(d_real))
  assert figures["discriminator_fake_accuracy"] == pytest.approx(mean(d_fake))
  assert figures["residual_linf"] == pytest.approx(mean(residual), rel=1e-5)
  assert 0 < figures["residual_linf"] <= 0.1 + 1e-6  # wrc_alpha bounds it.
  # The search ascends the divergence from x̃0 within its budget.
  assert figures["divergence_searched"] > figures["divergence_generated"]
  assert 0.0 <= figures["kept_searched"] <= 1.0
  # Fixed noise: measuring again gives the same figures.
  assert meter.measure() == figures


def test_without_the_label_restriction_every_example_counts_as_kept(model):
  """As training keeps them (the "no RAS" ablation); with it, random classifiers keep
  about one random label in five."""
  rng = np.random.default_rng(2)
  batches = [(rng.random((32, *IMAGE_SHAPE), dtype=np.float32),
              rng.integers(0, NUM_CLASSES, 32))]
  restricted = health.HealthMeter(model, batches).measure()
  unrestricted = health.HealthMeter(_moved_acn(ras_label_restrict=False), batches).measure()
  assert restricted["kept_generated"] < 0.6 and restricted["kept_searched"] < 0.6
  assert unrestricted["kept_generated"] == 1.0 and unrestricted["kept_searched"] == 1.0


def test_summary_of_sums_gives_means_ratios_and_none_without_a_discriminator():
  sums = {"examples": 4.0, "divergence_real": 0.2, "divergence_generated": 0.6,
          "divergence_searched": 1.0, "kept_generated": 3.0, "kept_searched": 2.0,
          "residual_linf": 0.4}
  figures = health.summarize(sums)
  assert figures["divergence_ratio_generated"] == pytest.approx(3.0)
  assert figures["divergence_ratio_searched"] == pytest.approx(5.0)
  assert figures["kept_searched"] == pytest.approx(0.5)
  assert figures["discriminator_real_accuracy"] is None
  zero = health.summarize({**sums, "divergence_real": 0.0})
  assert zero["divergence_ratio_generated"] is None
