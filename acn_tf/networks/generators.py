"""Phase A's generator g and its Weakly Residual Connection.

g maps a real batch and noise to a residual; the WRC turns it into x̃0, an
image at most `wrc_alpha` from x in every pixel (docs/METHOD.md). It takes
images in [0, 1] of any size.
"""

from typing import Tuple

import keras
import tensorflow as tf
from keras import layers

from acn_tf.networks.batch_norm import FusedBatchNormalization


def build_generator(image_shape: Tuple[int, int, int], noise_channels: int,
                    filters: int = 32, residual_blocks: int = 2,
                    name: str = "generator") -> keras.Model:
  """Image-to-image network g([x, noise]) -> unbounded residual, same shape as x.

  Encoder (one stride-2 stage when the size is even), residual blocks, decoder.
  The last convolution starts at zero, so at initialisation the Weakly Residual
  Connection gives x̃0 = x exactly: the generator starts on the data.
  """
  height, width, channels = image_shape
  images = keras.Input(shape=tuple(image_shape), name="images")
  noise = keras.Input(shape=(height, width, noise_channels), name="noise")
  x = layers.Concatenate(name="image_and_noise")([images, noise])
  x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(x)
  x = _conv_bn_relu(x, filters, 3, 1, "encode1")
  downsample = height % 2 == 0 and width % 2 == 0 and min(height, width) >= 8
  if downsample:
    x = _conv_bn_relu(x, 2 * filters, 3, 2, "encode2")
  width_filters = 2 * filters if downsample else filters
  for block in range(residual_blocks):
    shortcut = x
    y = _conv_bn_relu(x, width_filters, 3, 1, f"residual{block + 1}_a")
    y = layers.Conv2D(width_filters, 3, padding="same", use_bias=False,
                      name=f"residual{block + 1}_b_conv")(y)
    y = FusedBatchNormalization(name=f"residual{block + 1}_b_bn")(y)
    x = layers.Add(name=f"residual{block + 1}_add")([shortcut, y])
  if downsample:
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False,
                               name="decode1_conv")(x)
    x = FusedBatchNormalization(name="decode1_bn")(x)
    x = layers.ReLU(name="decode1_relu")(x)
  residual = layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros",
                           name="residual_out", dtype="float32")(x)
  return keras.Model([images, noise], residual, name=name)


def _conv_bn_relu(x, filters: int, kernel_size: int, strides: int, name: str):
  x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                    use_bias=False, name=f"{name}_conv")(x)
  x = FusedBatchNormalization(name=f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


def weakly_residual_connection(images: tf.Tensor, generator_output: tf.Tensor,
                               wrc_alpha: float) -> tf.Tensor:
  """x̃0 = clip01(x + alpha * tanh(g)); alpha = 0 is the "no WRC" ablation,
  x̃0 = (tanh(g) + 1) / 2, a plain image-to-image generator."""
  residual = tf.tanh(tf.cast(generator_output, tf.float32))
  if wrc_alpha == 0:
    return (residual + 1.0) / 2.0
  return tf.clip_by_value(tf.cast(images, tf.float32) + wrc_alpha * residual, 0.0, 1.0)
