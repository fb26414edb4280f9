"""Co-distillation of n classifiers (docs/METHOD.md Phase B): independent and DML.

`CoDistillation` trains n classifiers on labels plus each other's predictions.
Its `train_step` is Phase B on the real batch. Its `classifier_update` also takes
a second, "divergent" batch x̃ with the terms Phase B asks of it: ACN
(`AdversarialCoDistillation`, acn_tf/method/adversarial.py) passes Phase A's
examples, dml_noise (`NoisyCoDistillation`, acn_tf/method/noise.py) a noisy copy of
the batch, so every method shares one code path.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.networks import batch_norm
from acn_tf.config.schema import DistillationConfig


class DivergentBatch(NamedTuple):
  """What a method hands Phase B besides the real batch: x̃ (no gradient flows
  back to it) and, when the method already has them, the classifiers'
  inference-mode logits at x̃ for the label mask. None: Phase B makes the mask
  from its own training-mode forward pass on x̃ (one pass of every classifier
  fewer). ACN's search has them only when it takes no step (K = 0)."""
  images: tf.Tensor
  logits: Optional[List[tf.Tensor]] = None


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
    self.distillation = DistillationConfig()
    self.label_restrict = True
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

  def compile(self, optimizer, distillation: DistillationConfig = DistillationConfig(),
              label_restrict: bool = True, **kwargs):
    """`optimizer` updates all classifiers (their losses are summed; see losses.py);
    `distillation` holds Phase B's weights (ExperimentConfig.phase_b());
    `label_restrict` (`ras_label_restrict`) whether a divergent batch is masked by
    its label (`keep_mask`)."""
    super().compile(optimizer=optimizer, **kwargs)
    self.distillation = distillation
    self.label_restrict = label_restrict

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
        logits, labels, self.distillation.temperature, self.distillation.kd_weight)
    self.update_classifier_metrics(logits, labels, per_classifier)
    return self.metric_results(self.classifier_metrics)

  def classifier_update(self, images, labels,
                        divergent: Optional[DivergentBatch] = None) -> None:
    """Phase B: one update of all classifiers on the real batch and, when given,
    on a divergent batch x̃ (ACN's examples after the warm-up, dml_noise's noisy
    copy) with its label mask m, made from `divergent.logits` when the caller
    has them, else from this update's own forward pass on x̃."""
    with tf.GradientTape() as tape:
      total, logits, per_classifier = self.real_batch_loss(images, labels)
      if divergent is not None:
        divergent_logits = self.divergent_forward(divergent.images)
        mask_logits = divergent.logits if divergent.logits is not None else divergent_logits
        keep_mask = tf.stop_gradient(self.keep_mask(mask_logits, labels))
        total += self.divergent_batch_loss(divergent_logits, labels, keep_mask)
      scaled_total = self.optimizer.scale_loss(total)
    self.apply_classifier_gradients(tape, scaled_total)
    self.update_classifier_metrics(logits, labels, per_classifier)
    if divergent is not None:
      self.update_divergent_metrics(mask_logits, keep_mask)

  def real_batch_loss(self, images, labels):
    """Sum over classifiers of the batch mean of CE + kd_weight T² KL on x, in
    training mode; with the logits and the per-example losses of each classifier."""
    logits = self(images, training=True)
    per_classifier = losses.codistillation_losses(
        logits, labels, self.distillation.temperature, self.distillation.kd_weight)
    total = tf.add_n([losses.global_mean(loss) for loss in per_classifier])
    return total, logits, per_classifier

  def divergent_forward(self, images) -> List[tf.Tensor]:
    """The classifiers' training-mode logits on x̃. With `divergent_batch_norm_updates`
    off, the batch norms' moving statistics are put back as the real batch's pass
    left them: x̃ is still normalised by its own moments, but test time never sees
    them."""
    if self.distillation.divergent_batch_norm_updates:
      return self(images, training=True)
    statistics = [variable for classifier in self.classifiers
                  for layer in batch_norm.batch_norms(classifier)
                  for variable in (layer.moving_mean, layer.moving_variance)]
    # A tf.function runs reads and writes of one variable in program order.
    before = [tf.identity(variable.value) for variable in statistics]
    logits = self(images, training=True)
    for variable, value in zip(statistics, before):
      variable.assign(value)
    return logits

  def keep_mask(self, logits, labels) -> tf.Tensor:
    """m = [argmax p̄(x̃) = y] (all ones when `label_restrict` is off), from the
    logits the caller passes: the divergent batch's own, or Phase B's forward
    pass on the same x̃ (batch statistics of x̃)."""
    return losses.label_mask(logits, labels, self.label_restrict)

  def divergent_batch_loss(self, divergent_logits, labels, keep_mask) -> tf.Tensor:
    """adv_weight Σ_i (adv_kd_weight T² KL to the peers + adv_ce_weight CE) on x̃,
    summed over the kept examples and divided by the batch size: the term is
    scaled by the kept share (the mean over kept examples collapses training from
    scratch, docs/INTERPRETATION.md)."""
    distillation = self.distillation
    per_classifier = losses.codistillation_losses(
        divergent_logits, labels, distillation.temperature, distillation.adv_kd_weight,
        ce_weight=distillation.adv_ce_weight)
    terms = [losses.global_mean(loss * keep_mask) for loss in per_classifier]
    return distillation.adv_weight * tf.add_n(terms)

  def apply_classifier_gradients(self, tape: tf.GradientTape,
                                 scaled_total: tf.Tensor) -> None:
    """One optimizer step of every classifier on the loss that `tape` recorded,
    scaled (inside the tape) by `optimizer.scale_loss`."""
    variables = self.classifier_variables
    self.optimizer.apply(tape.gradient(scaled_total, variables), variables)

  # -- Metrics ------------------------------------------------------------------

  def update_classifier_metrics(self, logits, labels, per_classifier_losses) -> None:
    """Per-example means of this replica (never the replica-scaled loss: docs/KERAS_NOTES.md 3)."""
    classifier_means = [losses.local_mean(loss) for loss in per_classifier_losses]
    self.loss_tracker.update_state(tf.add_n(classifier_means))
    for i, classifier_logits in enumerate(logits):
      self.classifier_loss_trackers[i].update_state(classifier_means[i])
      self.top1_metrics[i].update_state(labels, classifier_logits)
      self.top5_metrics[i].update_state(labels, classifier_logits)
    self.ensemble_top1.update_state(labels, losses.ensemble_probabilities(logits))
    self.divergence_tracker.update_state(tf.reduce_mean(losses.reported_divergence(logits)))

  def update_divergent_metrics(self, divergent_logits, keep_mask) -> None:
    """What a model that trains on a divergent batch records of it (ACN and
    dml_noise: Div at x̃ and the kept fraction); DML trains on none."""
    del divergent_logits, keep_mask  # A body AutoGraph can convert, not a docstring alone.

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
