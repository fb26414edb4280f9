"""Co-distillation of n classifiers (docs/METHOD.md Phase B): independent and DML.

`CoDistillation` trains n classifiers on labels plus each other's predictions.
Its `train_step` is Phase B on the real batch; `AdversarialCoDistillation`
(acn_tf/adversarial.py) runs Phase A first and passes its divergent examples to
the same classifier update, so every method shares one code path.
"""

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Union

import keras
import tensorflow as tf

from acn_tf import losses


# Makes the label mask m from the logits of the classifier update's forward pass.
MaskFunction = Callable[[List[tf.Tensor]], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DistillationSettings:
  """The Phase B weights (docs/METHOD.md): L_i = CE + kd_weight * T^2 * KL + adv terms."""
  temperature: float = 1.0
  kd_weight: float = 1.0
  adv_weight: float = 1.0
  adv_ce_weight: float = 1.0
  # How the divergent-batch loss is averaged: "batch" = sum over kept examples
  # / batch size; "kept" = mean over the kept examples (the spec's literal reading).
  adv_normalization: str = "batch"


@keras.saving.register_keras_serializable(package="acn_tf")
class CoDistillation(keras.Model):
  """n >= 1 classifiers trained together; kd_weight = 0 trains them independently.

  `model.save("run.keras")` and `keras.saving.load_model("run.keras")` round-trip
  the networks and their weights, not the `compile()` arguments: compile the
  loaded model again and call `build_optimizers()` before training it; then
  `load_weights("run.keras")` also restores the optimizers' state.
  """

  def __init__(self, classifiers: Sequence[keras.Model], **kwargs):
    super().__init__(**kwargs)
    if not classifiers:
      raise ValueError("CoDistillation needs at least one classifier.")
    self.classifiers = list(classifiers)
    self.settings = DistillationSettings()
    num_classes = self.classifiers[0].output_shape[-1]
    top_k = min(5, num_classes)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.classifier_loss_trackers = [
        keras.metrics.Mean(name=f"c{i}_loss") for i in range(len(self.classifiers))]
    self.top1_metrics = [
        keras.metrics.SparseCategoricalAccuracy(name=f"c{i}_top1")
        for i in range(len(self.classifiers))]
    self.top5_metrics = [
        keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name=f"c{i}_top5")
        for i in range(len(self.classifiers))]
    self.ensemble_top1 = keras.metrics.SparseCategoricalAccuracy(name="ensemble_top1")
    self.divergence_tracker = keras.metrics.Mean(name="divergence")

  # -- Keras plumbing ----------------------------------------------------------

  def compile(self, optimizer, settings: DistillationSettings = DistillationSettings(),
              **kwargs):
    """`optimizer` updates all classifiers (their losses are summed; see losses.py)."""
    super().compile(optimizer=optimizer, **kwargs)
    self.settings = settings

  def get_config(self) -> dict:
    """The networks only; optimizers and settings come with `compile()`."""
    config = super().get_config()
    config["classifiers"] = [keras.saving.serialize_keras_object(classifier)
                             for classifier in self.classifiers]
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["classifiers"] = [
        keras.saving.deserialize_keras_object(classifier, custom_objects=custom_objects)
        for classifier in config["classifiers"]]
    return cls(**config)

  def get_compile_config(self) -> None:
    """None, so that a saved file holds no compile config: Keras' default
    `compile_from_config` cannot call a custom `compile()` signature (it warns
    and skips), and the settings and extra optimizers would not round-trip anyway."""
    return None

  @property
  def classifier_metrics(self) -> List[keras.metrics.Metric]:
    """What evaluation reports: losses, accuracies and divergence on real images."""
    return [self.loss_tracker, *self.classifier_loss_trackers, *self.top1_metrics,
            *self.top5_metrics, self.ensemble_top1, self.divergence_tracker]

  @property
  def metrics(self) -> List[keras.metrics.Metric]:
    """Every tracker, so that Keras resets them all at each epoch."""
    return self.classifier_metrics

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Skipped once the model and its optimizers are built (build_optimizers).

    Keras (3.15) builds compiled losses and metrics here by reducing the first
    distributed batch with MEAN, which fails under MultiWorkerMirroredStrategy
    ("Attempt to convert a value (PerReplica...)"). This model computes its own
    losses and metrics, so once it is built there is nothing left to build.
    """
    if self.built and self.optimizer is not None and self.optimizer.built:
      return
    super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

  @property
  def classifier_variables(self) -> List[tf.Variable]:
    return [v for c in self.classifiers for v in c.trainable_variables]

  def build_optimizers(self) -> None:
    """Creates optimizer slots up front: required under MirroredStrategy (docs/KERAS_NOTES.md 1)
    and before loading weights, or their state is silently skipped (docs/KERAS_NOTES.md 2)."""
    self.optimizer.build(self.classifier_variables)

  def call(self, images, training: bool = False) -> List[tf.Tensor]:
    """Logits of every classifier, in order."""
    return [classifier(images, training=training) for classifier in self.classifiers]

  # -- Steps --------------------------------------------------------------------

  def train_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    self.classifier_update(images, labels)
    return self.metric_results()

  def test_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    logits = self(images, training=False)
    per_classifier = losses.codistillation_losses(
        logits, labels, self.settings.temperature, self.settings.kd_weight)
    self.update_classifier_metrics(logits, labels, per_classifier)
    return self.metric_results(self.classifier_metrics)

  def classifier_update(self, images, labels,
                        divergent_images: Optional[tf.Tensor] = None,
                        keep_mask: Union[None, tf.Tensor, MaskFunction] = None):
    """Phase B: one update of all classifiers on the real batch and, for ACN,
    the divergent batch x̃ (already stop-gradient) with its label mask m.

    `keep_mask` is m itself, or a function that makes m from the logits of this
    update's forward pass on x̃ (ACN's mask_source "update"). Returns those
    logits and m, for the ACN's metrics (None, None without x̃).
    """
    settings = self.settings
    variables = self.classifier_variables
    divergent_logits = None
    with tf.GradientTape() as tape:
      logits = self(images, training=True)
      per_classifier = losses.codistillation_losses(
          logits, labels, settings.temperature, settings.kd_weight)
      total = tf.add_n([losses.global_mean(loss) for loss in per_classifier])
      if divergent_images is not None:
        divergent_logits = self(divergent_images, training=True)
        if callable(keep_mask):
          keep_mask = tf.stop_gradient(keep_mask(divergent_logits))
        divergent_losses = losses.codistillation_losses(
            divergent_logits, labels, settings.temperature, 1.0,
            ce_weight=settings.adv_ce_weight)
        if settings.adv_normalization == "kept":
          divergent_terms = [losses.global_mean(loss, keep_mask) for loss in divergent_losses]
        else:
          divergent_terms = [losses.global_mean(loss * keep_mask) for loss in divergent_losses]
        total += settings.adv_weight * tf.add_n(divergent_terms)
      scaled_total = self.optimizer.scale_loss(total)
    gradients = tape.gradient(scaled_total, variables)
    self.optimizer.apply(gradients, variables)
    self.update_classifier_metrics(logits, labels, per_classifier)
    return divergent_logits, keep_mask

  # -- Metrics ------------------------------------------------------------------

  def update_classifier_metrics(self, logits, labels, per_classifier_losses) -> None:
    """Per-example means of this replica (never the replica-scaled loss: docs/KERAS_NOTES.md 3)."""
    classifier_means = [losses.local_mean(loss) for loss in per_classifier_losses]
    self.loss_tracker.update_state(tf.add_n(classifier_means))
    for i, classifier_logits in enumerate(logits):
      self.classifier_loss_trackers[i].update_state(classifier_means[i])
      self.top1_metrics[i].update_state(labels, classifier_logits)
      self.top5_metrics[i].update_state(labels, classifier_logits)
    probabilities = [losses.tempered_probabilities(z, 1.0) for z in logits]
    self.ensemble_top1.update_state(labels, losses.ensemble_of(probabilities))
    self.divergence_tracker.update_state(
        tf.reduce_mean(losses.pairwise_divergence(probabilities)))

  def get_metrics_result(self) -> Dict[str, tf.Tensor]:
    """What Keras logs at an epoch's end (it reads the metrics, not the last
    step's return): the same values as `metric_results`."""
    return _logged_results(self.metrics)

  def metric_results(self, metrics=None) -> Dict[str, tf.Tensor]:
    """{name: result} of `metrics` (default: all), as a step returns them.

    Under MultiWorkerMirroredStrategy Keras (3.15) reduces step logs with
    strategy.reduce(MEAN, axis=0), which rejects scalars; there the results are
    returned with shape [1]. Epoch logs come from the metrics themselves.
    """
    results = _logged_results(metrics or self.metrics)
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
      results = {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results


def _logged_results(metrics) -> Dict[str, tf.Tensor]:
  """{name: result}, with NaN for a metric that has seen no update yet (ACN's
  Phase A metrics during warm-up): a 0 there would read as a measurement."""
  results = {}
  for metric in metrics:
    count = getattr(metric, "count", None)
    results[metric.name] = (metric.result() if count is None else tf.where(
        tf.convert_to_tensor(count) > 0, metric.result(), float("nan")))
  return results
