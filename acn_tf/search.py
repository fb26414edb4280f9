"""Restricted Adversarial Search (RAS, ACN_SPEC.md Phase A step 4).

From the generator's x̃0, K projected sign-gradient ascent steps on the group's
pairwise divergence, inside the L-inf ball `epsilon` around the real image x and
inside [0, 1]; then the label restriction keeps only examples whose ensemble
prediction is still y. One pure function: tensors in, examples and mask out.
"""

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

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
  # Where the label mask's ensemble prediction at x̃ comes from: "search", an
  # inference-mode pass after the last step (ACN_SPEC.md), or "update", the
  # classifier update's own training-mode forward pass on x̃ (one classifier
  # pass fewer per step; the mask then sees batch statistics of x̃).
  mask_source: str = "search"


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


def search_objective(divergence: tf.Tensor) -> tf.Tensor:
  """What the search ascends: sum_b Div(x_b). The sum, not the mean, keeps every
  example's gradient unscaled by the batch size (only its sign is used anyway)."""
  return tf.reduce_sum(divergence)


def divergence_gradient(classifiers: Sequence[keras.Model], images: tf.Tensor,
                        settings: SearchSettings) -> tf.Tensor:
  """grad_x of the search objective at `images`."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    divergence, _ = group_divergence(classifiers, images, settings)
    objective = search_objective(divergence)
  return tape.gradient(objective, images)


def label_mask(logits: Sequence[tf.Tensor], labels: tf.Tensor,
               label_restrict: bool = True) -> tf.Tensor:
  """m = 1.0 where argmax p̄ == y (everywhere when label_restrict is off)."""
  if not label_restrict:
    return tf.ones(tf.shape(labels)[:1], tf.float32)
  predictions = tf.argmax(losses.ensemble_probabilities(logits), axis=-1,
                          output_type=tf.int32)
  return tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)


def restricted_adversarial_search(classifiers: Sequence[keras.Model], images: tf.Tensor,
                                  labels: tf.Tensor, start: tf.Tensor,
                                  settings: SearchSettings,
                                  start_gradient: Optional[tf.Tensor] = None,
                                  start_logits: Optional[Sequence[tf.Tensor]] = None):
  """Returns (x̃, keep_mask, inference-mode logits on x̃).

  K = settings.steps is fixed at trace time (a Python loop), so the function
  compiles to a static graph under XLA. K = 0 returns x̃0 unchanged.

  `start_gradient` (grad of sum Div at x̃0) and `start_logits` (the logits at
  x̃0) are for a caller that already has them: the generator update runs the
  same frozen classifiers at x̃0, so the first step, and for K = 0 the mask,
  then cost no classifier pass. With mask_source "update" and K > 0 the mask
  and logits are left to the classifier update: both come back as None.
  """
  images = tf.cast(images, tf.float32)
  divergent = tf.stop_gradient(tf.cast(start, tf.float32))
  logits = start_logits
  for step in range(settings.steps):
    if step == 0 and start_gradient is not None:
      gradient = tf.cast(start_gradient, tf.float32)
    else:
      gradient = divergence_gradient(classifiers, divergent, settings)
    divergent = project(divergent + settings.step_size * tf.sign(gradient), images,
                        settings.epsilon)
    logits = None
  if logits is None:
    if settings.mask_source == "update":
      return tf.stop_gradient(divergent), None, None
    logits = [classifier(divergent, training=False) for classifier in classifiers]
  keep_mask = label_mask(logits, labels, settings.label_restrict)
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
