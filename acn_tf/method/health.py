"""Phase A health: is the adversarial phase doing its job?

On held-out images, in inference mode (no weight or batch-norm statistic moves):
the spec's Div (losses.reported_divergence) on real x, on the generator's x̃0
and on the searched x̃, their ratios to Div(x), the fraction the label
restriction keeps, and the discriminator's accuracy on real and generated
images. A working Phase A makes Div(x̃0) / Div(x) clearly above 1 while most
examples keep their label; about 1 means the generator does nothing.
Reported per epoch by `PhaseAHealth` (history.csv, TensorBoard) and after
training in results.json (training.py).
"""

from typing import Dict, Iterable, Optional

import keras
import numpy as np
import tensorflow as tf

from acn_tf.method import losses

# Sums over examples, accumulated over batches; `summarize` turns them into means.
_SUMS = ("examples", "divergence_real", "divergence_generated", "divergence_searched",
         "kept_generated", "kept_searched", "discriminator_real_accuracy",
         "discriminator_fake_accuracy", "residual_linf")


def batch_sums(model, images: tf.Tensor, labels: tf.Tensor,
               noise: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Per-batch sums of every health figure for an AdversarialCoDistillation."""
  images = tf.cast(images, tf.float32)
  examples = model.inference_examples(images, labels, noise)
  divergence = lambda logits: tf.reduce_sum(losses.reported_divergence(logits))
  sums = {
      "examples": tf.cast(tf.shape(images)[0], tf.float32),
      "divergence_real": divergence(examples.real_logits),
      "divergence_generated": divergence(examples.generated_logits),
      "divergence_searched": divergence(examples.searched_logits),
      "kept_generated": tf.reduce_sum(losses.label_mask(
          examples.generated_logits, labels, model.adversarial.search.ras_label_restrict)),
      "kept_searched": tf.reduce_sum(examples.keep_mask),
      "residual_linf": tf.reduce_sum(
          tf.reduce_max(tf.abs(examples.generated - images), axis=[1, 2, 3])),
  }
  if model.discriminator is not None:
    real = tf.reshape(model.discriminator(images, training=False), [-1])
    fake = tf.reshape(model.discriminator(examples.generated, training=False), [-1])
    sums["discriminator_real_accuracy"] = tf.reduce_sum(tf.cast(real > 0, tf.float32))
    sums["discriminator_fake_accuracy"] = tf.reduce_sum(tf.cast(fake < 0, tf.float32))
  return sums


def summarize(sums: Dict[str, float]) -> Dict[str, Optional[float]]:
  """Means per example and the two ratios; None where there is nothing to say
  (no discriminator; Div(x) = 0)."""
  count = sums["examples"]
  means = {name: (sums[name] / count if name in sums else None)
           for name in _SUMS if name != "examples"}
  real = means["divergence_real"]
  for kind in ("generated", "searched"):
    means[f"divergence_ratio_{kind}"] = (means[f"divergence_{kind}"] / real
                                         if real > 0 else None)
  means["examples"] = int(count)
  return means


class HealthMeter:
  """Measures the health of `model` on a fixed set of batches, compiled once.

  Noise for the generator is drawn from `seed` per batch, so two measurements
  of the same weights agree exactly and training's random stream is untouched.
  """

  def __init__(self, model, batches: Iterable, seed: int = 0):
    self.model = model
    self.batches = []
    for index, (images, labels) in enumerate(batches):
      noise = np.random.default_rng([seed, index]).normal(
          size=(*images.shape[:-1], model.adversarial.noise_channels)).astype(np.float32)
      self.batches.append((tf.convert_to_tensor(images, tf.float32),
                           tf.convert_to_tensor(labels), tf.constant(noise)))
    self._batch_sums = tf.function(lambda x, y, z: batch_sums(self.model, x, y, z),
                                   reduce_retracing=True)

  def measure(self) -> Dict[str, Optional[float]]:
    totals: Dict[str, float] = {}
    for images, labels, noise in self.batches:
      for name, value in self._batch_sums(images, labels, noise).items():
        totals[name] = totals.get(name, 0.0) + float(value)
    return summarize(totals)


def measure(model, dataset: tf.data.Dataset, seed: int = 0) -> Dict[str, Optional[float]]:
  """Health of `model` on every batch of `dataset` (e.g. the test split)."""
  return HealthMeter(model, dataset.as_numpy_iterator(), seed).measure()


class PhaseAHealth(keras.callbacks.Callback):
  """Adds the health figures, as `health_*` entries, to each epoch's logs, so
  history.csv and TensorBoard carry them. Measured on a fixed set of held-out
  batches every epoch, warm-up included (there the generator is untrained)."""

  def __init__(self, batches: Iterable, seed: int = 0):
    super().__init__()
    self._batches = list(batches)
    self._seed = seed
    self._meter = None

  def on_epoch_end(self, epoch, logs=None):
    if self._meter is None:
      self._meter = HealthMeter(self.model, self._batches, self._seed)
    if logs is not None:
      for name, value in self._meter.measure().items():
        if name != "examples":
          logs[f"health_{name}"] = float("nan") if value is None else value
