"""Restricted Adversarial Search (RAS, docs/METHOD.md Phase A step 4).

From the generator's x̃0, K projected sign-gradient ascent steps on the group's
pairwise divergence (or another per-example objective, see `Objective`), inside
the L-inf ball `epsilon` around the real image x and inside [0, 1]; then the
label restriction keeps only examples whose ensemble prediction is still y.
One pure function: tensors in, examples and mask out.
"""

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from acn_tf import losses


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  steps: int = 1
  step_size: float = 2.0 / 255.0
  epsilon: float = 8.0 / 255.0
  temperature: float = 1.0
  # What Phase A maximises: "js" (the spec), "sym_kl", or "logit_l1" (see
  # losses.pairwise_logit_distance).
  divergence: str = "js"
  label_restrict: bool = True
  # Where the label mask's ensemble prediction at x̃ comes from: "search", an
  # inference-mode pass after the last step (docs/METHOD.md), or "update", the
  # classifier update's own training-mode forward pass on x̃ (one classifier
  # pass fewer per step; the mask then sees batch statistics of x̃).
  mask_source: str = "search"
  # What the search ascends: "divergence", Div(x̃) (docs/METHOD.md), or
  # "generator_loss", -L_g(x̃) per example: Div minus the label-keeping and GAN
  # terms. The generator update already back-propagates L_g to x̃0, so with
  # "generator_loss" the first step costs no classifier pass at all.
  objective: str = "divergence"


# Images -> (per-example value the search ascends, inference-mode logits there).
Objective = Callable[[tf.Tensor], Tuple[tf.Tensor, List[tf.Tensor]]]


def project(candidates: tf.Tensor, images: tf.Tensor, epsilon: float) -> tf.Tensor:
  """Proj: into the L-inf ball of radius epsilon around x, then into [0, 1]."""
  candidates = tf.clip_by_value(candidates, images - epsilon, images + epsilon)
  return tf.clip_by_value(candidates, 0.0, 1.0)


def group_divergence(classifiers: Sequence[keras.Model], images: tf.Tensor,
                     settings: SearchSettings) -> Tuple[tf.Tensor, list]:
  """Per-example Div(x) of the group in inference mode, and the logits."""
  # training=False: the search must not move batch-norm statistics.
  logits = [classifier(images, training=False) for classifier in classifiers]
  return logits_divergence(logits, settings), logits


def logits_divergence(logits: Sequence[tf.Tensor], settings: SearchSettings) -> tf.Tensor:
  """Per-example disagreement of the group that Phase A maximises, from its
  logits: a divergence of the tempered probabilities ("js", "sym_kl") or the
  L1 distance between the logits themselves ("logit_l1")."""
  if settings.divergence == "logit_l1":
    return losses.pairwise_logit_distance(logits)
  probabilities = [losses.tempered_probabilities(z, settings.temperature) for z in logits]
  return losses.pairwise_divergence(probabilities, settings.divergence)


def objective_total(per_example: tf.Tensor) -> tf.Tensor:
  """What the search differentiates: the sum over the batch of the per-example
  objective. With classifiers in inference mode every example's gradient is its
  own; the sum, not the mean, leaves it unscaled (only its sign is used anyway)."""
  return tf.reduce_sum(per_example)


def divergence_objective(classifiers: Sequence[keras.Model],
                         settings: SearchSettings) -> Objective:
  """The spec's objective: Div of the group."""
  return lambda images: group_divergence(classifiers, images, settings)


def objective_gradient(objective: Objective, images: tf.Tensor) -> tf.Tensor:
  """grad_x of the search objective (the sum over the batch) at `images`."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    per_example, _ = objective(images)
    total = objective_total(per_example)
  return tape.gradient(total, images)


def divergence_gradient(classifiers: Sequence[keras.Model], images: tf.Tensor,
                        settings: SearchSettings) -> tf.Tensor:
  """grad_x of sum Div at `images`."""
  return objective_gradient(divergence_objective(classifiers, settings), images)


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
                                  start_logits: Optional[Sequence[tf.Tensor]] = None,
                                  objective: Optional[Objective] = None):
  """Returns (x̃, keep_mask, inference-mode logits on x̃).

  K = settings.steps is fixed at trace time (a Python loop), so the function
  compiles to a static graph under XLA. K = 0 returns x̃0 unchanged.

  `objective` is what the steps ascend (default: Div of `classifiers`; the ACN
  model passes its generator-loss objective when settings.objective says so).
  `start_gradient` (its gradient at x̃0, or any positive multiple: only the sign
  is used) and `start_logits` (the logits at x̃0) are for a caller that already
  has them: the generator update runs the same frozen classifiers at x̃0, so the
  first step, and for K = 0 the mask, then cost no classifier pass. With
  mask_source "update" and K > 0 the mask and logits are left to the classifier
  update: both come back as None.
  """
  if objective is None:
    if settings.objective != "divergence":
      raise ValueError(
          f"The search objective {settings.objective!r} needs the generator and the "
          "discriminator: pass objective=model.search_objective(labels) of the "
          "AdversarialCoDistillation model, or use SearchSettings(objective='divergence').")
    objective = divergence_objective(classifiers, settings)
  images = tf.cast(images, tf.float32)
  divergent = tf.stop_gradient(tf.cast(start, tf.float32))
  # After a step the start's logits no longer describe x̃.
  logits = start_logits if settings.steps == 0 else None
  for step in range(settings.steps):
    if step == 0 and start_gradient is not None:
      gradient = tf.cast(start_gradient, tf.float32)
    else:
      gradient = objective_gradient(objective, divergent)
    divergent = project(divergent + settings.step_size * tf.sign(gradient), images,
                        settings.epsilon)
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
