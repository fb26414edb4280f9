"""From a config to a compiled model: networks, optimizers, schedules, seeds.

Everything here owns variables, so it runs inside the distribution strategy's
scope; the caller (acn_tf/run/training.py, acn_tf/api.py, the tuner) chooses it.
"""

import keras
import tensorflow as tf

from acn_tf import errors
from acn_tf.data import pipeline
from acn_tf.networks import backbones, discriminators, generators
from acn_tf.config.methods import method_traits
from acn_tf.config.schema import ExperimentConfig, OptimizationConfig
from acn_tf.method.codistillation import CoDistillation
from acn_tf.run import distribute, optimizers

# Each network's initialisation seed is derived from the run's seed, so that the
# classifiers start apart (DML needs that) and Phase A's networks differ from all.
_SEEDS_PER_RUN = 1000
_PHASE_A_OFFSET = _SEEDS_PER_RUN - 1


def classifier_seed(seed: int, index: int) -> int:
  """The initialisation seed of classifier `index` of a run with `seed`."""
  return seed * _SEEDS_PER_RUN + index


def phase_a_seed(seed: int) -> int:
  """The seed Keras is set to before the generator and discriminator are built."""
  return seed * _SEEDS_PER_RUN + _PHASE_A_OFFSET


def use_xla(config: ExperimentConfig) -> bool:
  """XLA is a GPU default: on this project's CPUs it measured slower (docs/KERAS_NOTES.md 5)."""
  if config.runtime.jit_compile == "auto":
    return bool(tf.config.list_physical_devices("GPU"))
  return config.runtime.jit_compile == "true"


def steps_per_epoch(config: ExperimentConfig, info: pipeline.DatasetInfo) -> int:
  if config.optimization.steps_per_epoch:
    return config.optimization.steps_per_epoch
  steps = info.num_train // config.data.batch_size
  if steps == 0:
    raise errors.ConfigError(
        f"batch_size={config.data.batch_size} is larger than the {info.num_train} training "
        "examples; lower batch_size (or raise train_examples).")
  return steps


def learning_rate_schedule(optimization: OptimizationConfig, steps: int):
  """The classifiers' learning rate as a Keras schedule over optimizer steps."""
  if optimization.lr_schedule == "constant":
    return optimization.learning_rate
  if optimization.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        optimization.learning_rate, decay_steps=max(1, optimization.epochs * steps))
  # PiecewiseConstantDecay keeps a value up to and including its boundary, and the
  # optimizer's step k (from 0) reads it at iterations = k: epoch e's first step is
  # e * steps, so the boundary is one step before it (PyTorch's MultiStepLR, stepped
  # per epoch, drops the rate from that epoch's first step).
  boundaries = [epoch * steps - 1 for epoch in optimization.lr_decay_epochs]
  values = [optimization.learning_rate * optimization.lr_decay_factor**k
            for k in range(len(boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def classifier_optimizer(optimization: OptimizationConfig,
                         steps: int) -> keras.optimizers.Optimizer:
  """The classifiers' SGD: PyTorch's update with L2 in the gradient (weight_decay_mode
  "coupled"), or Keras' SGD, whose weight_decay is a separate w -= lr * wd * w
  ("decoupled"). The two are not "the same up to the momentum buffer": at momentum mu
  the buffer makes the coupled decay 1 / (1 - mu) times stronger in steady state (10x at
  0.9), and Keras' buffer also keeps the learning rate inside it across a step decay."""
  optimizer_class = (optimizers.PyTorchSGD if optimization.weight_decay_mode == "coupled"
                     else keras.optimizers.SGD)
  return optimizer_class(
      learning_rate=learning_rate_schedule(optimization, steps),
      momentum=optimization.momentum, nesterov=optimization.nesterov,
      weight_decay=optimization.weight_decay or None)


def phase_a_optimizers(config: ExperimentConfig, with_discriminator: bool,
                       with_generator: bool = True) -> dict:
  """The generator's and the discriminator's Adam, as `compile()` takes them (None
  for a network the model does not have); under mixed_float16 each is wrapped in a
  LossScaleOptimizer, since float16 gradients underflow."""
  adversarial = config.adversarial

  def adam(learning_rate):
    optimizer = keras.optimizers.Adam(learning_rate, beta_1=adversarial.adversarial_beta_1)
    if config.runtime.mixed_precision == "mixed_float16":
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer

  return dict(generator_optimizer=(adam(adversarial.generator_learning_rate)
                                   if with_generator else None),
              discriminator_optimizer=(adam(adversarial.discriminator_learning_rate)
                                       if with_discriminator else None))


def build_classifiers(config: ExperimentConfig, info: pipeline.DatasetInfo,
                      channel_mean, channel_variance):
  """n classifiers, each from its own seed so they start apart (DML needs that)."""
  return [
      backbones.build_classifier(
          architecture, info.image_shape, info.num_classes, channel_mean,
          channel_variance, name=f"classifier_{index}",
          seed=classifier_seed(config.seed, index),
          downsampling_padding=config.downsampling_padding)
      for index, architecture in enumerate(config.architectures)
  ]


def build_branched_model(config: ExperimentConfig, info: pipeline.DatasetInfo,
                         channel_mean, channel_variance) -> CoDistillation:
  """ONE's or CL-ILR's model around one branched network: `architectures[0]` split
  after `split_after` into a trunk and one branch per entry of `architectures`, with
  ONE's gate or CL-ILR's trunk-gradient rescaling; the seed of classifier 0."""
  from acn_tf.networks import branched  # Only the branched methods need these.
  from acn_tf.method.cl_ilr import CollaborativeLearning
  from acn_tf.method.one import OnTheFlyNativeEnsemble
  one = config.method == "one"
  network = branched.build_branched_network(
      config.architectures[0], info.image_shape, info.num_classes, channel_mean,
      channel_variance, branches=config.num_classifiers,
      split_after=config.branched.split_after, with_gate=one, scale_trunk_gradient=not one,
      seed=classifier_seed(config.seed, 0), downsampling_padding=config.downsampling_padding)
  model_class = OnTheFlyNativeEnsemble if one else CollaborativeLearning
  name = "on_the_fly_native_ensemble" if one else "collaborative_learning"
  return model_class(network, config.num_classifiers, name=name)


def build_adversarial_model(config: ExperimentConfig, info: pipeline.DatasetInfo, classifiers):
  """The ACN model: a generator and (when gan_weight > 0) a discriminator for
  `info`'s image shape around `classifiers`; neither for `use_generator=False`."""
  from acn_tf.method.adversarial import AdversarialCoDistillation  # Only method=acn needs it.
  adversarial = config.adversarial
  keras.utils.set_random_seed(phase_a_seed(config.seed))
  if not adversarial.use_generator:
    return AdversarialCoDistillation(classifiers, None, None,
                                     name="adversarial_codistillation")
  generator = generators.build_generator(
      info.image_shape, adversarial.noise_channels, adversarial.generator_filters,
      adversarial.generator_blocks)
  discriminator = None
  if adversarial.gan_weight > 0:
    discriminator = discriminators.build_discriminator(
        info.image_shape, adversarial.discriminator_filters, adversarial.spectral_norm)
  return AdversarialCoDistillation(classifiers, generator, discriminator,
                                   name="adversarial_codistillation")


def set_execution_mode(config: ExperimentConfig) -> None:
  """Global settings that must precede building: precision policy, determinism."""
  precision = config.runtime.mixed_precision
  keras.mixed_precision.set_global_policy("float32" if precision == "none" else precision)
  if config.runtime.deterministic:
    tf.config.experimental.enable_op_determinism()


def build_model(config: ExperimentConfig, info: pipeline.DatasetInfo, channel_mean,
                channel_variance, steps: int) -> CoDistillation:
  """The compiled training model of `config.method`, optimizers built.

  Call inside the strategy's scope: everything here owns variables. Under
  mixed_float16 Keras wraps the classifiers' optimizer in a LossScaleOptimizer
  (compile's auto_scale_loss); `phase_a_optimizers` wraps the other two.
  """
  set_execution_mode(config)
  try:
    backbones.check_image_shape(info.image_shape)
  except ValueError as error:
    raise errors.ConfigError(f"dataset={config.data.dataset}: {error}") from None
  if config.uses_branched_network():
    model = build_branched_model(config, info, channel_mean, channel_variance)
    model.compile(optimizer=classifier_optimizer(config.optimization, steps),
                  branched=config.branched, steps_per_epoch=steps,
                  jit_compile=use_xla(config))
    return _ready_for_fit(model, info.image_shape)
  classifiers = build_classifiers(config, info, channel_mean, channel_variance)
  return assemble_model(config, classifiers, info, steps)


def assemble_model(config: ExperimentConfig, classifiers, info: pipeline.DatasetInfo,
                   steps: int) -> CoDistillation:
  """The compiled model of `config.method` around built `classifiers` ([0, 1] images
  of `info.image_shape` in, logits out), optimizers built; `steps` per epoch set
  the learning-rate schedule. The execution mode must already be set."""
  if config.uses_branched_network():
    raise errors.ConfigError(
        f"method={config.method} trains the branches of one network that it builds from "
        "`architectures` (build_model), not separate classifiers; use another method "
        "for classifiers of your own.")
  optimizer = classifier_optimizer(config.optimization, steps)
  if config.uses_adversarial_phase():
    model = build_adversarial_model(config, info, classifiers)
    model.compile(optimizer=optimizer, distillation=config.phase_b(),
                  adversarial=config.adversarial, jit_compile=use_xla(config),
                  warmup_steps=config.adversarial.adv_warmup_epochs * steps,
                  **phase_a_optimizers(config, model.discriminator is not None,
                                       with_generator=model.generator is not None))
  elif method_traits(config.method).divergent_batch:
    from acn_tf.method.noise import NoisyCoDistillation  # Only method=dml_noise needs it.
    model = NoisyCoDistillation(classifiers, name="noisy_codistillation")
    model.compile(optimizer=optimizer, distillation=config.phase_b(),
                  label_restrict=config.adversarial.search.ras_label_restrict,
                  jit_compile=use_xla(config))
  elif config.method == "kdcl":
    from acn_tf.method.kdcl import EnsembleTargetDistillation  # Only method=kdcl needs it.
    model = EnsembleTargetDistillation(classifiers, name="kdcl")
    model.compile(optimizer=optimizer, distillation=config.phase_b(),
                  jit_compile=use_xla(config))
  else:
    model = CoDistillation(classifiers, name="codistillation")
    model.compile(optimizer=optimizer, distillation=config.phase_b(),
                  jit_compile=use_xla(config))
  return _ready_for_fit(model, info.image_shape)


def _ready_for_fit(model: CoDistillation, image_shape) -> CoDistillation:
  """A compiled `model` with its batch norms synchronised across replicas (before
  the first trace), its variables and its optimizers' variables built."""
  distribute.synchronize_batch_norm(model)
  model(tf.zeros((1, *image_shape)))
  model.build_optimizers()
  return model
