"""What ONE and CL-ILR share: m classifiers that are the branches of one network.

`BranchedCoDistillation` is `CoDistillation` (acn_tf/method/codistillation.py) whose
classifiers share a trunk: one forward pass of the branched network
(acn_tf/networks/branched.py) gives every branch's logits, one optimizer updates all
its weights, and `classifiers` are the branch classifiers (trunk + branch i) that
evaluation reports and export writes. A method says what its loss is
(`branch_losses`) and what its ensemble predicts (`ensemble_probabilities`); the step,
the metrics, saving and loading are here.
"""

from typing import List, Sequence

import keras
import tensorflow as tf

from acn_tf.config.schema import BranchedConfig
from acn_tf.method import losses
from acn_tf.method.codistillation import CoDistillation
from acn_tf.networks import branched


class BranchedCoDistillation(CoDistillation):
  """The m branches of `network` trained together by one method's loss.

  `network`: a branched network, images in, [z_0, ..., z_{m-1}] (and, for a method
  with a gate, the ensemble's logits after them) out. Saved and loaded like
  `CoDistillation`: `get_config` holds the network.
  """

  def __init__(self, network: keras.Model, branches: int, **kwargs):
    super().__init__(branched.branch_classifiers(network, branches), **kwargs)
    self.network = network
    self.branches = branches
    self.settings = BranchedConfig()
    self.steps_per_epoch = 0

  def compile(self, optimizer, branched: BranchedConfig = BranchedConfig(),
              steps_per_epoch: int = 0, **kwargs):
    """`optimizer` updates the whole network; `branched` holds the method's settings
    (ExperimentConfig.branched: temperatures, CL-ILR's β, ONE's ramp-up);
    `steps_per_epoch` turns the optimizer's step count into epochs, for a setting
    that counts them (ONE's ramp-up)."""
    super().compile(optimizer=optimizer, **kwargs)
    self.settings = branched
    self.steps_per_epoch = steps_per_epoch

  def get_config(self) -> dict:
    config = keras.Model.get_config(self)
    config["network"] = keras.saving.serialize_keras_object(self.network)
    config["branches"] = self.branches
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["network"] = keras.saving.deserialize_keras_object(
        config["network"], custom_objects=custom_objects)
    return cls(**config)

  @property
  def classifier_variables(self) -> List[tf.Variable]:
    """The network's trainable variables, each once (the trunk is every branch's)."""
    return list(self.network.trainable_variables)

  def call(self, images, training: bool = False) -> List[tf.Tensor]:
    """Every output of the network: the branches' logits, then any ensemble's."""
    return list(self.network(images, training=training))

  # -- What a method defines ---------------------------------------------------------

  def branch_losses(self, outputs: Sequence[tf.Tensor], labels) -> List[tf.Tensor]:
    """Per-example loss terms [batch], one per branch and then any the ensemble adds;
    the training loss is the sum of their batch means."""
    raise NotImplementedError(f"{type(self).__name__} does not define its loss.")

  def ensemble_probabilities(self, outputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """What the ensemble predicts: by default p̄, the mean of the branches' softmax."""
    return losses.ensemble_probabilities(outputs[:self.branches])

  @property
  def ensemble_members(self) -> List[keras.Model]:
    """The classifiers whose p̄ is the ensemble's prediction, for export: by default
    the branch classifiers."""
    return list(self.classifiers)

  # -- Steps --------------------------------------------------------------------------

  def train_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
      outputs = self(images, training=True)
      terms = self.branch_losses(outputs, labels)
      total = tf.add_n([losses.global_mean(term) for term in terms])
      scaled_total = self.optimizer.scale_loss(total)
    self.apply_classifier_gradients(tape, scaled_total)
    self.update_branch_metrics(outputs, labels, terms)
    return self.metric_results()

  def test_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    outputs = self(images, training=False)
    self.update_branch_metrics(outputs, labels, self.branch_losses(outputs, labels))
    return self.metric_results(self.classifier_metrics)

  def update_branch_metrics(self, outputs, labels, terms) -> None:
    """loss: the per-example mean of the whole loss; c{i}_loss: branch i's term;
    accuracies per branch and of the ensemble; Div among the branches."""
    means = [losses.local_mean(term) for term in terms]
    self.loss_tracker.update_state(tf.add_n(means))
    logits = outputs[:self.branches]
    for i, branch_logits in enumerate(logits):
      self.classifier_loss_trackers[i].update_state(means[i])
      self.top1_metrics[i].update_state(labels, branch_logits)
      self.top5_metrics[i].update_state(labels, branch_logits)
    self.ensemble_top1.update_state(labels, self.ensemble_probabilities(outputs))
    self.divergence_tracker.update_state(tf.reduce_mean(losses.reported_divergence(logits)))

  def classifier_update(self, images, labels, divergent=None) -> None:
    raise TypeError(f"{type(self).__name__} trains on the real batch only (train_step); "
                    "it has no divergent batch.")
