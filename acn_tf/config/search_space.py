"""The grammar of `search_space` entries (`field=log:LOW:HIGH`, ...).

Parsed here, without keras-tuner, so that `ExperimentConfig.validate()` checks a
search space before any trial runs; acn_tf/run/tuning.py turns each dimension into a
keras-tuner hyperparameter.
"""

import dataclasses
import math
from typing import Any, Mapping, Sequence, Tuple

from acn_tf.config import scalars
from acn_tf.errors import ConfigError, did_you_mean

SEARCH_KINDS = ("log", "linear", "int", "choice")
# Every trial must be scored on the same validation examples, carved with the
# same seed, so the fields that shape the data splits are not searchable; nor
# are those that shape the images (the channel statistics are computed once).
UNSEARCHABLE_FIELDS = ("seed", "train_examples", "validation_fraction", "test_fraction",
                       "image_size", "channels")
# Text settings a search may choose among (`divergence=choice:js|total_variation`):
# every one except the run's name, its method (a search compares settings of one
# method) and those that choose its data (every trial sees the same examples).
STRUCTURAL_TEXT_FIELDS = ("name", "method", "dataset", "test_folder", "train_split",
                          "test_split")
_SPEC_HELP = ("expected field=SPEC with SPEC one of log:LOW:HIGH, LOW:HIGH, "
              "int:LOW:HIGH or choice:A|B|C (the only kind for a text setting), e.g. "
              "learning_rate=log:0.01:0.2 or divergence=choice:js|total_variation")


@dataclasses.dataclass(frozen=True)
class SearchDimension:
  """One `search_space` entry: the field to tune and the values it may take."""

  field: str
  kind: str  # One of SEARCH_KINDS; "linear" and "log" sample floats.
  low: float = 0.0
  high: float = 0.0
  choices: Tuple[Any, ...] = ()


def parse_search_space(entries: Sequence[str],
                       field_types: Mapping[str, Any]) -> Tuple[SearchDimension, ...]:
  """Parses every entry against `field_types` (the schema's `field_types()`: every
  setting's name and type); raises ConfigError naming the bad one and the fix."""
  dimensions = tuple(parse_search_dimension(entry, field_types) for entry in entries)
  fields = [dimension.field for dimension in dimensions]
  repeated = sorted({field for field in fields if fields.count(field) > 1})
  if repeated:
    raise ConfigError(f"search_space names {', '.join(repeated)} more than once; "
                      "give one entry per field.")
  return dimensions


def parse_search_dimension(entry: str, field_types: Mapping[str, Any]) -> SearchDimension:
  field, separator, spec = (part.strip() for part in entry.partition("="))
  if not separator or not field or not spec:
    raise ConfigError(f"search_space entry {entry!r}: {_SPEC_HELP}.")
  kind = field_types.get(field)
  if not _searchable(field, kind):
    searchable = sorted(name for name, field_kind in field_types.items()
                        if _searchable(name, field_kind) and name not in UNSEARCHABLE_FIELDS)
    problem = ("is not a numeric or text config field." if kind is not None else
               f"is not a config field{did_you_mean(field, searchable) or '.'}")
    raise ConfigError(f"search_space entry {entry!r}: {field!r} {problem} Searchable "
                      f"fields: {', '.join(searchable)}.")
  if field in UNSEARCHABLE_FIELDS:
    raise ConfigError(f"search_space entry {entry!r}: {field} shapes the data splits or "
                      "the images, which must be the same for every trial; set it with an "
                      "override.")
  try:
    dimension = _parse_spec(field, kind, spec)
  except ValueError as error:
    raise ConfigError(f"search_space entry {entry!r}: {error}; {_SPEC_HELP}.") from None
  return dimension


def _searchable(field: str, kind: Any) -> bool:
  return kind in (int, float) or (kind is str and field not in STRUCTURAL_TEXT_FIELDS)


def _parse_spec(field: str, kind: Any, spec: str) -> SearchDimension:
  """Raises ValueError (with the reason) for a malformed or empty range."""
  head, _, rest = spec.partition(":")
  if kind is str and head != "choice":
    raise ValueError(f"{field} is a text setting: use choice:A|B")
  if head == "choice":
    choices = tuple(scalars.parse_scalar(kind, value.strip()) for value in rest.split("|"))
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
