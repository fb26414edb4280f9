"""KDCL: online knowledge distillation via collaborative learning (method kdcl).

Q. Guo, X. Wang, Y. Wu, Z. Yu, D. Liang, X. Hu, P. Luo, *Online Knowledge
Distillation via Collaborative Learning*, CVPR 2020. n independent peers; every
peer is distilled from one soft target t built from all the peers' logits:

    L_i = CE(z_i, y) + κ · T² · KL(sg(t^T) ‖ p_i^T),   t^T = softmax(z_t / T)

with the ensemble logits z_t of `kdcl_target` (docs/METHOD.md, "KDCL: one ensemble
target for every peer"):

- "min_logit", the paper's KDCL-MinLogit: z_t,c = min_i (z_i,c − z_i,y). Shifting
  each peer's logits so that its true class's logit is 0 does not change its
  softmax; the elementwise minimum then keeps, for every wrong class, the peer that
  ranks it lowest against y, so the target's cross-entropy CE(z_t, y) is at most
  every peer's (the property the paper builds the target for).
- "mean_logit": z_t = mean_i z_i, the logits' average (no label needed).

Where DML asks each peer to match every other, KDCL asks all to match one target,
so a step makes the passes of a DML step. The peers, the optimizer, the metrics and
the reported ensemble (mean of the peers' probabilities) are `CoDistillation`'s.
"""

from typing import Callable, Dict, List

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.method.codistillation import CoDistillation


def min_logit_target(logits, labels) -> tf.Tensor:
  """z_t,c = min_i (z_i,c − z_i,y), [batch, classes] in float32: KDCL-MinLogit."""
  labels = tf.cast(labels, tf.int32)
  shifted = []
  for z in logits:
    z = tf.cast(z, tf.float32)
    true_class = tf.gather(z, labels, axis=-1, batch_dims=1)
    shifted.append(z - true_class[:, tf.newaxis])
  return tf.reduce_min(tf.stack(shifted), axis=0)


def mean_logit_target(logits, labels) -> tf.Tensor:
  """z_t = mean_i z_i, [batch, classes] in float32 (`labels` unused)."""
  del labels
  return tf.add_n([tf.cast(z, tf.float32) for z in logits]) / float(len(logits))


# The ensemble logits of each `kdcl_target` (acn_tf/config/schema.py, KDCL_TARGETS).
TARGETS: Dict[str, Callable] = {"min_logit": min_logit_target,
                                "mean_logit": mean_logit_target}


def kdcl_losses(logits, labels, temperature: float, kd_weight: float,
                target: str = "min_logit") -> List[tf.Tensor]:
  """CE(z_i, y) + kd_weight · T² · KL(sg(softmax(z_t / T)) ‖ softmax(z_i / T)) for
  each peer i, per example: a list of n tensors [batch].

  The target is a fixed soft label for this step (stop-gradient): each peer's
  gradient is its own loss's, as in DML, so all peers update in one step. The KL
  is computed from log-softmax, exact for any finite logits.
  """
  target_log_probabilities = tf.stop_gradient(
      losses.tempered_log_probabilities(TARGETS[target](logits, labels), temperature))
  return [losses.cross_entropy(labels, z) + kd_weight * temperature**2
          * losses.kl_divergence_from_logs(target_log_probabilities,
                                           losses.tempered_log_probabilities(z, temperature))
          for z in logits]


@keras.saving.register_keras_serializable(package="acn_tf")
class EnsembleTargetDistillation(CoDistillation):
  """n peers trained with KDCL: labels plus one ensemble target for all.

  Compiled, saved, loaded and exported like `CoDistillation`: the peers are its
  only networks; `distillation` (ExperimentConfig.phase_b()) gives T =
  `temperature`, κ = `kd_weight` and the target `kdcl_target`.
  """

  def peer_losses(self, logits, labels) -> List[tf.Tensor]:
    """Each peer's per-example KDCL loss on one batch."""
    distillation = self.distillation
    return kdcl_losses(logits, labels, distillation.temperature, distillation.kd_weight,
                       distillation.kdcl_target)

  def real_batch_loss(self, images, labels):
    """Sum over peers of the batch mean of their KDCL losses, in training mode;
    with the logits and the per-example losses of each peer."""
    logits = self(images, training=True)
    per_classifier = self.peer_losses(logits, labels)
    total = tf.add_n([losses.global_mean(loss) for loss in per_classifier])
    return total, logits, per_classifier

  def test_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    logits = self(images, training=False)
    self.update_classifier_metrics(logits, labels, self.peer_losses(logits, labels))
    return self.metric_results(self.classifier_metrics)
