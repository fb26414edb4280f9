"""Batch normalisation as one fused TensorFlow op.

Keras 3's BatchNormalization computes the batch moments and the normalisation
with separate element-wise ops (mean, squared difference, subtract, multiply,
and their gradients), a large share of a CPU training step's op time
(experiments/BENCHMARKS.md); TensorFlow's FusedBatchNormV3 does the same in one op (oneDNN's kernel
when oneDNN is on), and Grappler can fuse it with the following ReLU
(experiments/BENCHMARKS.md). This matters in training mode, where the batch's
moments are computed; in inference mode the layer is Keras' own. The layer
computes what Keras' does, to float round-off, and has the same weights under
the same names, so checkpoints and weight files of either load into the other.
"""

from typing import List

import keras
import tensorflow as tf

_FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def batch_norms(model: keras.Model) -> List[keras.layers.BatchNormalization]:
  """Every batch norm of `model`, those of its nested models too."""
  return [layer for layer in model._flatten_layers()
          if isinstance(layer, keras.layers.BatchNormalization)]


@keras.saving.register_keras_serializable(package="acn_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization over the last axis of NHWC images, fused.

  Only the batch-statistics (training) computation is fused; with the moving
  statistics Keras' layer is a multiply and an add already, and the fused op's
  gradient there has no deterministic GPU kernel (the search and the generator
  take input gradients through classifiers in inference mode). Keras' own
  computation is also used for other ranks, axes or dtypes, masks, batch
  renormalisation, synchronised moments, or a `training` flag that is a tensor.
  """

  def _fused_applies(self, inputs, training, mask) -> bool:
    return (training is True and self.trainable and len(inputs.shape) == 4
            and self.axis in (-1, 3) and mask is None and not self.renorm
            and not self.synchronized and tf.as_dtype(inputs.dtype) in _FUSED_DTYPES)

  def call(self, inputs, training=None, mask=None):
    if not self._fused_applies(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones([channels], tf.float32)
    offset = self.beta if self.center else tf.zeros([channels], tf.float32)
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, scale, offset, epsilon=self.epsilon, is_training=True)
    # The op returns the unbiased batch variance; Keras' moving average uses the
    # biased one (the variance the batch was normalised with).
    count = tf.cast(tf.size(inputs) // channels, tf.float32)
    biased_variance = variance * ((count - 1.0) / count)
    self.moving_mean.assign(
        self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
    self.moving_variance.assign(
        self.moving_variance * self.momentum + biased_variance * (1.0 - self.momentum))
    return outputs
