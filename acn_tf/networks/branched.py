"""Branched networks: one backbone split at a named stage into a shared trunk and m
branches, each branch the remaining stages and a head of its own.

ONE (Lan et al., NeurIPS 2018) and CL-ILR (Song and Chai, NeurIPS 2018) train such a
network: trunk + branch i is classifier i, and every classifier shares the trunk.
`build_branched_network` returns one functional model, [0, 1] images in, a list out:
the m branches' logits and, with a gate (ONE), the gated ensemble's logits. With
`scale_trunk_gradient` (CL-ILR's backpropagation rescaling) each branch reads the
trunk through a `GradientScale(1 / m)`, so the trunk receives the mean of the
branches' gradients rather than their sum. `branch_classifier` and
`ensemble_classifier` cut single-output classifiers out of it (the same layers and
weights) for export. The layers, initialisers and batch norm are the backbones'
(acn_tf/networks/backbones.py); nothing here reads a config or knows a method.
"""

from typing import List, Optional, Sequence, Tuple

import keras
import tensorflow as tf
from keras import layers

from acn_tf.networks import architecture_names, backbones


@keras.saving.register_keras_serializable(package="acn_tf")
class GradientScale(layers.Layer):
  """Identity forward, gradient times `scale` backward: CL-ILR's backpropagation
  rescaling, which keeps the trunk's gradient the size of one head's when m heads
  add theirs into it."""

  def __init__(self, scale: float, **kwargs):
    super().__init__(**kwargs)
    self.scale = float(scale)

  def call(self, inputs):
    scale = self.scale

    @tf.custom_gradient
    def scaled(x):
      return tf.identity(x), lambda upstream: upstream * tf.cast(scale, upstream.dtype)

    return scaled(inputs)

  def get_config(self) -> dict:
    return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="acn_tf")
class GatedSum(layers.Layer):
  """ONE's ensemble logits z_e = Σ_i g_i z_i, from the gate's weights g [batch, m] and
  the m branches' logits, in float32."""

  def call(self, inputs):
    gate, *logits = inputs
    gate = tf.cast(gate, tf.float32)
    return tf.add_n([gate[:, i:i + 1] * tf.cast(z, tf.float32)
                     for i, z in enumerate(logits)])


def gate(trunk_features, branches: int, name: str = "gate"):
  """ONE's gate on the trunk's output, as its public code has it: global average
  pooling, a linear layer to m units (PyTorch's default initialisation), batch norm
  (BatchNorm1d's momentum and epsilon), ReLU and a softmax over the branches."""
  x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(trunk_features)
  x = backbones.pytorch_linear(branches, x.shape[-1], name=f"{name}_linear")(x)
  x = layers.BatchNormalization(**backbones.BATCH_NORM, dtype="float32", name=f"{name}_bn")(x)
  x = layers.ReLU(dtype="float32", name=f"{name}_relu")(x)
  return layers.Softmax(dtype="float32", name=f"{name}_softmax")(x)


def build_branched_network(architecture: str,
                           image_shape: Tuple[int, int, int],
                           num_classes: int,
                           channel_mean: Sequence[float],
                           channel_variance: Sequence[float],
                           branches: int,
                           split_after: str = "",
                           with_gate: bool = False,
                           scale_trunk_gradient: bool = False,
                           name: str = "branched_network",
                           seed: Optional[int] = None,
                           downsampling_padding: str = "symmetric") -> keras.Model:
  """`architecture` split after the stage `split_after` ("" : the last but one) into a
  trunk and `branches` branches; [0, 1] images in, [z_0, ..., z_{m-1}] out, then the
  gated ensemble's logits z_e when `with_gate`.

  The trunk's layers keep the backbone's names; branch i's are prefixed `branch{i}_`.
  Layers are created trunk first, then each branch in turn, then the gate, so that a
  `seed` fixes every weight. Raises ValueError for an architecture or split point
  that cannot branch, or fewer than two branches.
  """
  if branches < 2:
    raise ValueError(f"A branched network needs at least 2 branches, got {branches}.")
  split = architecture_names.resolve_split(architecture, split_after)
  stages = backbones.feature_stages(architecture, downsampling_padding)
  cut = [stage.name for stage in stages].index(split) + 1
  if seed is not None:
    keras.utils.set_random_seed(seed)
  images, x = backbones.input_layers(image_shape, channel_mean, channel_variance)
  trunk = backbones.apply_stages(stages[:cut], x)
  logits = []
  for index in range(branches):
    prefix = f"branch{index}_"
    branch_input = trunk
    if scale_trunk_gradient:
      branch_input = GradientScale(1.0 / branches, name=f"{prefix}trunk_gradient")(trunk)
    features = backbones.apply_stages(stages[cut:], branch_input, prefix)
    logits.append(backbones.classifier_head(features, num_classes, architecture, prefix))
  outputs = list(logits)
  if with_gate:
    weights = gate(trunk, branches)
    outputs.append(GatedSum(dtype="float32", name="gated_ensemble")([weights, *logits]))
  return keras.Model(images, outputs, name=name)


def branch_classifier(network: keras.Model, index: int) -> keras.Model:
  """Classifier `index` of a branched network: trunk + branch `index`, images in,
  z_index out (the network's own layers and weights)."""
  return keras.Model(network.input, network.outputs[index], name=f"classifier_{index}")


def branch_classifiers(network: keras.Model, branches: int) -> List[keras.Model]:
  return [branch_classifier(network, index) for index in range(branches)]


def ensemble_classifier(network: keras.Model) -> keras.Model:
  """ONE's gated ensemble as one classifier: images in, z_e = Σ_i g_i z_i out."""
  return keras.Model(network.input, network.outputs[-1], name="gated_ensemble")
