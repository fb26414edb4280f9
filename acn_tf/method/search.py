"""Restricted Adversarial Search (RAS, docs/METHOD.md Phase A step 4).

From the generator's x̃0, K = `ras_steps` projected sign-gradient ascent steps on
the group's divergence D (or another per-example objective, see `Objective`),
inside the L-inf ball `ras_epsilon` around the real image x and inside [0, 1];
the label restriction then keeps only the examples whose ensemble prediction is
still y. Pure functions: tensors and an `AdversarialConfig` in, tensors out.
"""

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.config.schema import AdversarialConfig


# Images -> (per-example value the search ascends, inference-mode logits there).
Objective = Callable[[tf.Tensor], Tuple[tf.Tensor, List[tf.Tensor]]]


def project(candidates: tf.Tensor, images: tf.Tensor, epsilon: float) -> tf.Tensor:
  """Proj: into the L-inf ball of radius epsilon around x, then into [0, 1]."""
  candidates = tf.clip_by_value(candidates, images - epsilon, images + epsilon)
  return tf.clip_by_value(candidates, 0.0, 1.0)


def inference_logits(classifiers: Sequence[keras.Model], images: tf.Tensor) -> list:
  """Every classifier's logits in inference mode: Phase A must not move
  batch-norm statistics, and examples must not see each other."""
  return [classifier(images, training=False) for classifier in classifiers]


def group_divergence(classifiers: Sequence[keras.Model], images: tf.Tensor,
                     adversarial: AdversarialConfig) -> Tuple[tf.Tensor, list]:
  """Per-example D(x) of the group in inference mode (the divergence Phase A
  maximises, losses.divergence), and the logits."""
  logits = inference_logits(classifiers, images)
  return phase_a_divergence(logits, adversarial), logits


def phase_a_divergence(logits: Sequence[tf.Tensor],
                       adversarial: AdversarialConfig) -> tf.Tensor:
  """D: the configured divergence at the configured temperature, per example."""
  return losses.divergence(logits, adversarial.divergence,
                           adversarial.divergence_temperature)


def objective_total(per_example: tf.Tensor) -> tf.Tensor:
  """What the search differentiates: the sum over the batch of the per-example
  objective. With classifiers in inference mode every example's gradient is its
  own; the sum, not the mean, leaves it unscaled (only its sign is used anyway)."""
  return tf.reduce_sum(per_example)


def divergence_objective(classifiers: Sequence[keras.Model],
                         adversarial: AdversarialConfig) -> Objective:
  """The spec's objective: the group's divergence D."""
  return lambda images: group_divergence(classifiers, images, adversarial)


def objective_gradient(objective: Objective, images: tf.Tensor) -> tf.Tensor:
  """grad_x of the search objective (the sum over the batch) at `images`."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    per_example, _ = objective(images)
    total = objective_total(per_example)
  return tape.gradient(total, images)


def divergence_gradient(classifiers: Sequence[keras.Model], images: tf.Tensor,
                        adversarial: AdversarialConfig) -> tf.Tensor:
  """grad_x of sum D at `images`."""
  return objective_gradient(divergence_objective(classifiers, adversarial), images)


def label_mask(logits: Sequence[tf.Tensor], labels: tf.Tensor,
               label_restrict: bool = True) -> tf.Tensor:
  """m = 1.0 where argmax p̄ == y (everywhere when label_restrict is off)."""
  if not label_restrict:
    return tf.ones(tf.shape(labels)[:1], tf.float32)
  predictions = tf.argmax(losses.ensemble_probabilities(logits), axis=-1,
                          output_type=tf.int32)
  return tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)


class SearchResult(NamedTuple):
  """x̃ (no gradient flows back) and the classifiers' inference-mode logits at
  x̃ when the search has them: always with `ras_mask_source="search"` (the
  label mask's pass), and for K = 0 (the start's logits, which the caller
  passed). None only where Phase B makes the mask from its own forward pass on
  x̃ (`ras_mask_source="update"` with K > 0), which saves that pass."""
  images: tf.Tensor
  logits: Optional[List[tf.Tensor]]


def restricted_adversarial_search(classifiers: Sequence[keras.Model], images: tf.Tensor,
                                  start: tf.Tensor, adversarial: AdversarialConfig,
                                  start_gradient: Optional[tf.Tensor] = None,
                                  start_logits: Optional[Sequence[tf.Tensor]] = None,
                                  objective: Optional[Objective] = None) -> SearchResult:
  """x̃ = Proj(x̃ + step_size * sign(grad objective)), K times from x̃0 = `start`.

  K is fixed at trace time (a Python loop), so the function compiles to a
  static graph under XLA. K = 0 returns x̃0 unchanged.

  `objective` is what the steps ascend (default: D of `classifiers`; the ACN
  model passes its generator-loss objective when `ras_objective` says so).
  `start_gradient` (its gradient at x̃0, or any positive multiple: only the sign
  is used) and `start_logits` (the logits at x̃0) are for a caller that already
  has them: the generator update runs the same frozen classifiers at x̃0, so the
  first step, and for K = 0 the logits, then cost no classifier pass.
  """
  search = adversarial.search
  if objective is None:
    if search.ras_objective != "divergence":
      raise ValueError(
          f"The search objective {search.ras_objective!r} needs the generator and the "
          "discriminator: pass objective=model.search_objective(labels) of the "
          "AdversarialCoDistillation model, or use ras_objective='divergence'.")
    objective = divergence_objective(classifiers, adversarial)
  images = tf.cast(images, tf.float32)
  divergent = tf.stop_gradient(tf.cast(start, tf.float32))
  for step in range(search.ras_steps):
    if step == 0 and start_gradient is not None:
      gradient = tf.cast(start_gradient, tf.float32)
    else:
      gradient = objective_gradient(objective, divergent)
    divergent = project(divergent + search.ras_step_size * tf.sign(gradient), images,
                        search.ras_epsilon)
  # After a step the start's logits no longer describe x̃.
  logits = list(start_logits) if search.ras_steps == 0 and start_logits is not None else None
  if logits is None and search.ras_mask_source == "search":
    logits = inference_logits(classifiers, divergent)
  return SearchResult(tf.stop_gradient(divergent), logits)


def compiled_search(classifiers: Sequence[keras.Model], adversarial: AdversarialConfig,
                    jit_compile: bool = False) -> Callable:
  """The search and its label mask as a standalone tf.function (optionally XLA)
  over (x, y, x̃0), the mask always from an inference-mode pass at x̃."""

  @tf.function(jit_compile=jit_compile, reduce_retracing=True)
  def search(images, labels, start):
    divergent, logits = restricted_adversarial_search(classifiers, images, start,
                                                      adversarial)
    if logits is None:
      logits = inference_logits(classifiers, divergent)
    return divergent, label_mask(logits, labels, adversarial.search.ras_label_restrict)

  return search
