"""ONE: knowledge distillation by On-the-fly Native Ensemble.

X. Lan, X. Zhu, S. Gong, *Knowledge Distillation by On-the-Fly Native Ensemble*,
NeurIPS 2018. m branches share a trunk; a gate on the trunk's features weighs the
branches' logits into the ensemble teacher z_e = Σ_i g_i z_i; per example

    L = Σ_i CE(z_i, y) + CE(z_e, y) + w T² Σ_i KL(sg(p_e^T) ‖ p_i^T),

p^T = softmax(z / T), T = `one_temperature` (3, the public code's), w = 1 or, with
`one_rampup_epochs`, the public code's ramp-up (`rampup_weight`). The teacher's
soft targets are constants in the distillation term (the public code detaches them):
the gate and the teacher learn from CE(z_e, y) alone. docs/METHOD.md, "ONE", says
where this reading departs from the paper and its code.
"""

from typing import List, Sequence

import keras
import tensorflow as tf

from acn_tf.config.schema import BranchedConfig
from acn_tf.method import losses
from acn_tf.method.branched import BranchedCoDistillation
from acn_tf.networks import branched


def one_losses(branch_logits: Sequence[tf.Tensor], ensemble_logits: tf.Tensor, labels,
               temperature: float, distillation_weight=1.0) -> List[tf.Tensor]:
  """ONE's loss as per-example terms: [CE(z_i, y) + w T² KL(sg(p_e^T) ‖ p_i^T) for
  each branch i], then CE(z_e, y). Their sum is L above; w is the ramp-up's weight
  (`rampup_weight`), 1 in the paper's loss."""
  teacher = tf.stop_gradient(losses.tempered_log_probabilities(ensemble_logits, temperature))
  terms = [losses.cross_entropy(labels, z)
           + distillation_weight * temperature**2 * losses.kl_divergence_from_logs(
               teacher, losses.tempered_log_probabilities(z, temperature))
           for z in branch_logits]
  return terms + [losses.cross_entropy(labels, ensemble_logits)]


def rampup_weight(epoch, rampup_epochs: int):
  """The public code's sigmoid ramp-up of the distillation weight (from the mean
  teacher's code): exp(−5 (1 − e / E)²) at epoch e (from 0) of E, 1 from epoch E on,
  and 1 throughout when E = 0 (the paper's loss)."""
  if not rampup_epochs:
    return tf.constant(1.0)
  progress = tf.minimum(tf.cast(epoch, tf.float32), float(rampup_epochs)) / rampup_epochs
  return tf.exp(-5.0 * (1.0 - progress) ** 2)


@keras.saving.register_keras_serializable(package="acn_tf")
class OnTheFlyNativeEnsemble(BranchedCoDistillation):
  """ONE on a gated branched network (`build_branched_network(..., with_gate=True)`):
  outputs [z_0, ..., z_{m-1}, z_e]. The ensemble it reports and exports is the
  gated teacher softmax(z_e)."""

  def compile(self, optimizer, branched: BranchedConfig = BranchedConfig(),
              steps_per_epoch: int = 0, **kwargs):
    """As `BranchedCoDistillation.compile`; a ramp-up needs `steps_per_epoch`."""
    if branched.one_rampup_epochs and steps_per_epoch < 1:
      raise ValueError(f"one_rampup_epochs={branched.one_rampup_epochs} counts epochs: "
                       "compile(..., steps_per_epoch=N) with the batches of an epoch.")
    super().compile(optimizer, branched=branched, steps_per_epoch=steps_per_epoch, **kwargs)

  def distillation_weight(self) -> tf.Tensor:
    """The ramp-up's weight at this step's epoch (1 without a ramp-up)."""
    rampup = self.settings.one_rampup_epochs
    if not rampup:
      return rampup_weight(0, 0)
    return rampup_weight(self.optimizer.iterations // self.steps_per_epoch, rampup)

  def branch_losses(self, outputs, labels) -> List[tf.Tensor]:
    return one_losses(outputs[:self.branches], outputs[self.branches], labels,
                      self.settings.one_temperature, self.distillation_weight())

  def ensemble_probabilities(self, outputs) -> tf.Tensor:
    return losses.tempered_probabilities(outputs[self.branches], 1.0)

  @property
  def ensemble_members(self) -> List[keras.Model]:
    """The gated teacher as one classifier (images in, z_e out)."""
    return [branched.ensemble_classifier(self.network)]
