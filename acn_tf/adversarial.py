"""Adversarial Co-distillation Networks: Phase A (generator, discriminator, search)
before the co-distillation update of `CoDistillation` (docs/METHOD.md).
"""

import dataclasses
from typing import List, NamedTuple, Optional, Sequence

import keras
import tensorflow as tf

from acn_tf import generators, losses
from acn_tf.search import (Objective, SearchSettings, divergence_objective,
                            group_divergence, label_mask, objective_total,
                            restricted_adversarial_search)
from acn_tf.models import CoDistillation, DistillationSettings


@dataclasses.dataclass(frozen=True)
class AdversarialSettings:
  """Phase A hyperparameters (names as in docs/METHOD.md)."""
  wrc_alpha: float = 0.1
  noise_channels: int = 4
  gan_weight: float = 1.0
  keep_label_weight: float = 1.0
  divergence_weight: float = 1.0
  generator_updates: int = 1
  discriminator_updates: int = 1
  search: SearchSettings = SearchSettings()


class GeneratorPass(NamedTuple):
  """What one generator update computed at x̃0, with the generator's weights
  before the update and the classifiers frozen: x̃0, the classifiers'
  inference-mode logits there, and the gradient of the search objective at x̃0
  (a positive multiple of it for "generator_loss"; None when K = 0)."""
  images: tf.Tensor
  logits: List[tf.Tensor]
  start_gradient: Optional[tf.Tensor]


class InferenceExamples(NamedTuple):
  """x̃0 and x̃ of a batch with nothing trained, the inference-mode keep mask at x̃,
  and the classifiers' inference-mode logits at x, x̃0 and x̃."""
  generated: tf.Tensor
  searched: tf.Tensor
  keep_mask: tf.Tensor
  real_logits: List[tf.Tensor]
  generated_logits: List[tf.Tensor]
  searched_logits: List[tf.Tensor]


@keras.saving.register_keras_serializable(package="acn_tf")
class AdversarialCoDistillation(CoDistillation):
  """n classifiers, a generator g and (unless gan_weight = 0) a discriminator d.

  One `train_step` = Phase A (generator update, discriminator update, search)
  then Phase B on the real batch and the divergent batch. Before
  `adv_warmup_epochs` (see `AdversarialWarmup`) the step is plain DML.
  As for `CoDistillation`, a loaded `.keras` file must be compiled again to train.
  """

  def __init__(self, classifiers: Sequence[keras.Model], generator: keras.Model,
               discriminator: Optional[keras.Model] = None, **kwargs):
    super().__init__(classifiers, **kwargs)
    self.generator = generator
    self.discriminator = discriminator
    self.adversarial = AdversarialSettings()
    self.adversarial_phase_active = True
    self.generator_loss_tracker = keras.metrics.Mean(name="g_loss")
    self.discriminator_loss_tracker = keras.metrics.Mean(name="d_loss")
    self.discriminator_real_accuracy = keras.metrics.Mean(name="d_real_accuracy")
    self.discriminator_fake_accuracy = keras.metrics.Mean(name="d_fake_accuracy")
    self.generated_divergence = keras.metrics.Mean(name="divergence_x0")
    self.searched_divergence = keras.metrics.Mean(name="divergence_search")
    self.kept_fraction = keras.metrics.Mean(name="kept_fraction")

  def compile(self, optimizer, generator_optimizer, discriminator_optimizer=None,
              settings: DistillationSettings = DistillationSettings(),
              adversarial: AdversarialSettings = AdversarialSettings(), **kwargs):
    """Three optimizers, one per player; each touches only its own variables."""
    super().compile(optimizer, settings=settings, **kwargs)
    if (self.discriminator is None) != (discriminator_optimizer is None):
      raise ValueError("Give a discriminator_optimizer exactly when the model has a "
                       "discriminator (gan_weight > 0).")
    self.generator_optimizer = generator_optimizer
    self.discriminator_optimizer = discriminator_optimizer
    self.adversarial = adversarial

  def get_config(self) -> dict:
    config = super().get_config()
    config["generator"] = keras.saving.serialize_keras_object(self.generator)
    config["discriminator"] = (keras.saving.serialize_keras_object(self.discriminator)
                               if self.discriminator is not None else None)
    return config

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    for network in ("generator", "discriminator"):
      if config.get(network) is not None:
        config[network] = keras.saving.deserialize_keras_object(
            config[network], custom_objects=custom_objects)
    return super().from_config(config, custom_objects=custom_objects)

  @property
  def metrics(self) -> List[keras.metrics.Metric]:
    return [*super().metrics, self.generator_loss_tracker,
            self.discriminator_loss_tracker, self.discriminator_real_accuracy,
            self.discriminator_fake_accuracy, self.generated_divergence,
            self.searched_divergence, self.kept_fraction]

  def build_optimizers(self) -> None:
    super().build_optimizers()
    self.generator_optimizer.build(self.generator.trainable_variables)
    if self.discriminator is not None:
      self.discriminator_optimizer.build(self.discriminator.trainable_variables)

  def train_step(self, data):
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    if self.adversarial_phase_active:
      divergent_images, keep_mask, divergent_logits = self.adversarial_phase(images, labels)
      if keep_mask is None:  # mask_source "update": m from Phase B's forward pass.
        search = self.adversarial.search
        keep_mask = lambda logits: label_mask(logits, labels, search.label_restrict)
      update_logits, keep_mask = self.classifier_update(images, labels, divergent_images,
                                                        keep_mask)
      self.update_search_metrics(
          divergent_logits if divergent_logits is not None else update_logits, keep_mask)
    else:
      self.classifier_update(images, labels)
    return self.metric_results()

  # -- Phase A --------------------------------------------------------------------

  def generate(self, images, training: bool = False, noise=None) -> tf.Tensor:
    """x̃0 = WRC(x, g([x, noise])), with fresh Gaussian noise unless given."""
    if noise is None:
      shape = tf.concat([tf.shape(images)[:-1], [self.adversarial.noise_channels]], 0)
      noise = tf.random.normal(shape)
    generated = self.generator([images, noise], training=training)
    return generators.weakly_residual_connection(images, generated,
                                                 self.adversarial.wrc_alpha)

  def inference_examples(self, images, labels, noise) -> InferenceExamples:
    """Phase A's examples for a batch without training anything: x̃0 from `noise`,
    the search from it, and the mask of a separate inference-mode pass whatever
    `mask_source` training uses. What the health figures and pictures show."""
    images = tf.cast(images, tf.float32)
    generated = self.generate(images, training=False, noise=noise)
    generated_logits = self(generated, training=False)
    search = dataclasses.replace(self.adversarial.search, mask_source="search")
    searched, keep_mask, searched_logits = restricted_adversarial_search(
        self.classifiers, images, labels, generated, search,
        start_logits=generated_logits, objective=self.search_objective(labels))
    return InferenceExamples(generated, searched, keep_mask, self(images, training=False),
                             generated_logits, searched_logits)

  def adversarial_phase(self, images, labels):
    """Generator update(s), discriminator update(s), then the search from x̃0.

    Returns the divergent batch x̃ (no gradient flows back), its keep mask and
    the inference-mode logits on x̃ (both None when Phase B makes the mask).
    The last generator forward pass at x̃0 is reused by the discriminator and
    the search: its logits and its divergence gradient are those of the
    search's start, because no classifier has moved since.
    """
    images = tf.cast(images, tf.float32)
    for _ in range(self.adversarial.generator_updates):
      generated = self.generator_update(images, labels)
    if self.discriminator is not None:
      for _ in range(self.adversarial.discriminator_updates):
        self.discriminator_update(images, generated.images)
    return restricted_adversarial_search(
        self.classifiers, images, labels, generated.images, self.adversarial.search,
        start_gradient=generated.start_gradient, start_logits=generated.logits,
        objective=self.search_objective(labels))

  def search_objective(self, labels) -> Objective:
    """What the search ascends, by `SearchSettings.objective`: Div (the spec), or
    -L_g, the generator's own objective continued in pixel space."""
    settings = self.adversarial.search
    if settings.objective == "divergence":
      return divergence_objective(self.classifiers, settings)

    def negative_generator_loss(images):
      per_example, _, logits = self.generator_loss(images, labels)
      return -per_example, logits

    return negative_generator_loss

  def update_search_metrics(self, divergent_logits, keep_mask) -> None:
    """Div at x̃ and the fraction the label restriction keeps."""
    searched = losses.reported_divergence([tf.stop_gradient(z) for z in divergent_logits])
    self.searched_divergence.update_state(tf.reduce_mean(searched))
    self.kept_fraction.update_state(tf.reduce_mean(keep_mask))

  def generator_loss(self, generated, labels):
    """Per-example L_g = -divergence_weight * D + keep_label_weight * CE(p̄, y)
    + gan_weight * NS-GAN at `generated`, with D and the logits; D is what
    Phase A maximises (`SearchSettings.divergence`), not necessarily the Div
    that metrics report. Classifiers and d run in inference mode: no batch-norm
    statistics move, and examples do not see each other."""
    settings = self.adversarial
    divergence, logits = group_divergence(self.classifiers, generated, settings.search)
    per_example = (-settings.divergence_weight * divergence + settings.keep_label_weight *
                   losses.ensemble_cross_entropy(logits, labels))
    if self.discriminator is not None and settings.gan_weight:
      fake_logits = self.discriminator(generated, training=False)
      per_example += settings.gan_weight * losses.generator_adversarial_loss(fake_logits)
    return per_example, divergence, logits

  def generator_update(self, images, labels) -> GeneratorPass:
    """One step of g on the batch mean of L_g; only g's variables move.

    The same backward pass also gives the search's first gradient at x̃0, so
    the search does not run the classifiers there again. For the spec's Div
    objective that is a second gradient of the same (persistent) tape: one more
    backward pass through the classifiers. For "generator_loss" it is the
    gradient of L_g at x̃0, which the generator's own gradient passes through.
    """
    settings = self.adversarial
    search = settings.search
    hand_over = search.steps > 0
    along_generator_loss = search.objective == "generator_loss"
    variables = self.generator.trainable_variables
    with tf.GradientTape(persistent=hand_over and not along_generator_loss) as tape:
      start = self.generate(images, training=True)
      per_example, divergence, logits = self.generator_loss(start, labels)
      loss = losses.global_mean(per_example)
      scaled_loss = self.generator_optimizer.scale_loss(loss)
      if hand_over and not along_generator_loss:
        divergence_total = objective_total(divergence)
    start_gradient = None
    if hand_over and along_generator_loss:
      *gradients, loss_gradient = tape.gradient(scaled_loss, [*variables, start])
      # Ascending -L_g; the positive factors (1/batch, loss scale) leave the sign
      # alone. An overflowed loss scale (float16) gives no step, not NaN images.
      start_gradient = tf.where(tf.math.is_finite(loss_gradient), -loss_gradient, 0.0)
    else:
      gradients = tape.gradient(scaled_loss, variables)
      if hand_over:
        start_gradient = tape.gradient(divergence_total, start)
    del tape
    self.generator_optimizer.apply(gradients, variables)
    self.generator_loss_tracker.update_state(losses.local_mean(per_example))
    self.generated_divergence.update_state(
        tf.reduce_mean(losses.reported_divergence(logits)))
    return GeneratorPass(tf.stop_gradient(start), [tf.stop_gradient(z) for z in logits],
                         start_gradient)

  def discriminator_update(self, images, start) -> None:
    """BCE(d(x), real) + BCE(d(sg(x̃0)), fake)."""
    variables = self.discriminator.trainable_variables
    with tf.GradientTape() as tape:
      real_logits = self.discriminator(images, training=True)
      fake_logits = self.discriminator(start, training=True)
      per_example = losses.discriminator_loss(real_logits, fake_logits)
      loss = losses.global_mean(per_example)
      scaled_loss = self.discriminator_optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, variables)
    self.discriminator_optimizer.apply(gradients, variables)
    self.discriminator_loss_tracker.update_state(losses.local_mean(per_example))
    self.discriminator_real_accuracy.update_state(
        tf.reduce_mean(tf.cast(real_logits > 0, tf.float32)))
    self.discriminator_fake_accuracy.update_state(
        tf.reduce_mean(tf.cast(fake_logits < 0, tf.float32)))


class AdversarialWarmup(keras.callbacks.Callback):
  """Plain DML before `warmup_epochs`, ACN after: divergence between untrained
  classifiers is noise. Switching retraces the train function once."""

  def __init__(self, warmup_epochs: int):
    super().__init__()
    self.warmup_epochs = warmup_epochs

  def on_epoch_begin(self, epoch, logs=None):
    active = epoch >= self.warmup_epochs
    if active != self.model.adversarial_phase_active:
      self.model.adversarial_phase_active = active
      self.model.make_train_function(force=True)


# -- Construction from a config --------------------------------------------------------


def adversarial_settings(config) -> AdversarialSettings:
  return AdversarialSettings(
      wrc_alpha=config.wrc_alpha, noise_channels=config.noise_channels,
      gan_weight=config.gan_weight, keep_label_weight=config.keep_label_weight,
      divergence_weight=config.divergence_weight,
      generator_updates=config.generator_updates,
      discriminator_updates=config.discriminator_updates,
      search=SearchSettings(
          steps=config.ras_steps, step_size=config.ras_step_size,
          epsilon=config.ras_epsilon, temperature=config.divergence_temperature,
          divergence=config.divergence, label_restrict=config.ras_label_restrict,
          mask_source=config.ras_mask_source, objective=config.ras_objective))


def build_adversarial_model(config, info, classifiers) -> AdversarialCoDistillation:
  """Generator and (when gan_weight > 0) discriminator for `info`'s image shape."""
  keras.utils.set_random_seed(config.seed * 1000 + 999)
  generator = generators.build_generator(
      info.image_shape, config.noise_channels, config.generator_filters,
      config.generator_blocks)
  discriminator = None
  if config.gan_weight > 0:
    discriminator = generators.build_discriminator(
        info.image_shape, config.discriminator_filters, config.spectral_norm)
  return AdversarialCoDistillation(classifiers, generator, discriminator,
                                   name="adversarial_codistillation")


def compile_arguments(config) -> dict:
  """The optimizers and Phase A settings that `compile()` takes beyond DML's."""
  def adam(learning_rate):
    optimizer = keras.optimizers.Adam(learning_rate, beta_1=config.adversarial_beta_1)
    if config.mixed_precision == "mixed_float16":  # float16 gradients underflow.
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer

  return dict(
      generator_optimizer=adam(config.generator_learning_rate),
      discriminator_optimizer=(adam(config.discriminator_learning_rate)
                               if config.gan_weight > 0 else None),
      adversarial=adversarial_settings(config))
