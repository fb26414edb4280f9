"""Classifier backbones: CIFAR ResNets, Wide ResNets and a small CNN.

Each classifier takes images in [0, 1] and normalises them itself (a Normalization
layer holding the training set's channel statistics), so the generator and the
adversarial search work in pixel space and their budgets are in pixel units.
Any input size and channel count works: the heads use global average pooling.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import keras
from keras import layers

from acn_tf.networks.architecture_names import (DOWNSAMPLING_PADDINGS, RESNET_PATTERN,
                                                WIDE_RESNET_PATTERN, check_architecture_name)
from acn_tf.networks.batch_norm import FusedBatchNormalization

# PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5): Keras' momentum weighs the old value.
BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)


class Stage(NamedTuple):
  """A named part of a backbone's feature extractor: `build(x, prefix)` adds its
  layers after x, each layer's name starting with `prefix`, and returns the output."""
  name: str
  build: Callable


def _convolution_initializer():
  """The PyTorch CIFAR ResNets' and WRNs' kaiming_normal_(mode="fan_out"): a plain normal
  with std sqrt(2 / (k * k * filters)). Keras' "he_normal" (a normal truncated at 2 std)
  scales by the fan-in instead: wider where a convolution widens, 2.3x for the ResNets'
  3-to-16 stem, 1.4x for each stage's first convolution and shortcut."""
  return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                            distribution="untruncated_normal")


def pytorch_linear(units: int, fan_in: int, name: str) -> layers.Dense:
  """PyTorch's default nn.Linear (weights and biases uniform in +-1 / sqrt(fan_in)), in
  float32 whatever the precision policy: the heads' logits and ONE's gate."""
  limit = fan_in ** -0.5
  return layers.Dense(
      units, name=name, dtype="float32",
      kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in",
                                                            distribution="uniform"),
      bias_initializer=keras.initializers.RandomUniform(-limit, limit))


def _head(features, num_classes: int, pytorch_initialization: bool, name: str = "logits"):
  """The logits layer. PyTorch's default nn.Linear for the ResNets and WRNs (weights and
  biases uniform in +-1 / sqrt(fan_in)); the small CNN keeps Keras' "he_normal" and zero
  biases, with which its smoke runs and tests were calibrated."""
  if not pytorch_initialization:
    return layers.Dense(num_classes, kernel_initializer="he_normal", name=name,
                        dtype="float32")(features)
  return pytorch_linear(num_classes, features.shape[-1], name)(features)


def check_image_shape(image_shape) -> None:
  """Raises ValueError unless `image_shape` is a fixed (height, width, channels).

  That is all the classifiers (and Phase A's networks) need: their stages keep
  the size or halve it rounding up (`_conv`) and end in global pooling, so any
  size from 1x1 up and any channel count build. The CIFAR-style stems keep the full resolution in the
  first stage, so the cost per image grows with height x width.
  """
  shape = tuple(image_shape)
  if len(shape) != 3 or not all(isinstance(size, int) and size > 0 for size in shape):
    raise ValueError(f"Image shape {shape}: the classifiers need fixed (height, width, "
                     "channels) images, each size a positive integer; resize images of "
                     "varying size with image_size (e.g. --override=image_size=64).")


def _conv(filters: int, kernel_size: int, strides: int = 1, name: Optional[str] = None,
          initializer=None, padding: str = "symmetric"):
  """A convolution that keeps the size (strides 1) or halves it, rounding up.

  A strided k x k convolution pads (k - 1) / 2 on every side, as PyTorch's padding=1
  does for 3x3, and not "same": on an even size TensorFlow pads a 3x3 stride-2
  convolution by 0 before and 1 after, which centres output i on input 2i + 1 while
  the strided 1x1 shortcut samples 2i, so the two branches a block adds would look
  one pixel apart. Padded symmetrically both centre on 2i, at any input size.
  `initializer`: the kernel's, PyTorch's fan-out normal unless given; `padding`
  "same" restores TensorFlow's padding of strided convolutions (DOWNSAMPLING_PADDINGS).
  """
  symmetric = strides > 1 and kernel_size > 1 and padding == "symmetric"
  convolution = layers.Conv2D(filters, kernel_size, strides=strides,
                              padding="valid" if symmetric else "same", use_bias=False,
                              kernel_initializer=initializer or _convolution_initializer(),
                              name=name)
  if not symmetric:
    return convolution
  padding = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")
  return lambda inputs: convolution(padding(inputs))


def _basic_block(inputs, filters: int, strides: int, name: str, padding: str):
  """Post-activation basic block of He et al. (2016), projection shortcut."""
  x = _conv(filters, 3, strides, name=f"{name}_conv1", padding=padding)(inputs)
  x = FusedBatchNormalization(**BATCH_NORM, name=f"{name}_bn1")(x)
  x = layers.ReLU(name=f"{name}_relu1")(x)
  x = _conv(filters, 3, name=f"{name}_conv2")(x)
  x = FusedBatchNormalization(**BATCH_NORM, name=f"{name}_bn2")(x)
  shortcut = inputs
  if strides != 1 or inputs.shape[-1] != filters:
    shortcut = _conv(filters, 1, strides, name=f"{name}_shortcut")(inputs)
    shortcut = FusedBatchNormalization(**BATCH_NORM,
                                       name=f"{name}_shortcut_bn")(shortcut)
  x = layers.Add(name=f"{name}_add")([x, shortcut])
  return layers.ReLU(name=f"{name}_out")(x)


def _resnet_stages(depth: int, padding: str) -> List[Stage]:
  """The CIFAR ResNet as named stages: the stem, then three stages of (depth - 2) / 6
  basic blocks at 16, 32 and 64 filters, the second and third starting with stride 2."""
  blocks_per_stage = (depth - 2) // 6

  def stem(x, prefix: str = ""):
    x = _conv(16, 3, name=f"{prefix}stem_conv")(x)
    x = FusedBatchNormalization(**BATCH_NORM, name=f"{prefix}stem_bn")(x)
    return layers.ReLU(name=f"{prefix}stem_relu")(x)

  def stage(index: int, filters: int) -> Callable:
    def build(x, prefix: str = ""):
      for block in range(blocks_per_stage):
        strides = 2 if index > 0 and block == 0 else 1
        x = _basic_block(x, filters, strides,
                         name=f"{prefix}stage{index + 1}_block{block + 1}", padding=padding)
      return x
    return build

  return [Stage("stem", stem)] + [Stage(f"stage{index + 1}", stage(index, filters))
                                  for index, filters in enumerate((16, 32, 64))]


def _wide_block(inputs, filters: int, strides: int, name: str, padding: str):
  """Pre-activation wide block of Zagoruyko & Komodakis (2016)."""
  x = FusedBatchNormalization(**BATCH_NORM, name=f"{name}_bn1")(inputs)
  x = layers.ReLU(name=f"{name}_relu1")(x)
  shortcut = inputs
  if strides != 1 or inputs.shape[-1] != filters:
    shortcut = _conv(filters, 1, strides, name=f"{name}_shortcut")(x)
  x = _conv(filters, 3, strides, name=f"{name}_conv1", padding=padding)(x)
  x = FusedBatchNormalization(**BATCH_NORM, name=f"{name}_bn2")(x)
  x = layers.ReLU(name=f"{name}_relu2")(x)
  x = _conv(filters, 3, name=f"{name}_conv2")(x)
  return layers.Add(name=f"{name}_add")([x, shortcut])


def _wide_resnet_stages(depth: int, width: int, padding: str) -> List[Stage]:
  """The WRN as named stages: the stem convolution, then three stages of pre-activation
  blocks; the last stage ends with the final batch norm and ReLU, which belong to
  whatever computes the head's features."""
  blocks_per_stage = (depth - 4) // 6

  def stem(x, prefix: str = ""):
    return _conv(16, 3, name=f"{prefix}stem_conv")(x)

  def stage(index: int, filters: int) -> Callable:
    def build(x, prefix: str = ""):
      for block in range(blocks_per_stage):
        strides = 2 if index > 0 and block == 0 else 1
        x = _wide_block(x, filters, strides,
                        name=f"{prefix}stage{index + 1}_block{block + 1}", padding=padding)
      if index == 2:
        x = FusedBatchNormalization(**BATCH_NORM, name=f"{prefix}final_bn")(x)
        x = layers.ReLU(name=f"{prefix}final_relu")(x)
      return x
    return build

  return [Stage("stem", stem)] + [
      Stage(f"stage{index + 1}", stage(index, filters))
      for index, filters in enumerate((16 * width, 32 * width, 64 * width))]


def _small_cnn_stages() -> List[Stage]:
  """Two conv stages: fast enough for CPU smoke runs on tiny images. Not a network of
  the published recipes: it keeps Keras' "he_normal" (on 1-channel images its first
  layer would start 5.7x smaller with PyTorch's fan-out init, which behind batch norm
  multiplies that layer's effective learning rate by 32)."""

  def stage(index: int, filters: int) -> Callable:
    def build(x, prefix: str = ""):
      number = index + 1
      x = _conv(filters, 3, name=f"{prefix}conv{number}", initializer="he_normal")(x)
      x = FusedBatchNormalization(**BATCH_NORM, name=f"{prefix}bn{number}")(x)
      x = layers.ReLU(name=f"{prefix}relu{number}")(x)
      if min(x.shape[1], x.shape[2]) >= 4:
        x = layers.MaxPooling2D(2, name=f"{prefix}pool{number}")(x)
      return x
    return build

  return [Stage(f"stage{index + 1}", stage(index, filters))
          for index, filters in enumerate((32, 64))]


def feature_stages(name: str, padding: str = "symmetric") -> List[Stage]:
  """The feature extractor of architecture `name` as its named stages, in order
  ("stem", "stage1", ... for the ResNets and WRNs; "stage1", "stage2" for the small
  CNN): applied in turn they build exactly `build_classifier`'s layers, and a
  branched network (acn_tf/networks/branched.py) splits them between its trunk and
  its branches. `padding`: how strided convolutions pad (DOWNSAMPLING_PADDINGS)."""
  check_architecture_name(name)
  if padding not in DOWNSAMPLING_PADDINGS:
    raise ValueError(f"downsampling_padding={padding!r}: use one of "
                     f"{', '.join(DOWNSAMPLING_PADDINGS)}.")
  resnet = RESNET_PATTERN.match(name)
  if resnet:
    return _resnet_stages(int(resnet.group(1)), padding)
  wide = WIDE_RESNET_PATTERN.match(name)
  if wide:
    return _wide_resnet_stages(int(wide.group(1)), int(wide.group(2)), padding)
  return _small_cnn_stages()


def apply_stages(stages: Sequence[Stage], x, prefix: str = ""):
  """`stages` applied in turn to x, their layers' names starting with `prefix`."""
  for stage in stages:
    x = stage.build(x, prefix)
  return x


def is_recipe_network(architecture: str) -> bool:
  """The ResNets and WRNs of the published recipes (PyTorch's initialisation of the
  head), as opposed to the small CNN."""
  return bool(RESNET_PATTERN.match(architecture) or WIDE_RESNET_PATTERN.match(architecture))


def input_layers(image_shape: Tuple[int, int, int], channel_mean: Sequence[float],
                 channel_variance: Sequence[float]):
  """(the images input, the normalised images): every classifier's first layers."""
  images = keras.Input(shape=tuple(image_shape), name="images")
  x = layers.Normalization(mean=list(channel_mean), variance=list(channel_variance),
                           name="normalize")(images)
  return images, x


def classifier_head(features, num_classes: int, architecture: str, prefix: str = ""):
  """Global average pooling and the logits layer, named after `prefix`."""
  x = layers.GlobalAveragePooling2D(name=f"{prefix}pool")(features)
  return _head(x, num_classes, pytorch_initialization=is_recipe_network(architecture),
               name=f"{prefix}logits")


def build_classifier(architecture: str,
                     image_shape: Tuple[int, int, int],
                     num_classes: int,
                     channel_mean: Sequence[float],
                     channel_variance: Sequence[float],
                     name: str = "classifier",
                     seed: Optional[int] = None,
                     downsampling_padding: str = "symmetric") -> keras.Model:
  """A functional classifier: [0, 1] images in, logits out.

  `seed` fixes the initial weights, so two builds with the same seed are equal;
  `downsampling_padding` is how strided convolutions pad (DOWNSAMPLING_PADDINGS).
  """
  if seed is not None:
    keras.utils.set_random_seed(seed)
  images, x = input_layers(image_shape, channel_mean, channel_variance)
  x = apply_stages(feature_stages(architecture, downsampling_padding), x)
  return keras.Model(images, classifier_head(x, num_classes, architecture), name=name)
