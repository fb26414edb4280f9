"""How a setting declares its valid values, and the checks that read them.

A field of the config's dataclasses is declared with `setting()` (or one of its
shorthands): its default, its range or choices, a hint for the error message and
the methods that read it. `ExperimentConfig.validate()` checks every value with
`check_type` and `check_range` against what its field declared.
"""

import dataclasses
import math
import typing
from typing import Any, Mapping, Optional, Sequence

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
