"""Every JSON file the project writes is strict JSON, written atomically.

Python's json module writes NaN and Infinity as the bare tokens `NaN` and
`Infinity`, which are not JSON: strict parsers (JavaScript's JSON.parse, jq,
most other languages) reject the whole file. Here a missing or non-finite
number is written as null, numpy scalars as plain numbers and tuples as lists,
and `allow_nan=False` makes anything that slipped through an error rather than
a broken file. A file is written to a temporary name and renamed into place, so
a crash mid-write never leaves a truncated results.json or config.json.

No TensorFlow here (run.py's config errors are reported before it loads).
"""

import json
import math
import os
import tempfile
from typing import Any

import numpy as np


def to_strict(value: Any) -> Any:
  """`value` with every non-finite float replaced by None, numpy scalars and arrays
  made plain Python, tuples made lists and mapping keys made strings."""
  if isinstance(value, dict):
    return {str(key): to_strict(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_strict(item) for item in value]
  if isinstance(value, np.ndarray):
    return to_strict(value.tolist())
  if isinstance(value, np.generic):
    return to_strict(value.item())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def dumps(value: Any, indent: int = 2) -> str:
  return json.dumps(to_strict(value), indent=indent, allow_nan=False)


def write(path: str, value: Any, indent: int = 2) -> None:
  """Writes `value` to `path` as strict JSON, atomically (temporary file + rename)."""
  text = dumps(value, indent=indent) + "\n"
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                                       suffix=os.path.basename(path))
  try:
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private (0600).
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
      stream.write(text)
      stream.flush()
      os.fsync(stream.fileno())
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _reject_constant(token: str):
  raise ValueError(f"{token} is not JSON (strict JSON has no NaN or Infinity)")


def loads(text: str) -> Any:
  """Parses strict JSON: NaN, Infinity and -Infinity are errors (ValueError)."""
  return json.loads(text, parse_constant=_reject_constant)


def read(path: str) -> Any:
  """Reads a JSON file the project wrote. Raises OSError or ValueError."""
  with open(path, encoding="utf-8") as handle:
    return json.loads(handle.read())
