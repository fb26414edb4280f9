"""DML with a noisy copy of every batch as Phase B's divergent batch (method dml_noise).

The rival an ACN result is read against: if a divergent batch helps because its
pixels moved, not because of where Phase A moved them, noise of the same size
does as well (docs/METHOD.md, "The rival"). `NoisyCoDistillation` is that rival
without Phase A: no generator, no discriminator, no search. Each step is one DML
update whose loss also has the divergent-batch terms of
`CoDistillation.classifier_update` on x ± input_noise, with the same label mask,
weights and averaging as ACN's x̃: about one DML step plus one forward and
backward pass of every classifier on the noisy batch. Its size, `input_noise`,
is chosen on a validation split.
"""

from typing import List

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.method.codistillation import CoDistillation, DivergentBatch


def random_signs(shape) -> tf.Tensor:
  """±1 per element, each with probability 1/2, fresh at every call."""
  return tf.where(tf.random.uniform(shape) < 0.5, -1.0, 1.0)


def moved_by(images: tf.Tensor, signs: tf.Tensor, sizes) -> tf.Tensor:
  """clip01(x + signs * sizes), per pixel."""
  return tf.clip_by_value(images + tf.cast(signs, images.dtype) * sizes, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="acn_tf")
class NoisyCoDistillation(CoDistillation):
  """n classifiers co-distilled on x and, as the divergent batch, on
  x̃ = clip01(x + s · input_noise), s a fresh random sign per pixel.

  The mask and the terms on x̃ are ACN's (`keep_mask`, `divergent_batch_loss`),
  the mask from this update's own forward pass on x̃ (there is no search to make
  one). Saved, loaded and exported like `CoDistillation`: the classifiers are its
  only networks.
  """

  def __init__(self, classifiers, **kwargs):
    super().__init__(classifiers, **kwargs)
    self.kept_fraction = keras.metrics.Mean(name="kept_fraction")
    self.noisy_divergence = keras.metrics.Mean(name="divergence_noisy")

  @property
  def metrics(self) -> List[keras.metrics.Metric]:
    return [*super().metrics, self.kept_fraction, self.noisy_divergence]

  def train_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    self.classifier_update(images, labels, DivergentBatch(self.noisy_batch(images)))
    return self.metric_results()

  def noisy_batch(self, images) -> tf.Tensor:
    """x + s · input_noise per pixel, clipped to [0, 1], with no gradient to it."""
    images = tf.cast(images, tf.float32)
    return tf.stop_gradient(moved_by(images, self.noise_signs(images),
                                     self.distillation.input_noise))

  def noise_signs(self, images) -> tf.Tensor:
    """The signs s of `noisy_batch`, one per pixel of `images`: random and fresh at
    every step (a test may make them a function of the images)."""
    return random_signs(tf.shape(images))

  def update_divergent_metrics(self, divergent_logits, keep_mask) -> None:
    """Div at the noisy batch (in training mode) and the fraction the label mask keeps."""
    noisy = losses.reported_divergence([tf.stop_gradient(z) for z in divergent_logits])
    self.noisy_divergence.update_state(tf.reduce_mean(noisy))
    self.kept_fraction.update_state(tf.reduce_mean(keep_mask))
