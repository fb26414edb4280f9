"""Typed values from text and JSON: how an override's, a config file's or a search
space's `VALUE` becomes a bool, int, float, str or tuple of them.

The schema (schema.py) and the search-space grammar (search_space.py) both parse
text into a field's type; here, below both, so neither imports the other for it.
"""

import typing
from typing import Any

from acn_tf.errors import ConfigError


def parse_bool(text: str) -> bool:
  lowered = text.strip().lower()
  if lowered in ("true", "1", "yes"):
    return True
  if lowered in ("false", "0", "no"):
    return False
  raise ValueError(f"{text!r} is not a boolean (true/false)")


def parse_scalar(kind: Any, text: str) -> Any:
  if kind is bool:
    return parse_bool(text)
  if kind is int:
    return int(text)
  if kind is float:
    return float(text)
  if kind is str:
    return text
  raise TypeError(f"unsupported field type {kind}")


def coerce(key: str, kind: Any, value: Any) -> Any:
  """`value` (a string or a JSON value) as the field `key`'s declared type `kind`;
  ConfigError naming the key otherwise. A string of a tuple field is split on
  commas."""
  origin = typing.get_origin(kind)
  try:
    if origin is tuple:
      element = typing.get_args(kind)[0]
      if isinstance(value, str):
        items = [item for item in value.split(",") if item.strip()]
      else:
        items = list(value)
      return tuple(coerce(key, element, item) for item in items)
    if isinstance(value, str):
      return parse_scalar(kind, value)
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
