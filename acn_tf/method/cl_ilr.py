"""CL-ILR: collaborative learning with intermediate-level representation sharing.

G. Song, W. Chai, *Collaborative Learning for Deep Neural Networks*, NeurIPS 2018.
H heads share a trunk; each head h learns from the label and from the consensus of
the other heads, the soft target t_h = softmax(z̄_{-h} / T) of the mean of their
logits z̄_{-h} = mean_{j≠h} z_j; per example

    L = Σ_h [β CE(z_h, y) + (1 − β) T² KL(sg(t_h) ‖ p_h^T)],

β = `cl_ilr_hard_weight`, T = `cl_ilr_temperature`. The trunk's gradient is rescaled
by 1/H (backpropagation rescaling: a `GradientScale` between the trunk and each
head, acn_tf/networks/branched.py), so the shared layers get the heads' mean
gradient. docs/METHOD.md, "CL-ILR", says where this reading departs from the paper.
"""

from typing import List, Sequence

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.method.branched import BranchedCoDistillation


def consensus_targets(logits: Sequence[tf.Tensor], temperature: float) -> List[tf.Tensor]:
  """log t_h = log softmax(mean_{j≠h} z_j / T) for each head h, as constants."""
  logits = [tf.cast(z, tf.float32) for z in logits]
  total = tf.add_n(logits)
  others = float(len(logits) - 1)
  return [tf.stop_gradient(losses.tempered_log_probabilities((total - z) / others,
                                                             temperature))
          for z in logits]


def cl_ilr_losses(logits: Sequence[tf.Tensor], labels, temperature: float,
                  hard_weight: float) -> List[tf.Tensor]:
  """Per head h, per example: β CE(z_h, y) + (1 − β) T² KL(sg(t_h) ‖ p_h^T)."""
  targets = consensus_targets(logits, temperature)
  return [hard_weight * losses.cross_entropy(labels, z)
          + (1.0 - hard_weight) * temperature**2 * losses.kl_divergence_from_logs(
              target, losses.tempered_log_probabilities(z, temperature))
          for z, target in zip(logits, targets)]


@keras.saving.register_keras_serializable(package="acn_tf")
class CollaborativeLearning(BranchedCoDistillation):
  """CL-ILR on a branched network built with `scale_trunk_gradient=True`: outputs
  [z_0, ..., z_{H-1}]; its ensemble is p̄, the mean of the heads' softmax."""

  def branch_losses(self, outputs, labels) -> List[tf.Tensor]:
    return cl_ilr_losses(outputs[:self.branches], labels, self.settings.cl_ilr_temperature,
                         self.settings.cl_ilr_hard_weight)
