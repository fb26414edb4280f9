"""ONE: knowledge distillation by On-the-fly Native Ensemble.

X. Lan, X. Zhu, S. Gong, *Knowledge Distillation by On-the-Fly Native Ensemble*,
NeurIPS 2018. m branches share a trunk; a gate on the trunk's features weighs the
branches' logits into the ensemble teacher z_e = Σ_i g_i z_i; per example

    L = Σ_i CE(z_i, y) + CE(z_e, y) + T² Σ_i KL(sg(p_e^T) ‖ p_i^T),

p^T = softmax(z / T), T = `one_temperature` (3, the public code's). The teacher's
soft targets are constants in the distillation term (the public code detaches them):
the gate and the teacher learn from CE(z_e, y) alone. docs/METHOD.md, "ONE", says
where this reading departs from the paper and its code.
"""

from typing import List, Sequence

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.method.branched import BranchedCoDistillation
from acn_tf.networks import branched


def one_losses(branch_logits: Sequence[tf.Tensor], ensemble_logits: tf.Tensor, labels,
               temperature: float) -> List[tf.Tensor]:
  """ONE's loss as per-example terms: [CE(z_i, y) + T² KL(sg(p_e^T) ‖ p_i^T) for each
  branch i], then CE(z_e, y). Their sum is L above."""
  teacher = tf.stop_gradient(losses.tempered_log_probabilities(ensemble_logits, temperature))
  terms = [losses.cross_entropy(labels, z) + temperature**2 * losses.kl_divergence_from_logs(
      teacher, losses.tempered_log_probabilities(z, temperature)) for z in branch_logits]
  return terms + [losses.cross_entropy(labels, ensemble_logits)]


@keras.saving.register_keras_serializable(package="acn_tf")
class OnTheFlyNativeEnsemble(BranchedCoDistillation):
  """ONE on a gated branched network (`build_branched_network(..., with_gate=True)`):
  outputs [z_0, ..., z_{m-1}, z_e]. The ensemble it reports and exports is the
  gated teacher softmax(z_e)."""

  def branch_losses(self, outputs, labels) -> List[tf.Tensor]:
    return one_losses(outputs[:self.branches], outputs[self.branches], labels,
                      self.settings.one_temperature)

  def ensemble_probabilities(self, outputs) -> tf.Tensor:
    return losses.tempered_probabilities(outputs[self.branches], 1.0)

  @property
  def ensemble_members(self) -> List[keras.Model]:
    """The gated teacher as one classifier (images in, z_e out)."""
    return [branched.ensemble_classifier(self.network)]
