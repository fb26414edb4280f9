"""Batch norm folded into convolutions: the classifier's inference function, in fewer ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from acn_tf.networks import backbones
from acn_tf.networks.folding import FoldedConvolution, fold_batch_norm, foldable_pairs
from tiny_models import IMAGE_SHAPE, random_batch, randomise_batch_norms

CLASSES = 7


@pytest.fixture
def float64_policy():
  """Builds in float64, so that folded and unfolded differ only by the round-off
  of the logits layer, which stays float32 (compared relative to their size)."""
  keras.config.set_dtype_policy("float64")
  yield
  keras.config.set_dtype_policy("float32")


def _logits_and_input_gradient(network, images):
  """Inference logits and the gradient to the image of a fixed weighting of them."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    logits = network(images, training=False)
    weighted = tf.reduce_sum(logits * tf.range(1.0, CLASSES + 1.0, dtype=logits.dtype))
  return logits.numpy(), tape.gradient(weighted, images).numpy()


def _assert_same_function(model, folded, images):
  expected_logits, expected_gradient = _logits_and_input_gradient(model, images)
  logits, gradient = _logits_and_input_gradient(folded, images)
  np.testing.assert_allclose(logits, expected_logits,
                             atol=1e-6 * np.abs(expected_logits).max())
  np.testing.assert_allclose(gradient, expected_gradient,
                             atol=1e-6 * np.abs(expected_gradient).max())


# Folded batch norms, counted by hand from acn_tf/networks/backbones.py: every batch norm of
# the post-activation ResNet-20 (stem, 2 per block, the 2 projection shortcuts'),
# both of the small CNN's; of WRN-16-2's 13 only those right after a convolution:
# bn2 of each of the 6 blocks and the first block's bn1 (right after the stem);
# the other bn1 and final_bn read an Add.
@pytest.mark.parametrize("architecture, folded_count, batch_norm_count",
                         [("resnet20", 21, 21), ("wrn16_2", 7, 13), ("small_cnn", 2, 2)])
def test_folded_classifier_computes_the_inference_function(
    float64_policy, architecture, folded_count, batch_norm_count):
  model = backbones.build_classifier(architecture, (16, 16, 3), CLASSES, [0.5] * 3,
                                     [0.25] * 3, seed=0)
  randomise_batch_norms(model)
  folded = fold_batch_norm(model)
  assert sum(isinstance(layer, layers.BatchNormalization)
             for layer in model.layers) == batch_norm_count
  assert len(foldable_pairs(model)) == folded_count
  assert sum(isinstance(layer, FoldedConvolution) for layer in folded.layers) == folded_count
  folded_away = {batch_norm.name for batch_norm in foldable_pairs(model).values()}
  assert not folded_away & {layer.name for layer in folded.layers}
  images = tf.constant(np.random.default_rng(1).random((4, 16, 16, 3)))
  _assert_same_function(model, folded, images)


def test_folded_classifier_reads_the_classifiers_current_variables(float64_policy):
  model = backbones.build_classifier("resnet8", (8, 8, 1), CLASSES, [0.5], [0.08], seed=0)
  folded = fold_batch_norm(model)
  assert {id(v) for v in folded.weights} <= {id(v) for v in model.weights}
  # Training moves the classifier after the fold: the fold follows.
  randomise_batch_norms(model, seed=3)
  for layer in model.layers:
    if isinstance(layer, layers.Conv2D):
      layer.kernel.assign(layer.kernel * 1.5)
  _assert_same_function(model, folded, tf.constant(random_batch(4)[0], tf.float64))


def test_only_exact_pairs_are_folded(float64_policy):
  """A convolution whose output something else reads, one with an activation,
  a batch norm after a dense layer, and a convolution with a bias."""
  keras.utils.set_random_seed(0)
  images = keras.Input(IMAGE_SHAPE)
  shared = layers.Conv2D(4, 3, padding="same", name="read_twice")(images)
  x = layers.BatchNormalization(name="bn_shared")(shared)
  x = layers.Add()([x, shared])
  x = layers.Conv2D(4, 3, padding="same", activation="relu", name="activated")(x)
  x = layers.BatchNormalization(name="bn_activated")(x)
  x = layers.Conv2D(6, 3, strides=2, padding="valid", use_bias=True, name="biased")(x)
  x = layers.BatchNormalization(name="bn_biased")(x)
  x = layers.GlobalAveragePooling2D()(x)
  x = layers.Dense(5, name="hidden")(x)
  x = layers.BatchNormalization(name="bn_dense")(x)
  model = keras.Model(images, layers.Dense(CLASSES, name="head")(x))
  randomise_batch_norms(model)
  model.get_layer("biased").bias.assign(np.linspace(-1.0, 1.0, 6))
  assert {conv: bn.name for conv, bn in foldable_pairs(model).items()} == {
      "biased": "bn_biased"}
  _assert_same_function(model, fold_batch_norm(model),
                        tf.constant(random_batch(4)[0], tf.float64))


def test_a_model_with_nothing_to_fold_is_returned_as_it_is():
  dense = keras.Sequential([keras.Input(IMAGE_SHAPE), layers.Flatten(), layers.Dense(3)])
  assert fold_batch_norm(dense) is dense


class _Subclassed(keras.Model):
  def __init__(self):
    super().__init__()
    self.conv = layers.Conv2D(4, 3)
    self.norm = layers.BatchNormalization()
    self.head = layers.Dense(3)

  def call(self, images, training=False):
    x = self.norm(self.conv(images), training=training)
    return self.head(tf.reduce_mean(x, axis=[1, 2]))


def test_a_subclassed_model_has_no_graph_to_fold():
  model = _Subclassed()
  model(tf.zeros((1, *IMAGE_SHAPE)))
  assert foldable_pairs(model) == {}
  assert fold_batch_norm(model) is model
