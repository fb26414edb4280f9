"""Experiment configuration: one frozen dataclass, a named registry, typed overrides.

Every hyperparameter of docs/METHOD.md is a field here, so each method
(independent, DML, ACN) and each ablation is a configuration of one code path.
Library code receives an `ExperimentConfig`; only `run.py` reads flags.
"""

import dataclasses
import json
import math
import os
import re
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from acn_tf import errors

METHODS = ("independent", "dml", "acn")
# The datasets known by name; any other dataset is "tfds:NAME" or "folder:PATH".
DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
# An image-classification dataset of tensorflow-datasets, by its tfds name.
TFDS_PREFIX = "tfds:"
# A folder of images with one sub-folder per class (Keras' image_dataset_from_directory).
FOLDER_PREFIX = "folder:"
# The caller's own tf.data pipeline (acn_tf/api.py): nothing for run.py to load.
PYTHON_DATASET = "python"
# Channels a dataset may be converted to: 0 keeps the dataset's own.
CHANNELS = (0, 1, 3)
DATASET_HELP = (f"{', '.join(DATASETS)}, tfds:NAME (an image-classification dataset of "
                 "tensorflow-datasets, e.g. tfds:svhn_cropped) or folder:PATH (a folder "
                 "with one sub-folder of images per class, e.g. folder:/data/flowers/train)")
# A tfds name: builder name, optional /config, optional :version (as tfds.builder takes it).
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?$")
AUGMENTATIONS = ("none", "crop", "crop_flip")
LR_SCHEDULES = ("constant", "step", "cosine")
DIVERGENCES = ("js", "sym_kl", "total_variation", "logit_l1")
ADV_NORMALIZATIONS = ("batch", "kept")
MASK_SOURCES = ("search", "update")
RAS_OBJECTIVES = ("divergence", "generator_loss")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
# Distribution strategies (acn_tf/distribute.py); listed here, where run.py can
# read them without importing TensorFlow before its flags are parsed.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


# A configuration value, override or config file is invalid; the message says how
# to fix it. Defined in acn_tf/errors.py with the project's other error types.
ConfigError = errors.ConfigError


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything one training run needs, with the spec's defaults."""

  name: str
  dataset: str
  # One entry per classifier: n = len(architectures); mixed pairs are allowed.
  architectures: Tuple[str, ...] = ("resnet32", "resnet32")
  method: str = "dml"
  seed: int = 0

  # Data. `dataset`: one of DATASETS, "tfds:NAME" or "folder:PATH" (parse_dataset).
  # Resize every image to image_size x image_size (0: keep the dataset's size;
  # a folder needs one, since Keras resizes while it reads).
  image_size: int = 0
  # 1 (grayscale) or 3 (RGB); 0 keeps the dataset's own (a folder is read as RGB).
  channels: int = 0
  # folder: the test split, either a second folder of the same classes (a path,
  # relative ones resolved like the dataset's) or this fraction of the folder,
  # carved with a fixed seed (the same test images whatever `seed`).
  test_folder: str = ""
  test_fraction: float = 0.0
  # tfds: the splits to train and test on, any tfds split expression such as
  # "validation" or "train[90%:]" ("": "train" and "test").
  train_split: str = ""
  test_split: str = ""
  batch_size: int = 128
  augmentation: str = "crop_flip"
  crop_padding: int = 4
  # Train on the first `train_examples` examples only (0: all). For CPU-sized runs.
  train_examples: int = 0
  # Fraction of the training set held out for validation (tuning and model selection).
  validation_fraction: float = 0.0
  # Evaluate on the validation split every this many epochs (and at the last one).
  validation_every_epochs: int = 1

  # Classifier optimisation (SGD, as in the paper-style CIFAR runs).
  epochs: int = 200
  learning_rate: float = 0.1
  momentum: float = 0.9
  nesterov: bool = True
  weight_decay: float = 5e-4
  lr_schedule: str = "cosine"
  lr_decay_epochs: Tuple[int, ...] = (100, 150)
  lr_decay_factor: float = 0.1
  # Limit steps per epoch (0: a full pass over the training data).
  steps_per_epoch: int = 0

  # Phase B: co-distillation.
  temperature: float = 1.0
  kd_weight: float = 1.0
  adv_weight: float = 1.0
  adv_ce_weight: float = 1.0
  # Averaging of the divergent-batch loss over the label mask m. "kept" (mean over
  # kept examples) is the spec's literal reading; it collapses training from
  # scratch (measured, see experiments/RESULTS.md), so the default is "batch":
  # sum over kept examples / batch size, which scales the term by the kept share.
  adv_normalization: str = "batch"

  # Phase A: generator with the Weakly Residual Connection.
  # Phase A's networks are kept small next to the classifiers: at 32 filters the
  # generator's forward and backward cost about 0.75 of a ResNet-32's, at 16 about
  # 0.25 (experiments/BENCHMARKS.md).
  generator_filters: int = 16
  generator_blocks: int = 2
  noise_channels: int = 4
  wrc_alpha: float = 0.1
  # Weight of the generator's keep-the-label term CE(p̄(x̃0), y). 0.1, not the
  # spec's 1: in training the classifiers soon agree on whatever the generator
  # makes, and with the label term at 1 the generator then retreats to x̃0 = x
  # (Div(x̃0) / Div(x) back to 1.0 on validation images; 2.2 at 0.1 together with
  # divergence_weight 5). The label restriction still drops examples that lost y.
  keep_label_weight: float = 0.1
  # What the generator and the search maximise: "js" (the spec's Div), "sym_kl",
  # "total_variation" or "logit_l1" (mean L1 distance between the peers' logits).
  # JS and KL grow quadratically from agreement, so their gradient vanishes where
  # the generator starts (x̃0 = x, peers agree) and the label term drowns it: with
  # "js" the generator left Div(x̃0) / Div(x) at 1.00, with "total_variation"
  # it reached 7 (experiments/RESULTS.md, "Phase A"). Metrics always report the
  # spec's JS at temperature 1 (losses.reported_divergence), whatever is chosen.
  divergence: str = "total_variation"
  # Weight of that divergence in the generator's loss L_g: 5 keeps the generator
  # pushing once the classifiers have learned to agree on its examples (at 1 it
  # gave up: see keep_label_weight).
  divergence_weight: float = 5.0
  # Temperature of the probabilities that divergence compares (the spec uses
  # Phase B's `temperature`). Softened probabilities agree more: at temperature 4
  # the generator raised Div(x̃0) / Div(x) to 3.7 in 300 steps, at 1 to 12.8.
  divergence_temperature: float = 1.0
  # Phase A: discriminator (gan_weight = 0 removes it: the "no GAN" ablation).
  gan_weight: float = 1.0
  discriminator_filters: int = 16
  spectral_norm: bool = True
  # Phase A: Restricted Adversarial Search.
  ras_steps: int = 1
  ras_step_size: float = 2.0 / 255.0
  # The search's L-inf ball around x must contain the generator's reach
  # (wrc_alpha): a smaller ball clips away what the generator found (with 8/255,
  # Div(x̃) / Div(x) fell from 4.5 to 1.9 as the generator learned).
  ras_epsilon: float = 0.1
  ras_label_restrict: bool = True
  # The label mask's pass at x̃: "search" (a separate inference-mode pass, the spec's
  # reading) or "update" (the classifier update's own training-mode forward on x̃).
  # "update" saves one pass of every classifier per step at the same accuracy
  # (measured, experiments/RESULTS.md and BENCHMARKS.md), so it is the default.
  ras_mask_source: str = "update"
  # What the search ascends: "divergence" (Div, the spec) or "generator_loss"
  # (-L_g: Div minus the label-keeping and GAN terms), whose first step reuses the
  # generator update's backward pass: one classifier backward pass fewer per step.
  ras_objective: str = "divergence"
  # Schedule of the adversarial phase.
  adv_warmup_epochs: int = 0
  generator_updates: int = 1
  discriminator_updates: int = 1
  # Ten times the spec's GAN rate: at 2e-4 the generator had not moved Div(x̃0)
  # after 300 steps with any objective (experiments/RESULTS.md, "Phase A").
  generator_learning_rate: float = 2e-3
  discriminator_learning_rate: float = 2e-4
  adversarial_beta_1: float = 0.5

  # Records. checkpoint_every_steps = 0 checkpoints at each epoch's end only.
  checkpoint_every_steps: int = 0
  # TensorBoard scalars every this many steps (0: per epoch only).
  log_every_steps: int = 50

  # Hyperparameter search (--mode=tune): "field=spec" entries, spec one of
  # log:LOW:HIGH, LOW:HIGH, int:LOW:HIGH or choice:A|B|C (no commas: the override
  # parser splits tuples on them).
  search_space: Tuple[str, ...] = (
      "learning_rate=log:0.01:0.2", "wrc_alpha=0.02:0.2", "ras_epsilon=0.02:0.2",
      "ras_steps=int:0:3", "adv_weight=0.25:2.0", "kd_weight=0.5:2.0",
      "temperature=choice:1|2|4")

  # Execution. jit_compile: "auto" (XLA on GPU only), "true" or "false".
  jit_compile: str = "auto"
  # "none", "mixed_float16" (GPU) or "mixed_bfloat16"; losses stay float32.
  mixed_precision: str = "none"
  # TensorFlow op determinism: with a fixed seed, two runs give identical results.
  deterministic: bool = False

  @property
  def num_classifiers(self) -> int:
    return len(self.architectures)

  def effective_kd_weight(self) -> float:
    """`independent` is DML with the distillation term switched off."""
    return 0.0 if self.method == "independent" else self.kd_weight

  def uses_adversarial_phase(self) -> bool:
    return self.method == "acn"

  def replace(self, **changes: Any) -> "ExperimentConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def validate(self) -> "ExperimentConfig":
    """Raises ConfigError naming the bad field and its valid range.

    Types first (a config built in Python, or read from a file, may hold a string
    where a number belongs), then finiteness (nan and inf pass every comparison
    below but poison training), then the choices and ranges.
    """
    _check_types(self)
    if not self.name:
      raise ConfigError("name is empty: give the experiment a name.")
    _check_choice("method", self.method, METHODS)
    _check_data_fields(self)
    _check_choice("augmentation", self.augmentation, AUGMENTATIONS)
    _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
    _check_choice("divergence", self.divergence, DIVERGENCES)
    _check_choice("adv_normalization", self.adv_normalization, ADV_NORMALIZATIONS)
    _check_choice("ras_mask_source", self.ras_mask_source, MASK_SOURCES)
    _check_choice("ras_objective", self.ras_objective, RAS_OBJECTIVES)
    _check_choice("jit_compile", self.jit_compile, ("auto", "true", "false"))
    _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
    if not self.architectures:
      raise ConfigError("architectures is empty: give at least one, e.g. "
                        "--override=architectures=resnet32,resnet32")
    if self.method != "independent" and self.num_classifiers < 2:
      raise ConfigError(
          f"method={self.method} needs at least 2 classifiers (got architectures="
          f"{','.join(self.architectures)}); use method=independent for one.")
    positive = ("batch_size", "epochs", "learning_rate", "temperature",
                "divergence_temperature", "generator_updates", "discriminator_updates",
                "generator_learning_rate", "discriminator_learning_rate",
                "generator_filters", "discriminator_filters", "validation_every_epochs")
    for name in positive:
      if getattr(self, name) <= 0:
        raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}.")
    non_negative = ("seed", "train_examples", "weight_decay", "momentum",
                    "steps_per_epoch", "kd_weight", "adv_weight", "adv_ce_weight",
                    "wrc_alpha", "keep_label_weight", "divergence_weight", "gan_weight",
                    "ras_steps", "ras_step_size", "ras_epsilon", "adv_warmup_epochs",
                    "noise_channels", "generator_blocks", "crop_padding",
                    "checkpoint_every_steps", "log_every_steps")
    for name in non_negative:
      if getattr(self, name) < 0:
        raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
    if not 0.0 <= self.validation_fraction < 1.0:
      raise ConfigError("validation_fraction must be in [0, 1), got "
                        f"{self.validation_fraction}.")
    if self.momentum > 1.0:
      raise ConfigError(f"momentum must be in [0, 1], got {self.momentum}.")
    if not 0.0 <= self.adversarial_beta_1 < 1.0:
      raise ConfigError("adversarial_beta_1 (Adam's beta_1) must be in [0, 1), got "
                        f"{self.adversarial_beta_1}.")
    if self.lr_decay_factor <= 0:
      raise ConfigError(f"lr_decay_factor must be > 0, got {self.lr_decay_factor}.")
    if self.lr_schedule == "step" and not self.lr_decay_epochs:
      raise ConfigError("lr_schedule=step needs lr_decay_epochs, e.g. "
                        "--override=lr_decay_epochs=100,150 (or use lr_schedule=cosine).")
    if any(epoch < 1 for epoch in self.lr_decay_epochs):
      raise ConfigError(f"lr_decay_epochs must be epochs >= 1, got {self.lr_decay_epochs}.")
    if self.wrc_alpha > 1.0 or self.ras_epsilon > 1.0:
      raise ConfigError("wrc_alpha and ras_epsilon are in pixel units of [0, 1] "
                        "images; values above 1 make no sense.")
    if any(later <= earlier for earlier, later in
           zip(self.lr_decay_epochs, self.lr_decay_epochs[1:])):
      raise ConfigError(f"lr_decay_epochs must be increasing, got {self.lr_decay_epochs}.")
    parse_search_space(self.search_space)
    from acn_tf import backbones  # Local import: backbones imports keras.
    for architecture in self.architectures:
      try:
        backbones.check_architecture_name(architecture)
      except ValueError as error:
        raise ConfigError(str(error)) from None
    return self


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


def _check_data_fields(config: "ExperimentConfig") -> None:
  """The dataset's form, and the fields that only some kinds of dataset read."""
  kind, _ = parse_dataset(config.dataset)
  if config.image_size < 0:
    raise ConfigError(f"image_size must be >= 0 (0 keeps the dataset's size), got "
                      f"{config.image_size}.")
  if config.channels not in CHANNELS:
    raise ConfigError(f"channels={config.channels} is not one of 1 (grayscale), 3 (RGB) "
                      "or 0 (the dataset's own).")
  if not 0.0 <= config.test_fraction < 1.0:
    raise ConfigError(f"test_fraction must be in [0, 1), got {config.test_fraction}.")
  if kind != "folder" and (config.test_folder or config.test_fraction):
    field = "test_folder" if config.test_folder else "test_fraction"
    raise ConfigError(f"{field} is for dataset=folder:PATH; dataset={config.dataset} has "
                      f"a test split of its own. Drop {field}.")
  if kind != "tfds" and (config.train_split or config.test_split):
    field = "train_split" if config.train_split else "test_split"
    raise ConfigError(f"{field} is for dataset=tfds:NAME (a tensorflow-datasets split); "
                      f"dataset={config.dataset} has fixed splits. Drop {field}.")
  if kind == "tfds" and (config.train_split or "train") == (config.test_split or "test"):
    raise ConfigError(f"train_split and test_split are both {config.test_split!r}: the test "
                      "split must be held out, e.g. train_split='train[:90%]' and "
                      "test_split='train[90%:]'.")
  if kind == "folder":
    if not config.image_size:
      raise ConfigError(f"dataset={config.dataset} needs image_size: Keras resizes every "
                        "image of a folder to it while reading, e.g. "
                        "--override=image_size=32.")
    if config.test_folder and config.test_fraction:
      raise ConfigError("test_folder and test_fraction both give dataset="
                        f"{config.dataset} a test split; keep one.")
    if not config.test_folder and not config.test_fraction:
      raise ConfigError(
          f"dataset={config.dataset} needs a test split: test_folder=PATH (a second "
          "folder with the same class sub-folders) or test_fraction=0.2 (that share of "
          "the folder, carved with a fixed seed).")


def _is_of_type(value: Any, kind: Any) -> bool:
  """isinstance, with bool not counted as a number and an int accepted as a float."""
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, kind)


def _check_types(config: "ExperimentConfig") -> None:
  """Every field of its declared type, and every float finite."""
  for name, kind in _field_types().items():
    value = getattr(config, name)
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


def _check_choice(field: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f"{field}={value!r} is not one of {', '.join(choices)}.")


# ---------------------------------------------------------------------------
# Search space: parsed here, without keras-tuner, so that validate() checks it;
# acn_tf/tuning.py turns each dimension into a keras-tuner hyperparameter.

SEARCH_KINDS = ("log", "linear", "int", "choice")
# Every trial must be scored on the same validation examples, carved with the
# same seed, so the fields that shape the data splits are not searchable; nor
# are those that shape the images (the channel statistics are computed once).
UNSEARCHABLE_FIELDS = ("seed", "train_examples", "validation_fraction", "test_fraction",
                       "image_size", "channels")
_SPEC_HELP = ("expected field=SPEC with SPEC one of log:LOW:HIGH, LOW:HIGH, "
              "int:LOW:HIGH or choice:A|B|C, e.g. learning_rate=log:0.01:0.2")


@dataclasses.dataclass(frozen=True)
class SearchDimension:
  """One `search_space` entry: the field to tune and the values it may take."""

  field: str
  kind: str  # One of SEARCH_KINDS; "linear" and "log" sample floats.
  low: float = 0.0
  high: float = 0.0
  choices: Tuple[Any, ...] = ()


def parse_search_space(entries: Sequence[str]) -> Tuple[SearchDimension, ...]:
  """Parses every entry; raises ConfigError naming the bad one and the fix."""
  dimensions = tuple(parse_search_dimension(entry) for entry in entries)
  fields = [dimension.field for dimension in dimensions]
  repeated = sorted({field for field in fields if fields.count(field) > 1})
  if repeated:
    raise ConfigError(f"search_space names {', '.join(repeated)} more than once; "
                      "give one entry per field.")
  return dimensions


def parse_search_dimension(entry: str) -> SearchDimension:
  field, separator, spec = (part.strip() for part in entry.partition("="))
  if not separator or not field or not spec:
    raise ConfigError(f"search_space entry {entry!r}: {_SPEC_HELP}.")
  kind = _field_types().get(field)
  if kind not in (int, float) or field == "name":
    numeric = sorted(name for name, field_kind in _field_types().items()
                     if field_kind in (int, float) and name not in UNSEARCHABLE_FIELDS)
    raise ConfigError(f"search_space entry {entry!r}: {field!r} is not a numeric config "
                      f"field. Searchable fields: {', '.join(numeric)}.")
  if field in UNSEARCHABLE_FIELDS:
    raise ConfigError(f"search_space entry {entry!r}: {field} shapes the data splits or "
                      "the images, which must be the same for every trial; set it with an "
                      "override.")
  try:
    dimension = _parse_spec(field, kind, spec)
  except ValueError as error:
    raise ConfigError(f"search_space entry {entry!r}: {error}; {_SPEC_HELP}.") from None
  return dimension


def _parse_spec(field: str, kind: Any, spec: str) -> SearchDimension:
  """Raises ValueError (with the reason) for a malformed or empty range."""
  head, _, rest = spec.partition(":")
  if head == "choice":
    choices = tuple(_parse_scalar(kind, value.strip()) for value in rest.split("|"))
    if any(isinstance(choice, float) and not math.isfinite(choice) for choice in choices):
      raise ValueError(f"choices must be finite numbers, got {rest}")
    if len(choices) < 2 or len(set(choices)) != len(choices):
      raise ValueError("choice needs at least two distinct values (one value is not "
                       "a search: set it with an override)")
    return SearchDimension(field, "choice", choices=choices)
  search_kind = head if head in ("log", "int") else "linear"
  bounds = rest.split(":") if search_kind != "linear" else spec.split(":")
  if search_kind == "linear" and len(bounds) == 3:
    raise ValueError(f"unknown kind {head!r}")
  if len(bounds) != 2:
    raise ValueError(f"{search_kind} needs exactly two bounds LOW:HIGH")
  number = int if search_kind == "int" else float
  low, high = (number(bound.strip()) for bound in bounds)
  if not (math.isfinite(low) and math.isfinite(high)):
    raise ValueError(f"bounds must be finite numbers, got {low} and {high}")
  if kind is int and search_kind != "int":
    raise ValueError(f"{field} is an integer field: use int:LOW:HIGH or choice")
  if not low < high:
    raise ValueError(f"LOW={low} must be below HIGH={high}")
  if search_kind == "log" and low <= 0:
    raise ValueError(f"log sampling needs LOW > 0, got {low}")
  return SearchDimension(field, search_kind, low=low, high=high)


# ---------------------------------------------------------------------------
# Registry of named experiments.

_REGISTRY: Dict[str, Callable[[], ExperimentConfig]] = {}


def register(name: str):
  """Decorator: registers a function returning the config of experiment `name`."""

  def decorator(factory: Callable[[], ExperimentConfig]):
    if name in _REGISTRY:
      raise KeyError(f"Experiment {name!r} is registered twice.")
    _REGISTRY[name] = factory
    return factory

  return decorator


def experiment_names() -> Tuple[str, ...]:
  from acn_tf import experiments  # noqa: F401  (fills the registry)
  return tuple(sorted(_REGISTRY))


def get_experiment(name: str) -> ExperimentConfig:
  names = experiment_names()
  if name not in _REGISTRY:
    raise ConfigError(f"Unknown experiment {name!r}. Known experiments: "
                      f"{', '.join(names)}.")
  return _REGISTRY[name]()


# ---------------------------------------------------------------------------
# Typed overrides: "key=value" strings from the command line or a JSON file.


def _field_types() -> Dict[str, Any]:
  hints = typing.get_type_hints(ExperimentConfig)
  return {f.name: hints[f.name] for f in dataclasses.fields(ExperimentConfig)}


def _parse_bool(text: str) -> bool:
  lowered = text.strip().lower()
  if lowered in ("true", "1", "yes"):
    return True
  if lowered in ("false", "0", "no"):
    return False
  raise ValueError(f"{text!r} is not a boolean (true/false)")


def _parse_scalar(kind: Any, text: str) -> Any:
  if kind is bool:
    return _parse_bool(text)
  if kind is int:
    return int(text)
  if kind is float:
    return float(text)
  if kind is str:
    return text
  raise TypeError(f"unsupported field type {kind}")


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
      return _parse_scalar(kind, value)
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
  """Returns `config` with fields replaced, type-checked against the dataclass."""
  types = _field_types()
  changes = {}
  for key, value in overrides.items():
    if key not in types or key == "name":
      valid = ", ".join(name for name in sorted(types) if name != "name")
      raise ConfigError(f"Unknown config key {key!r}. Valid keys: {valid}.")
    changes[key] = _coerce(key, types[key], value)
  return config.replace(**changes)


def config_from_dict(values: Mapping[str, Any]) -> ExperimentConfig:
  """The config whose to_dict() (e.g. a run's config.json) is `values`, validated.

  Raises ConfigError for a value that is not such a dict: unknown or missing
  fields, wrong types (JSON turned tuples into lists; they are turned back).
  """
  if not isinstance(values, Mapping):
    raise ConfigError(f"expected a JSON object of config fields, got a "
                      f"{type(values).__name__}")
  types = _field_types()
  unknown = sorted(set(values) - set(types))
  if unknown:
    raise ConfigError(f"unknown config fields {', '.join(map(repr, unknown))}")
  missing = [name for name in ("name", "dataset") if name not in values]
  if missing:
    raise ConfigError(f"missing config fields {', '.join(missing)}")
  return ExperimentConfig(**{key: tuple(value) if isinstance(value, list) else value
                             for key, value in values.items()}).validate()


def differing_fields(saved: Mapping[str, Any], config: ExperimentConfig) -> List[str]:
  """The fields where a saved config.json differs from `config`, sorted.

  The comparison is between JSON forms, where tuples have become lists.
  """
  wanted = json.loads(json.dumps(config.to_dict()))
  return [key for key in sorted(set(saved) | set(wanted))
          if saved.get(key) != wanted.get(key)]


def config_differences(saved: Mapping[str, Any], config: ExperimentConfig) -> List[str]:
  """"field (saved X, now Y)" for each field where a saved config.json differs."""
  wanted = json.loads(json.dumps(config.to_dict()))
  return [f"{key} (saved {saved.get(key)!r}, now {wanted.get(key)!r})"
          for key in differing_fields(saved, config)]


def parse_override_strings(items: Sequence[str]) -> Dict[str, str]:
  """Parses ["key=value", ...] into a dict, rejecting malformed items."""
  parsed = {}
  for item in items:
    key, separator, value = item.partition("=")
    if not separator or not key.strip():
      raise ConfigError(f"Override {item!r} is not of the form key=value "
                        "(e.g. --override=epochs=10).")
    parsed[key.strip()] = value.strip()
  return parsed


def load_config_file(path: str) -> Dict[str, Any]:
  """Reads a JSON object of field values (e.g. a tuner's best_config.json).

  Every way the file can be unusable is a ConfigError naming the flag and the file.
  """
  flag = f"--config_file={path}"
  example = 'e.g. {"learning_rate": 0.05, "epochs": 30} or a search\'s best_config.json'
  if not os.path.exists(path):
    raise ConfigError(f"{flag}: no such file. Give the path of a JSON object of config "
                      f"fields, {example}.")
  if os.path.isdir(path):
    raise ConfigError(f"{flag} is a directory, not a JSON file; give the file itself, "
                      f"{example}.")
  try:
    with open(path, encoding="utf-8") as handle:
      text = handle.read()
  except UnicodeDecodeError:
    raise ConfigError(f"{flag} is not a UTF-8 text file: expected a JSON object of config "
                      f"fields, {example}.") from None
  except OSError as error:
    raise ConfigError(f"{flag} cannot be read ({error.strerror or error}); check that it "
                      "is a readable file.") from None
  try:
    values = json.loads(text)
  except json.JSONDecodeError as error:
    raise ConfigError(f"{flag} is not valid JSON ({error.msg}, line {error.lineno} column "
                      f"{error.colno}); expected a JSON object of config fields, "
                      f"{example}.") from None
  if not isinstance(values, dict):
    raise ConfigError(f"{flag} holds a JSON {type(values).__name__}, not an object of "
                      f"config fields; expected {example}.")
  return values


def resolve_config(experiment: Optional[str],
                   method: Optional[str] = None,
                   config_file: Optional[str] = None,
                   overrides: Sequence[str] = ()) -> ExperimentConfig:
  """The base, then the config file, then --method, then overrides.

  The base is the registered `experiment` when one is named; without it, the
  config file is a whole experiment of its own: its fields over
  ExperimentConfig's defaults, so it (or an override) must give `dataset`.
  The file's `name` names the experiment (and the default model_dir); without
  one, a named base keeps its name and a file alone is named after the file
  (my_experiment.json: "my_experiment").
  """
  if not experiment and not config_file:
    raise ConfigError(
        "--experiment or --config_file is required: --experiment=NAME runs a registered "
        f"experiment ({', '.join(experiment_names())}); --config_file=FILE.json runs the "
        'experiment that file defines, e.g. {"name": "flowers", "dataset": '
        '"folder:/data/flowers/train", "test_fraction": 0.2, "image_size": 64}.')
  file_values: Dict[str, Any] = load_config_file(config_file) if config_file else {}
  name = file_values.pop("name", None)
  if name is not None and (not isinstance(name, str) or not name.strip()):
    raise ConfigError(f"--config_file={config_file}: name must be a non-empty string, got "
                      f"{name!r}.")
  parsed_overrides = parse_override_strings(overrides)
  if experiment:
    config = get_experiment(experiment)
  else:
    if "dataset" not in file_values and "dataset" not in parsed_overrides:
      raise ConfigError(
          f"--config_file={config_file} gives no dataset, and no --experiment gives one: "
          f'add "dataset": one of {DATASET_HELP}, to the file, or name a registered '
          f"experiment as its base with --experiment=NAME ({', '.join(experiment_names())}).")
    stem = os.path.splitext(os.path.basename(config_file))[0]
    dataset = file_values.get("dataset", parsed_overrides.get("dataset"))
    config = ExperimentConfig(name=stem, dataset=dataset if isinstance(dataset, str) else "")
  if name is not None:
    config = config.replace(name=name.strip())
  if file_values:
    try:
      config = apply_overrides(config, file_values)
    except ConfigError as error:
      raise ConfigError(f"--config_file={config_file}: {error}") from None
  if method:
    config = apply_overrides(config, {"method": method})
  config = apply_overrides(config, parsed_overrides)
  return config.validate()
