"""Adversarial Co-distillation Networks: Phase A (generator, discriminator, search)
before the co-distillation update of `CoDistillation` (docs/METHOD.md).
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.networks import generators
from acn_tf.config.schema import AdversarialConfig, DistillationConfig
from acn_tf.networks.folding import InferenceNetworks
from acn_tf.method.codistillation import CoDistillation, DivergentBatch
from acn_tf.method.search import (finite_or_zero, group_divergence, inference_logits,
                                  restricted_adversarial_search, scaled_for_float16)


class GeneratorPass(NamedTuple):
  """What one generator update computed at x̃0, with the generator's weights
  before the update and the classifiers frozen: x̃0, the classifiers'
  inference-mode logits there, and a positive multiple of the gradient of D at
  x̃0 (None when K = 0): the search uses only its sign."""
  images: tf.Tensor
  logits: List[tf.Tensor]
  start_gradient: Optional[tf.Tensor]


class GeneratorLossTerms(NamedTuple):
  """L_g at x̃0 in parts, per example: the divergence D the generator raises,
  the other terms with their weights (None when every weight is zero), and
  the classifiers' inference-mode logits."""
  divergence: tf.Tensor
  others: Optional[tf.Tensor]
  logits: List[tf.Tensor]

  def total(self, divergence_weight: float) -> tf.Tensor:
    """L_g = -divergence_weight * D + the other terms."""
    total = -divergence_weight * self.divergence
    return total if self.others is None else total + self.others


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
  """n classifiers, a generator g and (unless gan_weight = 0) a discriminator d;
  without g (the "no generator" ablation) x̃0 = x and there is no d either.

  One `train_step` = Phase A (generator update, discriminator update, search)
  then Phase B on the real batch and the divergent batch. The model carries its
  warm-up as an optimizer carries its learning-rate schedule: for the first
  `warmup_steps` steps of the classifiers' optimizer (compile; builders give it
  adv_warmup_epochs x steps per epoch) the step is plain DML, since divergence
  between untrained classifiers is noise. A plain `fit` does both phases, and a
  run restored from a checkpoint continues in the phase its optimizer's step
  count is in (`make_train_function`).
  As for `CoDistillation`, a loaded `.keras` file must be compiled again to train.
  """

  def __init__(self, classifiers: Sequence[keras.Model], generator: Optional[keras.Model],
               discriminator: Optional[keras.Model] = None, **kwargs):
    super().__init__(classifiers, **kwargs)
    self.generator = generator
    self.discriminator = discriminator
    self.adversarial = AdversarialConfig()
    self._inference_networks = InferenceNetworks(self.classifiers)
    self.warmup_steps = 0
    # The phase of the step being traced or run (True: Phase A, then Phase B).
    self.adversarial_phase_active = True
    self.generator_loss_tracker = keras.metrics.Mean(name="g_loss")
    self.discriminator_loss_tracker = keras.metrics.Mean(name="d_loss")
    self.discriminator_real_accuracy = keras.metrics.Mean(name="d_real_accuracy")
    self.discriminator_fake_accuracy = keras.metrics.Mean(name="d_fake_accuracy")
    self.generated_divergence = keras.metrics.Mean(name="divergence_x0")
    self.searched_divergence = keras.metrics.Mean(name="divergence_search")
    self.kept_fraction = keras.metrics.Mean(name="kept_fraction")

  def compile(self, optimizer, generator_optimizer, discriminator_optimizer=None,
              distillation: DistillationConfig = DistillationConfig(),
              adversarial: AdversarialConfig = AdversarialConfig(),
              warmup_steps: int = 0, **kwargs):
    """Three optimizers, one per player; each touches only its own variables.
    The first `warmup_steps` steps of `optimizer` are plain DML."""
    if warmup_steps < 0:
      raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    super().compile(optimizer, distillation=distillation,
                    label_restrict=adversarial.search.ras_label_restrict, **kwargs)
    if (self.discriminator is None) != (discriminator_optimizer is None):
      raise ValueError("Give a discriminator_optimizer exactly when the model has a "
                       "discriminator (gan_weight > 0).")
    if (self.generator is None) != (generator_optimizer is None):
      raise ValueError("Give a generator_optimizer exactly when the model has a "
                       "generator (use_generator).")
    if self.generator is None and self.discriminator is not None:
      raise ValueError("A discriminator needs a generator to judge.")
    self.generator_optimizer = generator_optimizer
    self.discriminator_optimizer = discriminator_optimizer
    self.adversarial = adversarial
    self.warmup_steps = int(warmup_steps)

  def get_config(self) -> dict:
    config = super().get_config()
    config["generator"] = (keras.saving.serialize_keras_object(self.generator)
                           if self.generator is not None else None)
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
    if self.generator is not None:
      self.generator_optimizer.build(self.generator.trainable_variables)
    if self.discriminator is not None:
      self.discriminator_optimizer.build(self.discriminator.trainable_variables)

  def make_train_function(self, force: bool = False):
    """One train function per phase, chosen at every call by the step count of
    the classifiers' optimizer (saved with it in every checkpoint, so a resumed
    run continues in its phase, mid-epoch too). Each phase's function is traced
    once, with `adversarial_phase_active` fixed for its trace: the graphs are
    those of a model that only ever runs that phase. With steps_per_execution
    k > 1 a call of k steps runs in the phase of its first step."""
    if self.train_function is not None and not force:
      return self.train_function
    phase_functions = {}

    def train_function(iterator):
      active = self.in_adversarial_phase()
      if active not in phase_functions:
        super(AdversarialCoDistillation, self).make_train_function(force=True)
        phase_functions[active] = self.train_function
        self.train_function = train_function
      self.adversarial_phase_active = active  # Read when the call traces.
      return phase_functions[active](iterator)

    self.train_function = train_function
    return train_function

  def in_adversarial_phase(self) -> bool:
    """Whether the next step is past the warm-up (a read of the step count)."""
    return (self.warmup_steps == 0 or
            int(self.optimizer.iterations.numpy()) >= self.warmup_steps)

  def train_step(self, data):
    """Phase A (generator, discriminator, search), then Phase B on x and x̃;
    plain DML in the warm-up."""
    images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    if not self.adversarial_phase_active:  # Warm-up: plain DML.
      self.classifier_update(images, labels)
      return self.metric_results()
    divergent = self.adversarial_phase(images, labels)
    self.classifier_update(images, labels, divergent)
    return self.metric_results()

  def adversarial_phase(self, images, labels) -> DivergentBatch:
    """Phase A: generator update(s), discriminator update(s), then the search
    from the last generator update's x̃0 (from x without a generator). Returns x̃,
    with no gradient to it."""
    images = tf.cast(images, tf.float32)
    if self.generator is None:
      start = self.start_at_real(images)
    else:
      for _ in range(self.adversarial.generator_updates):
        start = self.generator_update(images, labels)
    if self.discriminator is not None:
      for _ in range(self.adversarial.discriminator_updates):
        self.discriminator_update(images, start.images)
    return self.search(images, start)

  # -- Phase A --------------------------------------------------------------------

  def generate(self, images, training: bool = False, noise=None) -> tf.Tensor:
    """x̃0 = WRC(x, g([x, noise])), with fresh Gaussian noise unless given;
    x itself without a generator."""
    if self.generator is None:
      return images
    if noise is None:
      shape = tf.concat([tf.shape(images)[:-1], [self.adversarial.noise_channels]], 0)
      noise = tf.random.normal(shape)
    generated = self.generator([images, noise], training=training)
    return generators.weakly_residual_connection(images, generated,
                                                 self.adversarial.wrc_alpha)

  def inference_examples(self, images, labels, noise) -> InferenceExamples:
    """Phase A's examples for a batch without training anything: x̃0 from `noise`,
    the search from it, and the mask of an inference-mode pass at x̃ (training
    takes it from Phase B's forward pass). What the health figures and pictures
    show."""
    images = tf.cast(images, tf.float32)
    classifiers = self.phase_a_classifiers()
    generated = self.generate(images, training=False, noise=noise)
    generated_logits = inference_logits(classifiers, generated)
    searched, searched_logits = restricted_adversarial_search(
        classifiers, images, generated, self.adversarial, start_logits=generated_logits)
    if searched_logits is None:
      searched_logits = inference_logits(classifiers, searched)
    keep_mask = losses.label_mask(searched_logits, labels,
                                  self.adversarial.search.ras_label_restrict)
    return InferenceExamples(generated, searched, keep_mask,
                             inference_logits(classifiers, images), generated_logits,
                             searched_logits)

  def search(self, images, start: GeneratorPass) -> DivergentBatch:
    """x̃ = RAS(x̃0), starting from what the last generator update computed at
    x̃0: no classifier has moved since, so its logits and gradient are exact."""
    return restricted_adversarial_search(
        self.phase_a_classifiers(), images, start.images, self.adversarial,
        start_gradient=start.start_gradient, start_logits=start.logits)

  def phase_a_classifiers(self) -> List[keras.Model]:
    """The classifiers as Phase A's inference passes run them: with each batch
    norm folded into the convolution before it (acn_tf/networks/folding.py; the same
    function to round-off, fewer ops) unless `fold_batch_norm` is off. A method,
    not a property: Keras saves the networks its attributes return
    (docs/KERAS_NOTES.md 6)."""
    if self.adversarial.fold_batch_norm:
      return self._inference_networks.folded
    return self.classifiers

  def update_divergent_metrics(self, divergent_logits, keep_mask) -> None:
    """Div at x̃ and the fraction the label restriction keeps."""
    searched = losses.reported_divergence([tf.stop_gradient(z) for z in divergent_logits])
    self.searched_divergence.update_state(tf.reduce_mean(searched))
    self.kept_fraction.update_state(tf.reduce_mean(keep_mask))

  def generator_loss(self, generated, labels):
    """Per-example L_g = -divergence_weight * D + keep_label_weight * CE(p̄, y)
    + gan_weight * NS-GAN at `generated`, with D and the logits; D is what
    Phase A maximises (`divergence` at `divergence_temperature`), not
    necessarily the Div that metrics report. Classifiers and d run in inference
    mode: no batch-norm statistics move, and examples do not see each other."""
    terms = self.generator_loss_terms(generated, labels)
    return terms.total(self.adversarial.divergence_weight), terms.divergence, terms.logits

  def generator_loss_terms(self, generated, labels) -> GeneratorLossTerms:
    """L_g's divergence D and the rest of it, per example (see generator_loss).
    A term whose weight is zero is left out, not multiplied by zero: its
    gradient would still be back-propagated through its network."""
    settings = self.adversarial
    divergence, logits = group_divergence(self.phase_a_classifiers(), generated, settings)
    others = []
    if settings.keep_label_weight:
      others.append(settings.keep_label_weight *
                    losses.ensemble_cross_entropy(logits, labels))
    if self.discriminator is not None and settings.gan_weight:
      fake_logits = self.discriminator(generated, training=False)
      others.append(settings.gan_weight * losses.generator_adversarial_loss(fake_logits))
    return GeneratorLossTerms(divergence, tf.add_n(others) if others else None, logits)

  def start_at_real(self, images) -> GeneratorPass:
    """Without a generator x̃0 = x: the classifiers' inference-mode logits there
    and, when the search's first step ascends D, its gradient, in one pass."""
    with tf.GradientTape() as tape:
      tape.watch(images)
      classifiers = self.phase_a_classifiers()
      divergence, logits = group_divergence(classifiers, images, self.adversarial)
      total = scaled_for_float16(tf.reduce_sum(divergence), classifiers)
    start_gradient = None
    if self.adversarial.search.ras_steps > 0:
      start_gradient = finite_or_zero(tape.gradient(total, images))
    logits = [tf.stop_gradient(z) for z in logits]
    self.generated_divergence.update_state(tf.reduce_mean(losses.reported_divergence(logits)))
    return GeneratorPass(images, logits, start_gradient)

  def generator_update(self, images, labels) -> GeneratorPass:
    """One step of g on the batch mean of L_g; only g's variables move. The same
    tape also gives the search its first gradient at x̃0 (`start_gradient`)."""
    variables = self.generator.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
      start = self.generate(images, training=True)
      terms = self.generator_loss_terms(start, labels)
      per_example = terms.total(self.adversarial.divergence_weight)
      scaled_loss = self.generator_optimizer.scale_loss(losses.global_mean(per_example))
      # D's share of the loss before its weight, scaled like the loss.
      scaled_divergence = self.generator_optimizer.scale_loss(
          losses.global_mean(terms.divergence))
    gradients, start_gradient = self.generator_gradients(
        tape, scaled_loss, scaled_divergence, terms, variables, start)
    self.generator_optimizer.apply(gradients, variables)
    self.generator_loss_tracker.update_state(losses.local_mean(per_example))
    self.generated_divergence.update_state(
        tf.reduce_mean(losses.reported_divergence(terms.logits)))
    return GeneratorPass(tf.stop_gradient(start), [tf.stop_gradient(z) for z in terms.logits],
                         start_gradient)

  def generator_gradients(self, tape, scaled_loss, scaled_divergence, terms, variables,
                          start) -> Tuple[List[tf.Tensor], Optional[tf.Tensor]]:
    """g's gradients, and the gradient of D at x̃0 that the search's first step
    ascends (None when K = 0: the search takes no step).

    The search needs dD/dx̃0 per example. g's gradient is assembled at x̃0 from
    it, dL_g/dx̃0 = -divergence_weight dD/dx̃0 + d(rest)/dx̃0, and carried back
    through g alone: the classifiers are back-propagated once for D and once
    more only if the label term is on (the GAN term goes through the
    discriminator only). Reusing the tape for the search is exact: the
    classifiers are the same frozen networks the search would run at x̃0. Both
    parts are of the batch mean, scaled like the loss, so float16 gradients
    keep the loss scale's protection.
    """
    divergence_gradient = tape.gradient(scaled_divergence, start)
    at_start = tf.zeros_like(start)
    if self.adversarial.divergence_weight:
      at_start -= self.adversarial.divergence_weight * divergence_gradient
    if terms.others is not None:
      at_start += tape.gradient(terms.others, start,
                                output_gradients=tape.gradient(scaled_loss, terms.others))
    gradients = tape.gradient(start, variables, output_gradients=at_start)
    if self.adversarial.search.ras_steps == 0:
      return gradients, None
    return gradients, finite_or_zero(divergence_gradient)

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
