"""Batch normalisation folded into the convolution before it, for inference.

Phase A runs the classifiers in inference mode and back-propagates through them
to the image (the generator's loss, the search's gradient). There a batch norm
is a fixed per-channel affine map, so after a convolution

    BN(conv(x, W) + b) = conv(x, W * s) + (b - mu) * s + beta,  s = gamma / sqrt(var + eps),

one convolution with a bias. Grappler fuses that bias (and a ReLU after it)
into the convolution, so the scale and shift leave the forward pass and their
gradients the backward pass: fewer ops in every Phase A pass
(experiments/BENCHMARKS.md measures what it saves).

The folded network is built from the classifier's graph once and reads the
classifier's own variables at every call: it always computes the classifier's
current inference function, to float round-off. Training mode (batch moments)
cannot be folded; only Phase A's inference passes use it.
"""

from typing import Dict, List, Sequence

import keras
import tensorflow as tf


class FoldedConvolution(keras.layers.Layer):
  """A Conv2D and the batch norm that reads its output, as one convolution
  with a bias computed from their current variables (inference mode only)."""

  def __init__(self, convolution: keras.layers.Conv2D,
               batch_norm: keras.layers.BatchNormalization, **kwargs):
    super().__init__(name=f"{convolution.name}_with_{batch_norm.name}",
                     dtype=convolution.dtype_policy, **kwargs)
    self.convolution = convolution
    self.batch_norm = batch_norm

  def folded_kernel_and_bias(self):
    """W * s and (b - mu) * s + beta, in the variables' dtype (float32 under
    mixed precision)."""
    convolution, batch_norm = self.convolution, self.batch_norm
    dtype = convolution.variable_dtype

    def read(variable):
      return tf.cast(variable, dtype)

    scale = tf.math.rsqrt(read(batch_norm.moving_variance) + batch_norm.epsilon)
    if batch_norm.scale:
      scale *= read(batch_norm.gamma)
    bias = -read(batch_norm.moving_mean)
    if convolution.use_bias:
      bias += read(convolution.bias)
    bias *= scale
    if batch_norm.center:
      bias += read(batch_norm.beta)
    return read(convolution.kernel) * scale, bias

  def call(self, inputs, training=None, mask=None):
    del training, mask  # Inference only; a convolution carries no mask.
    kernel, bias = self.folded_kernel_and_bias()
    outputs = tf.nn.convolution(
        inputs, tf.cast(kernel, inputs.dtype), strides=self.convolution.strides,
        padding=self.convolution.padding.upper(),
        dilations=self.convolution.dilation_rate)
    return tf.nn.bias_add(outputs, tf.cast(bias, inputs.dtype))


class FoldedAway(keras.layers.Layer):
  """Where a folded batch norm was: its input, unchanged."""

  def call(self, inputs, training=None, mask=None):
    del training, mask
    return inputs


def foldable_pairs(model: keras.Model) -> Dict[str, keras.layers.BatchNormalization]:
  """Convolution name -> the batch norm that alone reads its output, for every
  pair of a functional model that folds exactly: a plain (ungrouped, linear,
  channels-last) Conv2D called once, whose output feeds one batch norm over its
  channels and nothing else (not a model output). Empty for other models.
  Reads Keras' graph through attributes it keeps private (`_nodes_by_depth`,
  `_inbound_nodes`, `_keras_history`): tests/test_folding.py fails if they change."""
  nodes_by_depth = getattr(model, "_nodes_by_depth", None)
  if nodes_by_depth is None:  # Subclassed model: no graph to rewrite.
    return {}
  nodes = [node for depth_nodes in nodes_by_depth.values() for node in depth_nodes]
  readers: Dict[int, List] = {}
  for node in nodes:
    for tensor in node.input_tensors:
      readers.setdefault(id(tensor), []).append(node.operation)
  outputs = {id(tensor) for tensor in model.outputs}
  pairs = {}
  for node in nodes:
    batch_norm = node.operation
    if not isinstance(batch_norm, keras.layers.BatchNormalization):
      continue
    if batch_norm.axis not in (-1, 3) or len(node.input_tensors) != 1:
      continue
    tensor = node.input_tensors[0]
    convolution = tensor._keras_history.operation
    if (_plain_convolution(convolution) and len(convolution._inbound_nodes) == 1
        and len(batch_norm._inbound_nodes) == 1 and id(tensor) not in outputs
        and readers.get(id(tensor)) == [batch_norm]):
      pairs[convolution.name] = batch_norm
  return pairs


def _plain_convolution(layer) -> bool:
  return (type(layer) is keras.layers.Conv2D and layer.groups == 1
          and layer.data_format == "channels_last"
          and layer.activation is keras.activations.linear)


def fold_batch_norm(model: keras.Model) -> keras.Model:
  """The model's inference function with every pair of `foldable_pairs` folded.

  Every other layer is the model's own (shared, not copied), so the result
  holds no variable of its own. Call it with training=False only. A model with
  nothing to fold is returned as it is.
  """
  pairs = foldable_pairs(model)
  if not pairs:
    return model
  folded_away = {batch_norm.name for batch_norm in pairs.values()}

  def fold(layer):
    if layer.name in pairs:
      return FoldedConvolution(layer, pairs[layer.name])
    if layer.name in folded_away:
      return FoldedAway(name=f"{layer.name}_folded_away", dtype=layer.dtype_policy)
    return layer

  return keras.models.clone_model(model, clone_function=fold)


class InferenceNetworks:
  """The classifiers as Phase A runs them: `fold_batch_norm` of each, built once.

  A plain object, not a Keras layer or list: Keras neither tracks nor saves
  what it holds, so no variable appears twice in a model's weights, checkpoints
  or saved files.
  """

  def __init__(self, classifiers: Sequence[keras.Model]):
    self.folded = [fold_batch_norm(classifier) for classifier in classifiers]
