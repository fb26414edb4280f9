"""Batch normalisation as one fused TensorFlow op.

Keras 3's BatchNormalization computes the batch moments and the normalisation
with separate element-wise ops (mean, squared difference, subtract, multiply,
and their gradients). On CPU these were 41% of a ResNet-32 training step's op
time; TensorFlow's FusedBatchNormV3 does the same in one op (oneDNN's kernel
when oneDNN is on), and Grappler can fuse it with the following ReLU
(experiments/BENCHMARKS.md). The layer computes what Keras' does, to float
round-off, and has the same weights under the same names, so checkpoints and
weight files of either load into the other.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="acn_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization over the last axis of NHWC images, fused.

  Keras' own computation is used wherever the fused op does not apply: other
  ranks or axes, masks, batch renormalisation, synchronised moments, or a
  `training` flag that is a tensor.
  """

  def _fused_applies(self, inputs, training, mask) -> bool:
    return (len(inputs.shape) == 4 and self.axis in (-1, 3) and mask is None
            and not self.renorm and not self.synchronized
            and (training is None or isinstance(training, bool)))

  def call(self, inputs, training=None, mask=None):
    if not self._fused_applies(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones([channels], tf.float32)
    offset = self.beta if self.center else tf.zeros([channels], tf.float32)
    if not (training and self.trainable):
      outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
          inputs, scale, offset, mean=self.moving_mean, variance=self.moving_variance,
          epsilon=self.epsilon, is_training=False)
      return outputs
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
