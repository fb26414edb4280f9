"""Restricted Adversarial Search (RAS, docs/METHOD.md Phase A step 4).

From the generator's x̃0, K = `ras_steps` projected sign-gradient ascent steps on
the group's divergence D, inside the L-inf ball `ras_epsilon` around the real
image x and inside [0, 1]; the label restriction (losses.label_mask) then keeps
only the examples whose ensemble prediction is still y. Pure functions: tensors
and an `AdversarialConfig` in, tensors out.
"""

from typing import Callable, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.config.schema import AdversarialConfig
from acn_tf.method.codistillation import DivergentBatch


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


# What the search multiplies ΣD by before differentiating it through float16
# networks: Keras' first loss scale. Only the gradient's sign is used, so any
# positive factor takes the same step wherever nothing underflows or overflows.
FLOAT16_GRADIENT_SCALE = 2.0 ** 15


def scaled_for_float16(total: tf.Tensor, classifiers: Sequence[keras.Model]) -> tf.Tensor:
  """`total` times FLOAT16_GRADIENT_SCALE when the classifiers compute in float16
  (mixed_float16), where a pixel's gradient of a batch's ΣD is often below float16's
  smallest number, becomes 0, and leaves that pixel where it is; `total` itself
  otherwise (float32, bfloat16), the same graph as without it."""
  if any(classifier.compute_dtype == "float16" for classifier in classifiers):
    return total * FLOAT16_GRADIENT_SCALE
  return total


def finite_or_zero(gradient: tf.Tensor) -> tf.Tensor:
  """The gradient where it is finite, 0 elsewhere: a float16 gradient that
  overflowed makes the search take no step there rather than write NaN images."""
  return tf.where(tf.math.is_finite(gradient), gradient, tf.zeros_like(gradient))


def divergence_gradient(classifiers: Sequence[keras.Model], images: tf.Tensor,
                        adversarial: AdversarialConfig) -> tf.Tensor:
  """grad_x of the sum over the batch of D at `images` (only its sign is used).
  With classifiers in inference mode every example's gradient is its own; the
  sum, not the mean, keeps it large, and in float16 it is scaled further."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    per_example, _ = group_divergence(classifiers, images, adversarial)
    total = scaled_for_float16(tf.reduce_sum(per_example), classifiers)
  return finite_or_zero(tape.gradient(total, images))


def restricted_adversarial_search(classifiers: Sequence[keras.Model], images: tf.Tensor,
                                  start: tf.Tensor, adversarial: AdversarialConfig,
                                  start_gradient: Optional[tf.Tensor] = None,
                                  start_logits: Optional[Sequence[tf.Tensor]] = None
                                  ) -> DivergentBatch:
  """x̃ = Proj(x̃ + step_size * sign(grad D)), K times from x̃0 = `start`.

  K is fixed at trace time (a Python loop), so the function compiles to a
  static graph under XLA. K = 0 returns x̃0 unchanged, with `start_logits`.

  `start_gradient` (the gradient of D at x̃0, or any positive multiple: only the
  sign is used) and `start_logits` (the logits at x̃0) are for a caller that
  already has them: the generator update runs the same frozen classifiers at
  x̃0, so the first step, and for K = 0 the logits, then cost no classifier
  pass. After a step the batch carries no logits: Phase B's own forward pass on
  x̃ makes the label mask, which saves a pass of every classifier.
  """
  search = adversarial.search
  images = tf.cast(images, tf.float32)
  divergent = tf.stop_gradient(tf.cast(start, tf.float32))
  for step in range(search.ras_steps):
    if step == 0 and start_gradient is not None:
      gradient = tf.cast(start_gradient, tf.float32)
    else:
      gradient = divergence_gradient(classifiers, divergent, adversarial)
    divergent = project(divergent + search.ras_step_size * tf.sign(gradient), images,
                        search.ras_epsilon)
  logits = list(start_logits) if search.ras_steps == 0 and start_logits is not None else None
  return DivergentBatch(tf.stop_gradient(divergent), logits)


def compiled_search(classifiers: Sequence[keras.Model], adversarial: AdversarialConfig,
                    jit_compile: bool = False) -> Callable:
  """The search and its label mask as a standalone tf.function (optionally XLA)
  over (x, y, x̃0), the mask from an inference-mode pass at x̃."""

  @tf.function(jit_compile=jit_compile, reduce_retracing=True)
  def search(images, labels, start):
    divergent = restricted_adversarial_search(classifiers, images, start, adversarial)
    logits = divergent.logits or inference_logits(classifiers, divergent.images)
    return divergent.images, losses.label_mask(logits, labels,
                                               adversarial.search.ras_label_restrict)

  return search
