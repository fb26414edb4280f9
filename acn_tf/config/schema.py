"""Experiment configuration: the one schema of every setting and its default.

An `ExperimentConfig` is a frozen dataclass made of sections, one per concern,
so that each part of the library reads only what it needs: `data`,
`optimization`, `distillation` (Phase B), `adversarial` (Phase A, with its
`search`), `runtime` and `tuning`. Every setting has one name, unique across
the sections: the name an override, a config file, config.json and
docs/METHOD.md use (`--override=wrc_alpha=0.05` sets
`config.adversarial.wrc_alpha`). Ranges and choices are declared on the fields
themselves; `validate()` reads them from there.

Only `run.py` reads flags; `acn_tf/config/command_line.py` turns them into a config and
`acn_tf/config/registry.py` holds the named experiments.

Why one module of a little over 400 lines: it is the schema, every section's
dataclass with its fields' defaults and ranges, which a reader looks up in one
place; the checks, override parsing and old run directories live in fields.py,
scalars.py and saved_runs.py.
"""

import dataclasses
import typing
from typing import Any, Dict, Mapping, NamedTuple, Tuple

from acn_tf import errors
from acn_tf.config import scalars, search_space
from acn_tf.config.dataset_names import (  # noqa: F401  (the schema's names for them)
    DATASET_HELP, DATASETS, FOLDER_PREFIX, PYTHON_DATASET, TFDS_PREFIX, check_data,
    parse_dataset)
from acn_tf.config.fields import (check_range, check_relations, check_type, fraction,
                                  non_negative, one_of, positive, replace_nested, setting,
                                  unknown_key_message)
from acn_tf.config.methods import method_traits, methods_with
from acn_tf.networks import architecture_names

# dml_noise is DML with Phase B's divergent-batch terms on a noisy copy of the batch
# (acn_tf/method/noise.py): the rival every ACN result is read against.
# kdcl is KDCL, every peer distilled from one ensemble target (acn_tf/method/kdcl.py).
METHODS = ("independent", "dml", "dml_noise", "acn", "kdcl", "one", "cl_ilr")
# The methods whose classifiers are the branches of one network (acn_tf/networks/branched.py):
# ONE (acn_tf/method/one.py) and CL-ILR (acn_tf/method/cl_ilr.py).
BRANCHED_METHODS = methods_with("branched")
# The methods that read a section's settings (acn_tf/config/methods.py).
_DISTILLING = methods_with("distills")
_WITH_DIVERGENT_BATCH = methods_with("divergent_batch")
# Channels a dataset may be converted to: 0 keeps the dataset's own.
CHANNELS = (1, 3, 0)
AUGMENTATIONS = ("none", "crop", "crop_flip")
LR_SCHEDULES = ("constant", "step", "cosine")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
# D, what Phase A maximises: the spec's JS, or total variation (the preset
# divergence_seeking's, acn_tf/config/presets.py).
DIVERGENCES = ("js", "total_variation")
KDCL_TARGETS = ("min_logit", "mean_logit")
JIT_COMPILE = ("auto", "true", "false")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
# Distribution strategies (acn_tf/run/distribute.py); listed here, where run.py can
# read them without importing TensorFlow before its flags are parsed.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# keras-tuner's search algorithms (acn_tf/run/tuning.py), for the same reason.
TUNERS = ("random", "bayesian", "hyperband")

# A configuration value, override or config file is invalid; the message says how
# to fix it. Defined in acn_tf/errors.py with the project's other error types.
ConfigError = errors.ConfigError


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to train and test on, and how the batches are made."""

  # One of DATASETS, "tfds:NAME" or "folder:PATH" (parse_dataset).
  dataset: str = ""
  # Resize every image to image_size x image_size (0: keep the dataset's size;
  # a folder needs one, since Keras resizes while it reads).
  image_size: int = non_negative(0)
  # 1 (grayscale) or 3 (RGB); 0 keeps the dataset's own (a folder is read as RGB).
  channels: int = one_of(0, CHANNELS, hint="1 is grayscale, 3 RGB, 0 the dataset's own.")
  # folder: the test split, either a second folder of the same classes (a path,
  # relative ones resolved like the dataset's) or this fraction of the folder,
  # carved with a fixed seed (the same test images whatever `seed`).
  test_folder: str = ""
  test_fraction: float = fraction(0.0)
  # tfds: the splits to train and test on, any tfds split expression such as
  # "validation" or "train[90%:]" ("": "train" and "test").
  train_split: str = ""
  test_split: str = ""
  batch_size: int = positive(128)
  augmentation: str = one_of("crop_flip", AUGMENTATIONS)
  crop_padding: int = non_negative(4)
  # Train on the first `train_examples` examples only (0: all). For CPU-sized runs.
  train_examples: int = non_negative(0)
  # Fraction of the training set held out for validation (tuning and model selection).
  validation_fraction: float = fraction(0.0)


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
  """The classifiers' optimiser and schedule (SGD, as in the paper-style CIFAR runs)."""

  epochs: int = positive(200)
  learning_rate: float = positive(0.1)
  momentum: float = setting(0.9, low=0, high=1)
  nesterov: bool = True
  weight_decay: float = non_negative(5e-4)
  # How weight_decay acts. "coupled": L2 in the gradient, g + wd * w, before the
  # momentum buffer, with PyTorch's momentum rule (acn_tf/run/optimizers.py): the
  # optimizer of the published CIFAR recipes, hence the default. "decoupled": Keras'
  # own SGD, w -= lr * wd * w outside the buffer (and lr inside it). The buffer sums
  # the coupled decay over past steps, so in steady state it shrinks the weights by
  # lr * wd / (1 - momentum) per step, 1 / (1 - momentum) = 10x the decoupled
  # lr * wd at momentum 0.9: the same weight_decay is 10x weaker decoupled.
  weight_decay_mode: str = one_of("coupled", WEIGHT_DECAY_MODES)
  lr_schedule: str = one_of("cosine", LR_SCHEDULES)
  lr_decay_epochs: Tuple[int, ...] = (100, 150)
  lr_decay_factor: float = positive(0.1)
  # Limit steps per epoch (0: a full pass over the training data).
  steps_per_epoch: int = non_negative(0)


@dataclasses.dataclass(frozen=True)
class DistillationConfig:
  """Phase B: L_i = CE + kd_weight T² KL on x
  + adv_weight (adv_kd_weight T² KL + adv_ce_weight CE) on x̃, where x̃ is
  ACN's divergent batch or dml_noise's noisy copy of x."""

  # `independent` is DML with the distillation term off: it reads neither.
  temperature: float = positive(1.0, methods=_DISTILLING)
  kd_weight: float = non_negative(1.0, methods=_DISTILLING)
  # KDCL's ensemble target: the paper's MinLogit, or the peers' mean logits.
  kdcl_target: str = one_of("min_logit", KDCL_TARGETS, methods=("kdcl",))
  # The divergent-batch terms: ACN's, and dml_noise's on its noisy batch. The
  # spec's weight 1; an experiment may give ACN its own (registry.register's
  # method_settings).
  adv_weight: float = non_negative(1.0, methods=_WITH_DIVERGENT_BATCH)
  adv_ce_weight: float = non_negative(1.0, methods=_WITH_DIVERGENT_BATCH)
  # Weight of the peers' agreement (T² KL) on x̃; the spec's 1. At 0 the divergent
  # batch only asks for its label: adversarial data augmentation guided by the
  # classifiers' disagreement, which separates the two halves of the term.
  adv_kd_weight: float = non_negative(1.0, methods=_WITH_DIVERGENT_BATCH)
  # dml_noise's noisy batch: every pixel of x moved by ± input_noise (a fresh random
  # sign per pixel and step), clipped to [0, 1]. The default is the size chosen on
  # fashion_mnist_small's validation split (experiments/RESULTS.md).
  input_noise: float = setting(0.05, low=0, high=1, methods=("dml_noise",),
                               hint="input_noise is in pixel units of [0, 1] images.")
  # Phase B runs x̃ through the classifiers in training mode, a batch normalised by
  # its own moments. On (every run before this field), that pass also moves the batch
  # norms' moving statistics, which test time uses, towards x̃'s; off, they follow the
  # real batches alone, as AdvProp keeps adversarial examples out of clean statistics.
  divergent_batch_norm_updates: bool = setting(True, methods=_WITH_DIVERGENT_BATCH)


@dataclasses.dataclass(frozen=True)
class BranchedConfig:
  """ONE and CL-ILR: one backbone, `architectures[0]` (every entry the same), split
  into a shared trunk and one branch per entry of `architectures`."""

  # The stage the trunk ends with (architecture_names.split_points: "stem", "stage1",
  # "stage2" for the ResNets and WRNs, "stage1" for small_cnn); "": the last but one,
  # so that each branch is the last stage and a head, as in ONE's public code.
  split_after: str = one_of("", architecture_names.SPLIT_AFTER, methods=BRANCHED_METHODS)
  # T of ONE's distillation term (the public code's T = 3).
  one_temperature: float = positive(3.0, methods=("one",))
  # Epochs E over which ONE's distillation weight ramps up, exp(−5 (1 − e / E)²) at
  # epoch e < E: the public code's (E = 80 of its 300 epochs); 0, the paper's loss,
  # weighs it 1 from the start.
  one_rampup_epochs: int = non_negative(0, methods=("one",))
  # T and the hard-label weight β of CL-ILR's loss β CE + (1 − β) T² KL (the
  # values of the paper's CIFAR runs as this project reads it: T = 2, β = 0.5).
  cl_ilr_temperature: float = positive(2.0, methods=("cl_ilr",))
  cl_ilr_hard_weight: float = setting(0.5, low=0, high=1, methods=("cl_ilr",))


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Phase A's Restricted Adversarial Search from x̃0."""

  ras_steps: int = non_negative(1)
  ras_step_size: float = non_negative(2.0 / 255.0)
  # The spec's 8/255. A ball smaller than the generator's reach (wrc_alpha) clips
  # away what a working generator finds, so the preset `divergence_seeking` widens
  # both.
  ras_epsilon: float = setting(8.0 / 255.0, low=0, high=1,
                               hint="ras_epsilon is in pixel units of [0, 1] images.")
  # The label mask m: Phase B trains on x̃_b only where the ensemble still
  # predicts y_b there; dml_noise masks its noisy batch the same way. The mask
  # comes from Phase B's own forward pass on x̃ (docs/INTERPRETATION.md).
  ras_label_restrict: bool = setting(True, methods=_WITH_DIVERGENT_BATCH)


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
  """Phase A: the generator with its Weakly Residual Connection, the
  discriminator, the divergence they and the search maximise, and the schedule."""

  # Phase A's networks are kept small next to the classifiers, whose cost they
  # add to every step (experiments/BENCHMARKS.md).
  # False is the "no generator" ablation: x̃0 = x, the search alone makes the
  # divergent batch; no generator or discriminator is built or trained, so their
  # settings (and gan_weight) are unused.
  use_generator: bool = True
  generator_filters: int = positive(16)
  generator_blocks: int = non_negative(2)
  noise_channels: int = non_negative(4)
  # wrc_alpha = 0 is the "no WRC" ablation: a plain image-to-image generator.
  wrc_alpha: float = setting(0.1, low=0, high=1,
                             hint="wrc_alpha is in pixel units of [0, 1] images.")
  # ACN's Phase A defaults are the spec's (docs/METHOD.md); the preset
  # `divergence_seeking` (acn_tf/config/presets.py) is the rival setting that
  # makes x̃0 divergent.
  #
  # Weight of the generator's keep-the-label term CE(p̄(x̃0), y); the spec's 1.
  keep_label_weight: float = non_negative(1.0)
  # What the generator and the search maximise: "js" (the spec's Div) or
  # "total_variation". JS grows quadratically from agreement, so its gradient
  # vanishes where the generator starts (x̃0 = x, peers agree); total variation's
  # does not. Metrics always report the spec's JS at temperature 1
  # (losses.reported_divergence).
  divergence: str = one_of("js", DIVERGENCES)
  # Weight of that divergence in the generator's loss L_g; the spec's 1.
  divergence_weight: float = non_negative(1.0)
  # Temperature of the probabilities that divergence compares: the spec uses Phase
  # B's `temperature`, so an experiment that changes one sets both (registry.py).
  divergence_temperature: float = positive(1.0)
  # gan_weight = 0 removes the discriminator: the "no GAN" ablation.
  gan_weight: float = non_negative(1.0)
  discriminator_filters: int = positive(16)
  spectral_norm: bool = True
  # Epochs of plain DML before Phase A starts: divergence between untrained
  # classifiers is noise. Every registered experiment sets its own (registry.py).
  adv_warmup_epochs: int = non_negative(0)
  generator_updates: int = positive(1)
  discriminator_updates: int = positive(1)
  # The spec's GAN rate, as the discriminator's.
  generator_learning_rate: float = positive(2e-4)
  discriminator_learning_rate: float = positive(2e-4)
  # Adam's beta_1 for both Phase A players.
  adversarial_beta_1: float = setting(0.5, low=0, high=1, high_open=True)
  # Phase A's inference passes through the classifiers (the generator's loss,
  # the search, the health figures) with each batch norm folded into the
  # convolution before it (acn_tf/networks/folding.py): the same function to float
  # round-off, fewer ops. Off: Keras' layers as built.
  fold_batch_norm: bool = True
  search: SearchConfig = SearchConfig()


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """How the run executes and what it records; none of it changes the method."""

  # Evaluate on the validation split every this many epochs (and at the last one).
  validation_every_epochs: int = positive(1)
  # 0 checkpoints at each epoch's end only.
  checkpoint_every_steps: int = non_negative(0)
  # TensorBoard scalars every this many steps (0: per epoch only).
  log_every_steps: int = non_negative(50)
  # "auto" (XLA on GPU only), "true" or "false".
  jit_compile: str = one_of("auto", JIT_COMPILE)
  # "none", "mixed_float16" (GPU) or "mixed_bfloat16"; losses stay float32.
  mixed_precision: str = one_of("none", MIXED_PRECISION)
  # TensorFlow op determinism: with a fixed seed, two runs give identical results.
  deterministic: bool = False


@dataclasses.dataclass(frozen=True)
class TuningConfig:
  """The hyperparameter search of `run.py --mode=tune`."""

  # "field=spec" entries, spec one of log:LOW:HIGH, LOW:HIGH, int:LOW:HIGH or
  # choice:A|B|C (no commas: the override parser splits tuples on them).
  search_space: Tuple[str, ...] = (
      "learning_rate=log:0.01:0.2", "wrc_alpha=0.02:0.2", "ras_epsilon=0.02:0.2",
      "ras_steps=int:0:3", "adv_weight=0.25:2.0", "kd_weight=0.5:2.0",
      "temperature=choice:1|2|4")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything one training run needs, with the defaults of docs/METHOD.md.

  Build one with `ExperimentConfig.from_fields(name=..., dataset=..., epochs=...)`
  or sections; change one with `config.replace(wrc_alpha=0.05)`: both take the
  settings' own names, whichever section holds them.
  """

  name: str = ""
  method: str = one_of("dml", METHODS)
  # One entry per classifier: n = len(architectures); mixed pairs are allowed.
  architectures: Tuple[str, ...] = ("resnet32", "resnet32")
  # How the ResNets' and WRNs' strided 3x3 convolutions pad: "symmetric" (PyTorch's
  # padding=1: both branches of a downsampling block centre on pixel 2i) or "same"
  # (TensorFlow's, one pixel off; what runs whose config.json lacks the field used).
  downsampling_padding: str = one_of("symmetric", architecture_names.DOWNSAMPLING_PADDINGS)
  seed: int = non_negative(0)
  data: DataConfig = DataConfig()
  optimization: OptimizationConfig = OptimizationConfig()
  distillation: DistillationConfig = DistillationConfig()
  adversarial: AdversarialConfig = AdversarialConfig()
  branched: BranchedConfig = BranchedConfig()
  runtime: RuntimeConfig = RuntimeConfig()
  tuning: TuningConfig = TuningConfig()

  @classmethod
  def from_fields(cls, **values: Any) -> "ExperimentConfig":
    """The defaults with `values` (settings by name, or whole sections) in place."""
    return cls().replace(**values)

  @property
  def num_classifiers(self) -> int:
    return len(self.architectures)

  def uses_adversarial_phase(self) -> bool:
    return method_traits(self.method).adversarial_phase

  def uses_branched_network(self) -> bool:
    """ONE and CL-ILR: the classifiers are the branches of one network."""
    return self.method in BRANCHED_METHODS

  def phase_b(self) -> DistillationConfig:
    """Phase B's weights as the method uses them: a method that does not distil
    (`independent`) is DML with the distillation term switched off."""
    if not method_traits(self.method).distills:
      return dataclasses.replace(self.distillation, kd_weight=0.0)
    return self.distillation

  def get(self, name: str) -> Any:
    """The value of the setting called `name`, whichever section holds it."""
    value = self
    for part in _location(name):
      value = getattr(value, part)
    return value

  def replace(self, **changes: Any) -> "ExperimentConfig":
    """A copy with settings (by name) or whole sections replaced."""
    return replace_nested(self, {
        (name,) if name in SECTIONS else _location(name): value
        for name, value in changes.items()})

  def to_dict(self) -> Dict[str, Any]:
    """{setting name: value}, flat: the form of config.json and config files."""
    return {name: self.get(name) for name in FIELDS}

  def validate(self) -> "ExperimentConfig":
    """Raises ConfigError naming the bad field and its valid range.

    Types first (a config built in Python, or read from a file, may hold a string
    where a number belongs), then finiteness (nan and inf pass every comparison
    but poison training), then each field's declared range or choices, then the
    rules that tie fields together.
    """
    values = self.to_dict()
    for name, value in values.items():
      check_type(name, FIELDS[name].kind, value)
    for name, value in values.items():
      check_range(name, value, FIELDS[name].metadata)
    if not self.name:
      raise ConfigError("name is empty: give the experiment a name.")
    check_data(self.data)
    check_relations(self)
    search_space.parse_search_space(self.tuning.search_space, field_types())
    for architecture in self.architectures:
      try:
        architecture_names.check_architecture_name(architecture)
      except ValueError as error:
        raise ConfigError(str(error)) from None
    return self


# ---------------------------------------------------------------------------
# The schema: every setting by name, read from the dataclasses above.


class Field(NamedTuple):
  """One setting: where it lives (section attributes, then its own name), its
  type, default and declared range or choices."""
  location: Tuple[str, ...]
  kind: Any
  default: Any
  metadata: Mapping[str, Any]


def _is_section(kind: Any) -> bool:
  return dataclasses.is_dataclass(kind)


def _schema(cls: type, prefix: Tuple[str, ...] = ()) -> Dict[str, Field]:
  hints = typing.get_type_hints(cls)
  fields: Dict[str, Field] = {}
  for field in dataclasses.fields(cls):
    kind = hints[field.name]
    location = (*prefix, field.name)
    children = (_schema(kind, location) if _is_section(kind) else
                {field.name: Field(location, kind, field.default, field.metadata)})
    for name, child in children.items():
      if name in fields:  # Overrides and config.json name settings, not paths.
        raise TypeError(f"{name} is defined in two sections of {cls.__name__}")
      fields[name] = child
  return fields


# Every setting of ExperimentConfig, by its name, in declaration order.
FIELDS: Dict[str, Field] = _schema(ExperimentConfig)
# The sections' attribute names on ExperimentConfig (data, optimization, ...).
SECTIONS: Tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(ExperimentConfig)
    if _is_section(typing.get_type_hints(ExperimentConfig)[field.name]))


def methods_reading(name: str) -> Tuple[str, ...]:
  """The methods that read the setting `name`: those its `setting(methods=...)`
  names, else every method, or the methods with Phase A for a setting of its
  section (the `adversarial` section)."""
  field = FIELDS[name]
  declared = field.metadata.get("methods")
  if declared is not None:
    return declared
  return methods_with("adversarial_phase") if field.location[0] == "adversarial" else METHODS


def fields_unused_by(method: str) -> frozenset:
  """The settings `method` never reads (`methods_reading`)."""
  return frozenset(name for name in FIELDS if method not in methods_reading(name))


def field_types() -> Dict[str, Any]:
  return {name: field.kind for name, field in FIELDS.items()}


def _location(name: str) -> Tuple[str, ...]:
  if name not in FIELDS:
    raise ConfigError(unknown_key_message(name, list(FIELDS)))
  return FIELDS[name].location


# ---------------------------------------------------------------------------
# Overrides: settings by name, typed and checked against the schema.


def apply_overrides(config: ExperimentConfig,
                    overrides: Mapping[str, Any]) -> ExperimentConfig:
  """Returns `config` with settings replaced, type-checked against the schema."""
  changes = {}
  for key, value in overrides.items():
    if key not in FIELDS or key == "name":
      raise ConfigError(unknown_key_message(key, [name for name in FIELDS if name != "name"]))
    changes[key] = scalars.coerce(key, FIELDS[key].kind, value)
  return config.replace(**changes)
