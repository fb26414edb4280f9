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
"""

import dataclasses
import json
import math
import re
import typing
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from acn_tf import errors
from acn_tf.config import scalars, search_space
from acn_tf.networks import architecture_names

# dml_noise is DML with Phase B's divergent-batch terms on a noisy copy of the batch
# (acn_tf/method/noise.py): the rival that explained ACN's gain on fashion_mnist_small.
# kdcl is KDCL, every peer distilled from one ensemble target (acn_tf/method/kdcl.py).
METHODS = ("independent", "dml", "dml_noise", "acn", "kdcl")
# The datasets known by name; any other dataset is "tfds:NAME" or "folder:PATH".
DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
# An image-classification dataset of tensorflow-datasets, by its tfds name.
TFDS_PREFIX = "tfds:"
# A folder of images with one sub-folder per class (Keras' image_dataset_from_directory).
FOLDER_PREFIX = "folder:"
# The caller's own tf.data pipeline (acn_tf/api.py): nothing for run.py to load.
PYTHON_DATASET = "python"
# Channels a dataset may be converted to: 0 keeps the dataset's own.
CHANNELS = (1, 3, 0)
DATASET_HELP = (f"{', '.join(DATASETS)}, tfds:NAME (an image-classification dataset of "
                "tensorflow-datasets, e.g. tfds:svhn_cropped) or folder:PATH (a folder "
                "with one sub-folder of images per class, e.g. folder:/data/flowers/train)")
# A tfds name: builder name, optional /config, optional :version (as tfds.builder takes it).
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?$")
AUGMENTATIONS = ("none", "crop", "crop_flip")
LR_SCHEDULES = ("constant", "step", "cosine")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
DIVERGENCES = ("js", "sym_kl", "total_variation", "logit_l1")
ADV_NORMALIZATIONS = ("batch", "kept")
ADV_KD_TARGETS = ("divergent", "real")
KDCL_TARGETS = ("min_logit", "mean_logit")
MASK_SOURCES = ("search", "update")
RAS_OBJECTIVES = ("divergence", "generator_loss")
DIVERGENT_SIGNS = ("found", "random")
DIVERGENT_SIZES = ("found", "budget")
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


def setting(default: Any, *, low: Optional[float] = None, low_open: bool = False,
            high: Optional[float] = None, high_open: bool = False,
            choices: Sequence[Any] = (), hint: str = "",
            methods: Optional[Sequence[str]] = None) -> Any:
  """A field with its valid range or choices, which `validate()` checks.

  `low`/`high` bound the value (open bounds excluded); `hint` is appended to the
  error when the value is out of range. `methods` are the methods that read the
  setting (a search over it under another method would change nothing); None:
  every method, or ACN alone for a setting of Phase A's section (`fields_unused_by`).
  """
  return dataclasses.field(default=default, metadata=dict(
      low=low, low_open=low_open, high=high, high_open=high_open,
      choices=tuple(choices), hint=hint,
      methods=None if methods is None else tuple(methods)))


def positive(default: Any, **kwargs: Any) -> Any:
  return setting(default, low=0, low_open=True, **kwargs)


def non_negative(default: Any, **kwargs: Any) -> Any:
  return setting(default, low=0, **kwargs)


def fraction(default: float) -> Any:
  """A share in [0, 1)."""
  return setting(default, low=0, high=1, high_open=True)


def one_of(default: Any, choices: Sequence[Any], **kwargs: Any) -> Any:
  return setting(default, choices=choices, **kwargs)


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
  temperature: float = positive(1.0, methods=("dml", "dml_noise", "acn", "kdcl"))
  kd_weight: float = non_negative(1.0, methods=("dml", "dml_noise", "acn", "kdcl"))
  # KDCL's ensemble target: the paper's MinLogit, or the peers' mean logits.
  kdcl_target: str = one_of("min_logit", KDCL_TARGETS, methods=("kdcl",))
  # The divergent-batch terms: ACN's, and dml_noise's on its noisy batch. The
  # spec's weight 1; an experiment may give ACN its own (registry.register's
  # method_settings): fashion_mnist_small's 0.5, its validation split's choice.
  adv_weight: float = non_negative(1.0, methods=("dml_noise", "acn"))
  adv_ce_weight: float = non_negative(1.0, methods=("dml_noise", "acn"))
  # Weight of the peers' agreement (T² KL) on x̃; the spec's 1. At 0 the divergent
  # batch only asks for its label: adversarial data augmentation guided by the
  # classifiers' disagreement, which separates the two halves of the term.
  adv_kd_weight: float = non_negative(1.0, methods=("dml_noise", "acn"))
  # What classifier i matches on x̃: its peers' predictions on x̃ itself (the
  # spec's "divergent"), or on the real image x that x̃ was made from ("real"):
  # x̃ keeps x's label, so this asks each classifier to predict on x̃ what its
  # peers predict on x, a consistency term in place of agreement where the peers
  # were made to disagree.
  adv_kd_target: str = one_of("divergent", ADV_KD_TARGETS, methods=("dml_noise", "acn"))
  # Averaging of the divergent-batch loss over the label mask m. "kept" (mean over
  # kept examples) is the spec's literal reading; it collapses training from
  # scratch (measured, see experiments/RESULTS.md), so the default is "batch":
  # sum over kept examples / batch size, which scales the term by the kept share.
  adv_normalization: str = one_of("batch", ADV_NORMALIZATIONS, methods=("dml_noise", "acn"))
  # dml_noise's noisy batch: every pixel of x moved by ± input_noise (a fresh random
  # sign per pixel and step), clipped to [0, 1]. 0.05, chosen on fashion_mnist_small's
  # validation split among 0.05, 0.1, 0.15 and 0.2 (seeds 0 and 1, mean-classifier
  # top-1 82.30 against DML's 81.89; 0.2 lost 1.11; experiments/RESULTS.md, "The main
  # comparison"). The random-sign control's 0.13 gained with the previous recipe.
  input_noise: float = setting(0.05, low=0, high=1, methods=("dml_noise",),
                               hint="input_noise is in pixel units of [0, 1] images.")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Phase A's Restricted Adversarial Search from x̃0."""

  ras_steps: int = non_negative(1)
  ras_step_size: float = non_negative(2.0 / 255.0)
  # The spec's 8/255. A ball smaller than the generator's reach (wrc_alpha) clips
  # away what a working generator finds (with divergence-seeking settings Div(x̃) /
  # Div(x) fell from 4.5 to 1.9 as it learned); the preset `divergence_seeking`
  # widens both to 0.2. With the spec's Phase A the generator barely moves x
  # (‖x̃0 − x‖∞ 0.004), so what Phase B sees is this ball's one search step.
  ras_epsilon: float = setting(8.0 / 255.0, low=0, high=1,
                               hint="ras_epsilon is in pixel units of [0, 1] images.")
  # The label mask m: Phase B trains on x̃_b only where the ensemble still
  # predicts y_b there; dml_noise masks its noisy batch the same way.
  ras_label_restrict: bool = setting(True, methods=("dml_noise", "acn"))
  # The label mask's pass at x̃: "search" (a separate inference-mode pass, the spec's
  # reading) or "update" (the classifier update's own training-mode forward on x̃).
  # "update" saves one pass of every classifier per step at the same accuracy
  # (measured, experiments/RESULTS.md and BENCHMARKS.md), so it is the default.
  ras_mask_source: str = one_of("update", MASK_SOURCES)
  # What the search ascends: "divergence" (Div, the spec) or "generator_loss"
  # (-L_g: Div minus the label-keeping and GAN terms), whose first step reuses the
  # generator update's backward pass: one classifier backward pass fewer per step.
  ras_objective: str = one_of("divergence", RAS_OBJECTIVES)


@dataclasses.dataclass(frozen=True)
class AdversarialConfig:
  """Phase A: the generator with its Weakly Residual Connection, the
  discriminator, the divergence they and the search maximise, and the schedule."""

  # Phase A's networks are kept small next to the classifiers: at 32 filters the
  # generator's forward and backward cost about 0.75 of a ResNet-32's, at 16 about
  # 0.25 (experiments/BENCHMARKS.md).
  # False is the "no generator" ablation: x̃0 = x, the search alone makes the
  # divergent batch; no generator or discriminator is built or trained, so their
  # settings (and gan_weight) are unused.
  use_generator: bool = True
  generator_filters: int = positive(16)
  generator_blocks: int = non_negative(2)
  noise_channels: int = non_negative(4)
  wrc_alpha: float = setting(0.1, low=0, high=1,
                             hint="wrc_alpha is in pixel units of [0, 1] images.")
  # ACN's Phase A defaults are the spec's (docs/METHOD.md): of every ACN setting
  # screened on fashion_mnist_small's validation split with the previous recipe,
  # the spec's Phase A had the best accuracy (ensemble top-1 82.20 against DML's
  # 82.02 over seeds 0-1; 82.54 against 82.26 over seeds 0-3; experiments/RESULTS.md,
  # "What Phase B does with x̃" and "A stronger search"); with today's recipe, at
  # half the divergent batch's weight there (81.97 against DML's 82.15, the spec's
  # weight 81.68; "ACN's Phase A at today's recipe"). Settings chosen to make x̃0
  # divergent instead lost to DML (the preset `divergence_seeking`,
  # acn_tf/config/presets.py).
  #
  # Weight of the generator's keep-the-label term CE(p̄(x̃0), y); the spec's 1.
  keep_label_weight: float = non_negative(1.0)
  # What the generator and the search maximise: "js" (the spec's Div), "sym_kl",
  # "total_variation" or "logit_l1" (mean L1 distance between the peers' logits).
  # JS and KL grow quadratically from agreement, so their gradient vanishes where
  # the generator starts (x̃0 = x, peers agree): with "js" the generator leaves
  # Div(x̃0) / Div(x) at 1.00, with "total_variation" it reached 7 against frozen
  # classifiers (experiments/RESULTS.md, "Phase A"), and lost accuracy in training.
  # Metrics always report the spec's JS at temperature 1 (losses.reported_divergence).
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
  # round-off, fewer ops (experiments/BENCHMARKS.md). Off: Keras' layers as built.
  fold_batch_norm: bool = True
  # Two controls, not part of the method: Phase B gets x + s d per pixel (clipped
  # to [0, 1]) instead of x̃, with s Phase A's sign ("found") or a random one
  # ("random"), and d Phase A's distance |x̃ - x| ("found") or the budget
  # ras_epsilon ("budget"); the label mask is made at those images. Random signs
  # with found sizes keep how far Phase A moved each pixel and drop its direction;
  # random signs at the budget are noise that needs no Phase A at all.
  divergent_signs: str = one_of("found", DIVERGENT_SIGNS)
  divergent_sizes: str = one_of("found", DIVERGENT_SIZES)
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
  # (TensorFlow's, one pixel off; the networks of runs written before 2026-12-02).
  downsampling_padding: str = one_of("symmetric", architecture_names.DOWNSAMPLING_PADDINGS)
  seed: int = non_negative(0)
  data: DataConfig = DataConfig()
  optimization: OptimizationConfig = OptimizationConfig()
  distillation: DistillationConfig = DistillationConfig()
  adversarial: AdversarialConfig = AdversarialConfig()
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
    return self.method == "acn"

  def phase_b(self) -> DistillationConfig:
    """Phase B's weights as the method uses them: `independent` is DML with the
    distillation term switched off."""
    if self.method == "independent":
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
    return _replace_nested(self, {
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
      _check_type(name, FIELDS[name].kind, value)
    for name, value in values.items():
      _check_range(name, value, FIELDS[name].metadata)
    if not self.name:
      raise ConfigError("name is empty: give the experiment a name.")
    _check_data(self.data)
    _check_relations(self)
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
  names, else every method, or ACN alone for a setting of Phase A's section
  (the `adversarial` section)."""
  field = FIELDS[name]
  declared = field.metadata.get("methods")
  if declared is not None:
    return declared
  return ("acn",) if field.location[0] == "adversarial" else METHODS


def fields_unused_by(method: str) -> frozenset:
  """The settings `method` never reads (`methods_reading`)."""
  return frozenset(name for name in FIELDS if method not in methods_reading(name))


def field_types() -> Dict[str, Any]:
  return {name: field.kind for name, field in FIELDS.items()}


def unknown_key_message(key: str, valid: Sequence[str]) -> str:
  """The nearest valid keys first (a typo is the usual cause), then all of them."""
  return (f"Unknown config key {key!r}{errors.did_you_mean(key, valid) or '.'} Valid keys: "
          f"{', '.join(sorted(valid))}.")


def _location(name: str) -> Tuple[str, ...]:
  if name not in FIELDS:
    raise ConfigError(unknown_key_message(name, list(FIELDS)))
  return FIELDS[name].location


def _replace_nested(instance: Any, changes: Mapping[Tuple[str, ...], Any]) -> Any:
  """`instance` with the values at the given attribute paths replaced."""
  direct: Dict[str, Any] = {}
  nested: Dict[str, Dict[Tuple[str, ...], Any]] = {}
  for (head, *rest), value in changes.items():
    if rest:
      nested.setdefault(head, {})[tuple(rest)] = value
    else:
      direct[head] = value
  for head, section_changes in nested.items():
    direct[head] = _replace_nested(direct.get(head, getattr(instance, head)),
                                   section_changes)
  return dataclasses.replace(instance, **direct)


# ---------------------------------------------------------------------------
# Checks.


def _is_of_type(value: Any, kind: Any) -> bool:
  """isinstance, with bool not counted as a number and an int accepted as a float."""
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, kind)


def _check_type(name: str, kind: Any, value: Any) -> None:
  """The declared type, and every float finite."""
  if typing.get_origin(kind) is tuple:
    element = typing.get_args(kind)[0]
    if not isinstance(value, tuple) or not all(_is_of_type(item, element)
                                               for item in value):
      raise ConfigError(f"{name} must be a tuple of {element.__name__}, got {value!r}.")
    values = value
  else:
    if not _is_of_type(value, kind):
      raise ConfigError(f"{name} must be of type {kind.__name__}, got {value!r} "
                        f"({type(value).__name__}).")
    values = (value,)
  if kind is float or typing.get_args(kind)[:1] == (float,):
    for item in values:
      if not math.isfinite(item):
        raise ConfigError(f"{name} must be a finite number, got {item}; set a real "
                          f"value (--override={name}=... or in --config_file).")


def _check_range(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
  """The range or choices that `setting()` declared for the field."""
  hint = f" {metadata['hint']}" if metadata.get("hint") else ""
  choices = metadata.get("choices")
  if choices and value not in choices:
    raise ConfigError(f"{name}={value!r} is not one of "
                      f"{', '.join(map(str, choices))}.{hint}")
  low, high = metadata.get("low"), metadata.get("high")
  below = low is not None and (value <= low if metadata["low_open"] else value < low)
  above = high is not None and (value >= high if metadata["high_open"] else value > high)
  if not (below or above):
    return
  if high is None:
    bound = f"{'>' if metadata['low_open'] else '>='} {low}"
  else:
    bound = (f"in {'(' if metadata['low_open'] else '['}{low}, {high}"
             f"{')' if metadata['high_open'] else ']'}")
  raise ConfigError(f"{name} must be {bound}, got {value}.{hint}")


def _check_relations(config: ExperimentConfig) -> None:
  """The rules that tie settings together."""
  if not config.architectures:
    raise ConfigError("architectures is empty: give at least one, e.g. "
                      "--override=architectures=resnet32,resnet32")
  if config.method != "independent" and config.num_classifiers < 2:
    raise ConfigError(
        f"method={config.method} needs at least 2 classifiers (got architectures="
        f"{','.join(config.architectures)}); use method=independent for one.")
  optimization = config.optimization
  if optimization.lr_schedule == "step" and not optimization.lr_decay_epochs:
    raise ConfigError("lr_schedule=step needs lr_decay_epochs, e.g. "
                      "--override=lr_decay_epochs=100,150 (or use lr_schedule=cosine).")
  decay_epochs = optimization.lr_decay_epochs
  if any(epoch < 1 for epoch in decay_epochs):
    raise ConfigError(f"lr_decay_epochs must be epochs >= 1, got {decay_epochs}.")
  if any(later <= earlier for earlier, later in zip(decay_epochs, decay_epochs[1:])):
    raise ConfigError(f"lr_decay_epochs must be increasing, got {decay_epochs}.")


def _check_data(data: DataConfig) -> None:
  """The dataset's form, and the fields that only some kinds of dataset read."""
  kind, _ = parse_dataset(data.dataset)
  if kind != "folder" and (data.test_folder or data.test_fraction):
    field = "test_folder" if data.test_folder else "test_fraction"
    raise ConfigError(f"{field} is for dataset=folder:PATH; dataset={data.dataset} has "
                      f"a test split of its own. Drop {field}.")
  if kind != "tfds" and (data.train_split or data.test_split):
    field = "train_split" if data.train_split else "test_split"
    raise ConfigError(f"{field} is for dataset=tfds:NAME (a tensorflow-datasets split); "
                      f"dataset={data.dataset} has fixed splits. Drop {field}.")
  if kind == "tfds" and (data.train_split or "train") == (data.test_split or "test"):
    raise ConfigError(f"train_split and test_split are both {data.test_split!r}: the test "
                      "split must be held out, e.g. train_split='train[:90%]' and "
                      "test_split='train[90%:]'.")
  if kind == "folder":
    if not data.image_size:
      raise ConfigError(f"dataset={data.dataset} needs image_size: Keras resizes every "
                        "image of a folder to it while reading, e.g. "
                        "--override=image_size=32.")
    if data.test_folder and data.test_fraction:
      raise ConfigError("test_folder and test_fraction both give dataset="
                        f"{data.dataset} a test split; keep one.")
    if not data.test_folder and not data.test_fraction:
      raise ConfigError(
          f"dataset={data.dataset} needs a test split: test_folder=PATH (a second "
          "folder with the same class sub-folders) or test_fraction=0.2 (that share of "
          "the folder, carved with a fixed seed).")


def parse_dataset(dataset: str) -> Tuple[str, str]:
  """(kind, name): ("builtin", NAME), ("tfds", NAME), ("folder", PATH) or ("python", "").

  Raises ConfigError for anything else, naming the valid forms.
  """
  if dataset in DATASETS:
    return "builtin", dataset
  if dataset == PYTHON_DATASET:
    return "python", ""
  if dataset.startswith(TFDS_PREFIX):
    name = dataset[len(TFDS_PREFIX):].strip()
    if not name:
      raise ConfigError(f"dataset={dataset!r} names no tensorflow-datasets dataset: give "
                        "one after 'tfds:', e.g. dataset=tfds:svhn_cropped.")
    if not _TFDS_NAME.match(name):
      raise ConfigError(
          f"dataset={dataset!r}: {name!r} is not a tensorflow-datasets name (lower-case "
          "snake_case, optionally /CONFIG and :VERSION, e.g. tfds:svhn_cropped, "
          "tfds:cifar10_corrupted/brightness_1 or tfds:mnist:3.0.1).")
    return "tfds", name
  if dataset.startswith(FOLDER_PREFIX):
    path = dataset[len(FOLDER_PREFIX):].strip()
    if not path:
      raise ConfigError(f"dataset={dataset!r} names no folder: give its path after "
                        "'folder:', e.g. dataset=folder:/data/flowers/train (one "
                        "sub-folder of images per class).")
    return "folder", path
  hint = (f" (a tensorflow-datasets dataset is given as tfds:NAME, e.g. tfds:{dataset})"
          if _TFDS_NAME.match(dataset) else "")
  raise ConfigError(f"dataset={dataset!r} is not one of {DATASET_HELP}{hint}.")


# ---------------------------------------------------------------------------
# Typed values: overrides and config files, checked against the schema.


def _coerce(key: str, kind: Any, value: Any) -> Any:
  """Converts `value` (a string or a JSON value) to the field's declared type."""
  origin = typing.get_origin(kind)
  try:
    if origin is tuple:
      element = typing.get_args(kind)[0]
      if isinstance(value, str):
        items = [item for item in value.split(",") if item.strip()]
      else:
        items = list(value)
      return tuple(_coerce(key, element, item) for item in items)
    if isinstance(value, str):
      return scalars.parse_scalar(kind, value)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
      return value
    if kind is bool and isinstance(value, bool):
      return value
    if kind is str and isinstance(value, str):
      return value
    raise ValueError(f"{value!r} is a {type(value).__name__}")
  except (ValueError, TypeError) as error:
    type_name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"Override {key}: expected {type_name}, {error}.") from None


def apply_overrides(config: ExperimentConfig,
                    overrides: Mapping[str, Any]) -> ExperimentConfig:
  """Returns `config` with settings replaced, type-checked against the schema."""
  changes = {}
  for key, value in overrides.items():
    if key not in FIELDS or key == "name":
      raise ConfigError(unknown_key_message(key, [name for name in FIELDS if name != "name"]))
    changes[key] = _coerce(key, FIELDS[key].kind, value)
  return config.replace(**changes)


# Fields added after runs were written, with what a config.json without them means:
# the behaviour of the code that wrote it. A run of that time restores as trained.
FIELDS_ADDED_LATER = {
    "downsampling_padding": "same",
    "weight_decay_mode": "decoupled",
    "use_generator": True,
    "kdcl_target": "min_logit",  # Read by method=kdcl alone, which came with it.
}


def with_fields_added_later(values: Mapping[str, Any]) -> Dict[str, Any]:
  """`values` (a run's config.json) with every field of FIELDS_ADDED_LATER that it
  lacks set to the value its code implied."""
  return {**{key: value for key, value in FIELDS_ADDED_LATER.items() if key not in values},
          **values}


def config_from_dict(values: Mapping[str, Any]) -> ExperimentConfig:
  """The config whose to_dict() (e.g. a run's config.json) is `values`, validated.

  A field added after the file was written takes the value that reproduces the
  code which wrote it (FIELDS_ADDED_LATER). Raises ConfigError for a value that
  is not such a dict: unknown or missing fields, wrong types (JSON turned tuples
  into lists; they are turned back).
  """
  if not isinstance(values, Mapping):
    raise ConfigError(f"expected a JSON object of config fields, got a "
                      f"{type(values).__name__}")
  values = with_fields_added_later(values)
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise ConfigError("unknown config fields " + ", ".join(
        f"{key!r}{errors.did_you_mean(key, list(FIELDS))}" for key in unknown))
  missing = [name for name in ("name", "dataset") if name not in values]
  if missing:
    raise ConfigError(f"missing config fields {', '.join(missing)}")
  return ExperimentConfig.from_fields(**{
      key: tuple(value) if isinstance(value, list) else value
      for key, value in values.items()}).validate()


def differing_fields(saved: Mapping[str, Any], config: ExperimentConfig) -> List[str]:
  """The fields where a saved config.json differs from `config`, sorted.

  The comparison is between JSON forms, where tuples have become lists; a field
  the saved file lacks has the value its code implied (FIELDS_ADDED_LATER).
  """
  saved = with_fields_added_later(saved)
  wanted = json.loads(json.dumps(config.to_dict()))
  return [key for key in sorted(set(saved) | set(wanted))
          if saved.get(key) != wanted.get(key)]


def config_differences(saved: Mapping[str, Any], config: ExperimentConfig) -> List[str]:
  """"field (saved X, now Y)" for each field where a saved config.json differs."""
  saved = with_fields_added_later(saved)
  wanted = json.loads(json.dumps(config.to_dict()))
  return [f"{key} (saved {saved.get(key)!r}, now {wanted.get(key)!r})"
          for key in differing_fields(saved, config)]
