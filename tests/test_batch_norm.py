"""FusedBatchNormalization against keras.layers.BatchNormalization, its reference.

Both layers get the same weights and inputs; outputs, moving statistics and
gradients must agree to float round-off in training mode, with and without scale
and centre, under mixed bfloat16 and float16, and to the bit where the fused op
does not apply (inference mode, other ranks, a tensor flag, float64: the layer
then is Keras' own).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.networks import backbones
from acn_tf.networks.batch_norm import FusedBatchNormalization


def _pair(shape, **kwargs):
  """A Keras and a fused layer, built, with the same non-trivial weights."""
  reference = keras.layers.BatchNormalization(**kwargs)
  fused = FusedBatchNormalization(**kwargs)
  reference.build(shape)
  fused.build(shape)
  rng = np.random.default_rng(1)
  weights = [rng.normal(1.0, 0.5, w.shape).astype(np.float32) if "variance" not in w.path
             else rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
             for w in reference.weights]
  reference.set_weights(weights)
  fused.set_weights(weights)
  return reference, fused


def _op_types(layer, inputs, training):
  graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
      inputs).graph
  return {op.type for op in graph.get_operations()}


def _images(shape=(8, 5, 6, 4), seed=0):
  return tf.constant(np.random.default_rng(seed).normal(2.0, 3.0, shape).astype(np.float32))


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_training_mode_matches_keras(center, scale):
  """Three training steps: outputs, the input and weight gradients, and the moving
  statistics (Keras averages the biased batch variance) all match."""
  reference, fused = _pair((8, 5, 6, 4), momentum=0.9, epsilon=1e-5,
                           center=center, scale=scale)
  for step in range(3):
    images = _images(seed=step)
    results = []
    for layer in (reference, fused):
      with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = layer(images, training=True)
        loss = tf.reduce_sum(tf.sin(outputs))  # Weighs each output differently.
      gradients = tape.gradient(loss, [images, *layer.trainable_weights])
      results.append((outputs, gradients))
    np.testing.assert_allclose(results[1][0], results[0][0], atol=2e-5)
    for expected, computed in zip(results[0][1], results[1][1]):
      np.testing.assert_allclose(computed, expected, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, rtol=1e-6)
  np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-6)
  assert "FusedBatchNormV3" in _op_types(fused, images, True)
  assert "FusedBatchNormV3" not in _op_types(reference, images, True)


def test_moving_statistics_by_hand():
  """One step from mean 0, variance 1: m' = 0.9 m + 0.1 mean, v' = 0.9 v + 0.1 var
  with the biased variance over batch, height and width, computed in numpy."""
  layer = FusedBatchNormalization(momentum=0.9)
  images = _images((4, 3, 3, 2))
  layer(images, training=True)
  flat = images.numpy().reshape(-1, 2)
  np.testing.assert_allclose(layer.moving_mean, 0.1 * flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance, 0.9 + 0.1 * flat.var(0), rtol=1e-5)


def test_inference_mode_uses_moving_statistics():
  """Keras' own multiply and add (whose input gradient has a deterministic GPU
  kernel, where the fused op's has none), checked by hand."""
  reference, fused = _pair((8, 5, 6, 4), epsilon=1e-3)
  images = _images()
  np.testing.assert_array_equal(fused(images, training=False),
                                reference(images, training=False))
  gamma, beta, mean, variance = [w.numpy() for w in fused.weights]
  by_hand = gamma * (images.numpy() - mean) / np.sqrt(variance + 1e-3) + beta
  np.testing.assert_allclose(fused(images), by_hand, atol=2e-5)
  assert "FusedBatchNormV3" not in _op_types(fused, images, False)


def test_frozen_layer_does_not_update_statistics():
  """trainable=False: Keras' rule, moving statistics in training mode too."""
  reference, fused = _pair((8, 5, 6, 4))
  fused.trainable = reference.trainable = False
  before = [w.numpy() for w in fused.weights]
  images = _images()
  np.testing.assert_allclose(fused(images, training=True),
                             reference(images, training=True), atol=2e-5)
  for start, now in zip(before, fused.weights):
    np.testing.assert_array_equal(now, start)


def test_tensor_flag_and_float64_are_keras_own():
  """Where the fused op does not apply, the layer is Keras' to the bit."""
  reference, fused = _pair((8, 5, 6, 4))
  images = _images()
  flag = tf.constant(True)
  np.testing.assert_array_equal(fused(images, training=flag),
                                reference(images, training=flag))
  assert "FusedBatchNormV3" not in _op_types(fused, images, flag)
  keras.config.set_floatx("float64")
  try:
    reference, fused = _pair((8, 5, 6, 4), dtype="float64")
    doubles = tf.cast(images, tf.float64)
    np.testing.assert_array_equal(fused(doubles, training=True),
                                  reference(doubles, training=True))
  finally:
    keras.config.set_floatx("float32")


@pytest.mark.parametrize("policy, half", [("mixed_bfloat16", tf.bfloat16),
                                          ("mixed_float16", tf.float16)])
def test_mixed_precision_matches_keras(policy, half):
  keras.mixed_precision.set_dtype_policy(policy)
  try:
    reference, fused = _pair((8, 5, 6, 4))
    images = tf.cast(_images(), half)
    expected, computed = reference(images, training=True), fused(images, training=True)
    assert "FusedBatchNormV3" in _op_types(fused, images, True)
  finally:
    keras.mixed_precision.set_dtype_policy("float32")
  assert computed.dtype == expected.dtype == half
  np.testing.assert_allclose(tf.cast(computed, tf.float32), tf.cast(expected, tf.float32),
                             atol=0.05)
  assert fused.moving_mean.dtype == "float32"
  np.testing.assert_allclose(fused.moving_mean, reference.moving_mean, rtol=1e-5)
  np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-4)


def test_other_ranks_are_keras_own():
  """A [batch, features] input goes through Keras' computation, to the bit."""
  reference, fused = _pair((16, 6))
  features = tf.constant(np.random.default_rng(3).normal(size=(16, 6)).astype(np.float32))
  np.testing.assert_array_equal(fused(features, training=True),
                                reference(features, training=True))
  np.testing.assert_array_equal(fused.moving_variance, reference.moving_variance)
  assert "FusedBatchNormV3" not in _op_types(fused, features, True)


def test_backbone_weights_load_into_keras_batch_norm_and_back(monkeypatch):
  """Same weight names and order: a ResNet-8 with Keras' layer loads the fused
  ResNet's weights and predicts the same."""
  build = lambda: backbones.build_classifier("resnet8", (12, 12, 1), 5, [0.5], [0.06],
                                             name="c")
  fused_model = build()
  monkeypatch.setattr(backbones, "FusedBatchNormalization",
                      keras.layers.BatchNormalization)
  keras_model = build()
  assert any(isinstance(layer, FusedBatchNormalization) for layer in fused_model.layers)
  assert not any(isinstance(layer, FusedBatchNormalization) for layer in keras_model.layers)
  assert ([w.path for w in keras_model.weights] == [w.path for w in fused_model.weights])
  images = tf.random.stateless_uniform((4, 12, 12, 1), seed=(0, 1))
  fused_model(images, training=True)  # Moves the moving statistics off their start.
  keras_model.set_weights(fused_model.get_weights())
  np.testing.assert_allclose(keras_model(images), fused_model(images), atol=1e-5)


def test_serialises_as_itself():
  layer = FusedBatchNormalization(momentum=0.8, epsilon=1e-4)
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert type(restored) is FusedBatchNormalization
  assert (restored.momentum, restored.epsilon) == (0.8, 1e-4)
