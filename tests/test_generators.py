"""Phase A's networks: the generator with its Weakly Residual Connection
(acn_tf/networks/generators.py) and the discriminator (acn_tf/networks/discriminators.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.networks import discriminators, generators
from tiny_models import IMAGE_SHAPE, random_batch


def _images(size=32, seed=0):
  return random_batch(size, seed=seed)[0]


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.5])
def test_wrc_stays_within_alpha_of_the_image_and_in_unit_range(alpha):
  images = _images()
  generated = np.random.default_rng(1).normal(scale=5.0, size=images.shape)
  result = generators.weakly_residual_connection(images, generated, alpha).numpy()
  assert np.max(np.abs(result - images)) <= alpha + 1e-6
  assert result.min() >= 0.0 and result.max() <= 1.0
  expected = np.clip(images + alpha * np.tanh(generated), 0.0, 1.0)
  np.testing.assert_allclose(result, expected, atol=1e-6)


def test_wrc_alpha_zero_is_a_plain_generator():
  images = _images()
  generated = np.random.default_rng(2).normal(size=images.shape).astype(np.float32)
  result = generators.weakly_residual_connection(images, generated, 0.0).numpy()
  np.testing.assert_allclose(result, (np.tanh(generated) + 1) / 2, atol=1e-6)


def test_generator_starts_at_the_identity_under_wrc():
  generator = generators.build_generator(IMAGE_SHAPE, noise_channels=2, filters=8)
  images = _images(4)
  noise = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype(np.float32)
  start = generators.weakly_residual_connection(images, generator([images, noise]), 0.1)
  np.testing.assert_allclose(start.numpy(), images, atol=1e-7)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (7, 9, 2)])
def test_generator_and_discriminator_accept_any_image_shape(shape):
  generator = generators.build_generator(shape, noise_channels=3, filters=4,
                                         residual_blocks=1)
  discriminator = discriminators.build_discriminator(shape, filters=4)
  images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
  noise = np.zeros((2, shape[0], shape[1], 3), np.float32)
  assert generator([images, noise]).shape == (2, *shape)
  assert discriminator(images).shape == (2, 1)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_discriminator_logit_is_float32_under_mixed_precision(spectral_norm):
  """Its losses (BCE, the generator's GAN term) read the logit in float32; under
  mixed_bfloat16 a logit rounded to bfloat16 keeps 3 significant digits."""
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    discriminator = discriminators.build_discriminator(IMAGE_SHAPE, filters=4,
                                                       spectral_norm=spectral_norm)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  logits = discriminator(_images(3))
  assert logits.dtype == tf.float32
  # Not a bfloat16 value widened: some logit has bits beyond bfloat16's 8.
  as_bfloat16 = tf.cast(tf.cast(logits, tf.bfloat16), tf.float32)
  assert not np.array_equal(logits.numpy(), as_bfloat16.numpy())
