"""Restricted Adversarial Search (acn_tf/method/search.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.method.losses import label_mask
from acn_tf.method.search import (compiled_search, divergence_gradient, group_divergence,
                                  restricted_adversarial_search)
from conftest import spec_phase_a
from tiny_models import random_batch, small_cnns


@pytest.fixture(scope="module")
def classifiers():
  return small_cnns(seeds=(10, 11))


def _images(size=32, seed=0):
  return random_batch(size, seed=seed)[0]


@pytest.mark.parametrize("steps", [1, 3])
def test_search_stays_in_the_epsilon_ball_and_unit_range(classifiers, steps):
  images = _images()
  start = np.clip(images + np.random.default_rng(3).normal(scale=0.2, size=images.shape),
                  0, 1).astype(np.float32)
  settings = spec_phase_a(ras_steps=steps, ras_step_size=0.02, ras_epsilon=0.03)
  divergent = restricted_adversarial_search(classifiers, images, start, settings).images
  divergent = divergent.numpy()
  assert np.max(np.abs(divergent - images)) <= 0.03 + 1e-6
  assert divergent.min() >= 0.0 and divergent.max() <= 1.0


def test_search_raises_divergence_from_its_start(classifiers):
  images = _images(64)
  start = np.clip(images + 0.01 * np.random.default_rng(4).normal(size=images.shape),
                  0, 1).astype(np.float32)
  settings = spec_phase_a(ras_steps=3, ras_step_size=0.02, ras_epsilon=0.1)
  divergent, _ = restricted_adversarial_search(classifiers, images, start, settings)
  before = tf.reduce_mean(group_divergence(classifiers, start, settings)[0]).numpy()
  after = tf.reduce_mean(group_divergence(classifiers, divergent, settings)[0]).numpy()
  assert after > before * 1.05, (before, after)


def test_search_with_zero_steps_returns_its_start(classifiers):
  images = _images()
  start = np.clip(images + 0.3, 0, 1).astype(np.float32)
  divergent, _ = restricted_adversarial_search(classifiers, images, start,
                                               spec_phase_a(ras_steps=0))
  np.testing.assert_array_equal(divergent.numpy(), start)


def test_label_restriction_mask_matches_numpy_ensemble_argmax(classifiers):
  images = _images(64)
  settings = spec_phase_a(ras_steps=1, ras_step_size=0.02, ras_epsilon=0.05)
  logits = [c(images, training=False).numpy() for c in classifiers]
  # Labels agreeing with the ensemble on half the batch, so the mask is mixed.
  ensemble = np.mean([tf.nn.softmax(z).numpy() for z in logits], axis=0)
  labels = ensemble.argmax(-1)
  labels[::2] = (labels[::2] + 1) % 5
  divergent, _ = restricted_adversarial_search(classifiers, images, images, settings)
  logits_after = [c(divergent, training=False) for c in classifiers]
  mask = label_mask(logits_after, labels)
  after = np.mean([tf.nn.softmax(c(divergent, training=False)).numpy()
                   for c in classifiers], axis=0)
  expected = (after.argmax(-1) == labels).astype(np.float32)
  np.testing.assert_array_equal(mask.numpy(), expected)
  assert 0 < expected.sum() < 64
  unrestricted = label_mask(logits_after, labels, label_restrict=False)
  np.testing.assert_array_equal(unrestricted.numpy(), np.ones(64))


def test_search_leaves_batch_norm_statistics_unchanged(classifiers):
  images = _images()
  before = [[v.numpy().copy() for v in c.non_trainable_variables] for c in classifiers]
  search = compiled_search(classifiers, spec_phase_a(ras_steps=2, ras_step_size=0.05,
                                                       ras_epsilon=0.1))
  search(images, np.zeros(32, np.int64), np.clip(images + 0.05, 0, 1))
  for classifier, saved in zip(classifiers, before):
    assert saved, "the classifiers should have batch-norm statistics"
    for variable, value in zip(classifier.non_trainable_variables, saved):
      np.testing.assert_array_equal(variable.numpy(), value)


def test_search_under_xla_matches_plain_graph(classifiers):
  images = _images()
  start = np.clip(images + 0.02, 0, 1).astype(np.float32)
  labels = np.arange(32) % 5
  settings = spec_phase_a(ras_steps=2, ras_step_size=0.01, ras_epsilon=0.04)
  plain = compiled_search(classifiers, settings, jit_compile=False)(images, labels, start)
  xla = compiled_search(classifiers, settings, jit_compile=True)(images, labels, start)
  # Sign steps are discrete: identical up to the odd pixel whose gradient is ~0.
  difference = np.abs(plain[0].numpy() - xla[0].numpy())
  assert np.mean(difference > 1e-5) < 0.01
  np.testing.assert_array_equal(plain[1].numpy(), xla[1].numpy())


def test_divergence_gradient_of_an_example_does_not_depend_on_the_batch(classifiers):
  # Inference mode and a sum, not a mean: each example's step direction is its own.
  images = _images(8)
  batch = divergence_gradient(classifiers, tf.constant(images), spec_phase_a()).numpy()
  for b in (0, 5):
    alone = divergence_gradient(classifiers, tf.constant(images[b:b + 1]),
                                spec_phase_a()).numpy()
    np.testing.assert_allclose(batch[b:b + 1], alone, rtol=1e-4, atol=1e-8)
  assert np.abs(batch).max() > 0


@pytest.mark.parametrize("steps", [0, 1, 2])
def test_search_given_its_start_gradient_and_logits_equals_computing_them(classifiers,
                                                                          steps):
  images = _images()
  start = np.clip(images + 0.02, 0, 1).astype(np.float32)
  labels = np.arange(32) % 5
  settings = spec_phase_a(ras_steps=steps, ras_step_size=0.01, ras_epsilon=0.04)
  computed = restricted_adversarial_search(classifiers, images, start, settings)
  gradient = divergence_gradient(classifiers, tf.constant(start), settings)
  logits = [c(start, training=False) for c in classifiers]
  given = restricted_adversarial_search(classifiers, images, start, settings,
                                        start_gradient=gradient, start_logits=logits)
  np.testing.assert_array_equal(given.images.numpy(), computed.images.numpy())
  if steps == 0:  # x̃ = x̃0: the given logits are x̃'s.
    np.testing.assert_array_equal(label_mask(given.logits, labels).numpy(),
                                  label_mask(logits, labels).numpy())
  else:
    assert given.logits is None and computed.logits is None


def test_the_search_leaves_the_mask_to_the_update_unless_its_logits_are_free(
    classifiers):
  images = _images()
  labels = np.arange(32) % 5
  settings = spec_phase_a(ras_steps=1, ras_step_size=0.01, ras_epsilon=0.04)
  divergent, logits = restricted_adversarial_search(classifiers, images, images, settings)
  assert logits is None
  # One step from x: the sign of D's gradient, inside the ball.
  gradient = divergence_gradient(classifiers, tf.constant(images), settings).numpy()
  expected = np.clip(np.clip(images + 0.01 * np.sign(gradient), images - 0.04,
                             images + 0.04), 0, 1)
  np.testing.assert_allclose(divergent.numpy(), expected, atol=1e-7)
  # K = 0 with the start's logits: the inference-mode logits cost nothing, so they are kept.
  zero_steps = spec_phase_a(ras_steps=0)
  start_logits = [c(images, training=False) for c in classifiers]
  _, logits = restricted_adversarial_search(classifiers, images, images, zero_steps,
                                            start_logits=start_logits)
  ensemble = np.mean([tf.nn.softmax(z).numpy() for z in start_logits], axis=0)
  np.testing.assert_array_equal(label_mask(logits, labels).numpy(),
                                (ensemble.argmax(-1) == labels))


def _dense_pair(scale):
  """Two Flatten + Dense classifiers with weights of size `scale` (numpy seeds 0
  and 1), in whatever precision policy is set: logits that small make every
  pixel's gradient of D tiny."""
  models = []
  for seed in (0, 1):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(5, dtype=None)])
    kernel = scale * np.random.default_rng(seed).normal(size=(64, 5))
    model.layers[-1].set_weights([kernel, np.zeros(5)])
    models.append(model)
  return models


def test_float16_search_gradient_keeps_the_signs_float32_finds():
  """Under mixed_float16 the gradient of a batch's ΣD at near-agreement is far
  below float16's smallest number: unscaled, every pixel's sign is 0 and the
  search would not move; scaled (search.scaled_for_float16), the signs are
  float32's."""
  images = tf.constant(_images(16))
  reference = np.sign(divergence_gradient(_dense_pair(1e-4), images, spec_phase_a()).numpy())
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    half = _dense_pair(1e-4)
    with tf.GradientTape() as tape:  # The control: the sum differentiated as it is.
      tape.watch(images)
      total = tf.reduce_sum(group_divergence(half, images, spec_phase_a())[0])
    unscaled = np.sign(tape.gradient(total, images).numpy())
    scaled = np.sign(divergence_gradient(half, images, spec_phase_a()).numpy())
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert np.count_nonzero(reference) == reference.size
  assert np.count_nonzero(unscaled) < 0.05 * unscaled.size
  assert np.mean(scaled == reference) > 0.95
