"""How a setting declares its valid values, the checks that read them, and the
dataclass plumbing of a config made of sections.

A field of the config's dataclasses is declared with `setting()` (or one of its
shorthands): its default, its range or choices, a hint for the error message and
the methods that read it. `ExperimentConfig.validate()` checks every value with
`check_type` and `check_range` against what its field declared.
"""

import dataclasses
import math
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from acn_tf import errors
from acn_tf.config.methods import min_classifiers
from acn_tf.networks import architecture_names
from acn_tf.errors import ConfigError


def setting(default: Any, *, low: Optional[float] = None, low_open: bool = False,
            high: Optional[float] = None, high_open: bool = False,
            choices: Sequence[Any] = (), hint: str = "",
            methods: Optional[Sequence[str]] = None) -> Any:
  """A field with its valid range or choices, which `validate()` checks.

  `low`/`high` bound the value (open bounds excluded); `hint` is appended to the
  error when the value is out of range. `methods` are the methods that read the
  setting (a search over it under another method would change nothing); None:
  every method, or ACN alone for a setting of Phase A's section
  (schema.methods_reading).
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


def is_of_type(value: Any, kind: Any) -> bool:
  """isinstance, with bool not counted as a number and an int accepted as a float."""
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  return isinstance(value, kind)


def check_type(name: str, kind: Any, value: Any) -> None:
  """The declared type, and every float finite."""
  if typing.get_origin(kind) is tuple:
    element = typing.get_args(kind)[0]
    if not isinstance(value, tuple) or not all(is_of_type(item, element)
                                               for item in value):
      raise ConfigError(f"{name} must be a tuple of {element.__name__}, got {value!r}.")
    values = value
  else:
    if not is_of_type(value, kind):
      raise ConfigError(f"{name} must be of type {kind.__name__}, got {value!r} "
                        f"({type(value).__name__}).")
    values = (value,)
  if kind is float or typing.get_args(kind)[:1] == (float,):
    for item in values:
      if not math.isfinite(item):
        raise ConfigError(f"{name} must be a finite number, got {item}; set a real "
                          f"value (--override={name}=... or in --config_file).")


def check_range(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
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


def check_relations(config) -> None:
  """The rules that tie the settings of `config` (an ExperimentConfig) together."""
  if not config.architectures:
    raise ConfigError("architectures is empty: give at least one, e.g. "
                      "--override=architectures=resnet32,resnet32")
  if config.num_classifiers < min_classifiers(config.method):
    raise ConfigError(
        f"method={config.method} needs at least {min_classifiers(config.method)} "
        f"classifiers (got architectures={','.join(config.architectures)}); use "
        "method=independent for one.")
  if config.uses_branched_network():
    _check_branched(config)
  optimization = config.optimization
  if optimization.lr_schedule == "step" and not optimization.lr_decay_epochs:
    raise ConfigError("lr_schedule=step needs lr_decay_epochs, e.g. "
                      "--override=lr_decay_epochs=100,150 (or use lr_schedule=cosine).")
  decay_epochs = optimization.lr_decay_epochs
  if any(epoch < 1 for epoch in decay_epochs):
    raise ConfigError(f"lr_decay_epochs must be epochs >= 1, got {decay_epochs}.")
  if any(later <= earlier for earlier, later in zip(decay_epochs, decay_epochs[1:])):
    raise ConfigError(f"lr_decay_epochs must be increasing, got {decay_epochs}.")


def _check_branched(config) -> None:
  """ONE and CL-ILR branch one backbone: one architecture, split where it can be."""
  if len(set(config.architectures)) != 1:
    raise ConfigError(
        f"method={config.method} branches one backbone, one branch per entry of "
        f"architectures; got {','.join(config.architectures)}. Repeat one architecture, "
        f"e.g. --override=architectures={config.architectures[0]},"
        f"{config.architectures[0]},{config.architectures[0]}")
  try:
    architecture_names.resolve_split(config.architectures[0], config.branched.split_after)
  except ValueError as error:
    raise ConfigError(str(error)) from None


def unknown_key_message(key: str, valid: Sequence[str]) -> str:
  """The nearest valid keys first (a typo is the usual cause), then all of them."""
  return (f"Unknown config key {key!r}{errors.did_you_mean(key, valid) or '.'} Valid keys: "
          f"{', '.join(sorted(valid))}.")


def replace_nested(instance: Any, changes: Mapping[Tuple[str, ...], Any]) -> Any:
  """`instance` with the values at the given attribute paths replaced."""
  direct: Dict[str, Any] = {}
  nested: Dict[str, Dict[Tuple[str, ...], Any]] = {}
  for (head, *rest), value in changes.items():
    if rest:
      nested.setdefault(head, {})[tuple(rest)] = value
    else:
      direct[head] = value
  for head, section_changes in nested.items():
    direct[head] = replace_nested(direct.get(head, getattr(instance, head)),
                                   section_changes)
  return dataclasses.replace(instance, **direct)
