"""Restricted Adversarial Search (RAS, ACN_SPEC.md Phase A step 4).

From the generator's x̃0, K projected sign-gradient ascent steps on the group's
pairwise divergence, inside the L-inf ball `epsilon` around the real image x and
inside [0, 1]; then the label restriction keeps only examples whose ensemble
prediction is still y. One pure function: tensors in, examples and mask out.
"""

import dataclasses
from typing import Callable, Sequence, Tuple

import keras
import tensorflow as tf

from acn_tf import losses


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  steps: int = 1
  step_size: float = 2.0 / 255.0
  epsilon: float = 8.0 / 255.0
  temperature: float = 1.0
  divergence: str = "js"
  label_restrict: bool = True


def project(candidates: tf.Tensor, images: tf.Tensor, epsilon: float) -> tf.Tensor:
  """Proj: into the L-inf ball of radius epsilon around x, then into [0, 1]."""
  candidates = tf.clip_by_value(candidates, images - epsilon, images + epsilon)
  return tf.clip_by_value(candidates, 0.0, 1.0)


def group_divergence(classifiers: Sequence[keras.Model], images: tf.Tensor,
                     settings: SearchSettings) -> Tuple[tf.Tensor, list]:
  """Per-example Div(x) of the group in inference mode, and the logits."""
  # training=False: the search must not move batch-norm statistics.
  logits = [classifier(images, training=False) for classifier in classifiers]
  probabilities = [losses.tempered_probabilities(z, settings.temperature) for z in logits]
  return losses.pairwise_divergence(probabilities, settings.divergence), logits


def restricted_adversarial_search(classifiers: Sequence[keras.Model], images: tf.Tensor,
                                  labels: tf.Tensor, start: tf.Tensor,
                                  settings: SearchSettings):
  """Returns (x̃, keep_mask, logits on x̃).

  K = settings.steps is fixed at trace time (a Python loop), so the function
  compiles to a static graph under XLA. K = 0 returns x̃0 unchanged. The mask is
  1.0 where argmax p̄(x̃) == y (or everywhere when label_restrict is off).
  """
  images = tf.cast(images, tf.float32)
  divergent = tf.stop_gradient(tf.cast(start, tf.float32))
  for _ in range(settings.steps):
    with tf.GradientTape() as tape:
      tape.watch(divergent)
      divergence, _ = group_divergence(classifiers, divergent, settings)
      # The sum (not the mean) keeps per-example gradients unscaled; only
      # their sign is used anyway.
      objective = tf.reduce_sum(divergence)
    gradient = tape.gradient(objective, divergent)
    divergent = project(divergent + settings.step_size * tf.sign(gradient), images,
                        settings.epsilon)
  logits = [classifier(divergent, training=False) for classifier in classifiers]
  if settings.label_restrict:
    predictions = tf.argmax(losses.ensemble_probabilities(logits), axis=-1,
                            output_type=tf.int32)
    keep_mask = tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)
  else:
    keep_mask = tf.ones(tf.shape(labels)[:1], tf.float32)
  return tf.stop_gradient(divergent), keep_mask, logits


def compiled_search(classifiers: Sequence[keras.Model], settings: SearchSettings,
                    jit_compile: bool = False) -> Callable:
  """The search as a standalone tf.function (optionally XLA) over (x, y, x̃0)."""

  @tf.function(jit_compile=jit_compile, reduce_retracing=True)
  def search(images, labels, start):
    divergent, keep_mask, _ = restricted_adversarial_search(
        classifiers, images, labels, start, settings)
    return divergent, keep_mask

  return search
