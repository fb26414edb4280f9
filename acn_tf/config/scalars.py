"""Scalars from text: how an override's or a search space's `VALUE` becomes a
bool, int, float or str.

The schema (schema.py) and the search-space grammar (search_space.py) both parse
text into a field's type; here, below both, so neither imports the other for it.
"""

from typing import Any


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
