"""The project's error types: what a user did wrong, as opposed to a bug.

Every `UserError` carries a message that names the offending flag, field, file
or path and says how to fix it; `run.py` prints it on one screen, without a
traceback, and exits with `exit_status`. Any other exception is a bug and keeps
its traceback. Each type also derives from the built-in error it refines, so
callers that catch ValueError or FileNotFoundError keep working.

No TensorFlow here: run.py reports config errors before TensorFlow loads.
`did_you_mean` phrases the nearest valid names for a misspelt one.
"""

import difflib
from typing import Sequence


class UserError(Exception):
  """Bad input or an unusable run; the message says what to do instead."""

  exit_status = 2


class ConfigError(UserError, ValueError):
  """A configuration value, override, flag or config file is invalid."""


class DataNotFoundError(UserError, FileNotFoundError):
  """No source had the dataset; the message lists every place looked in and how to get it."""


class DataFormatError(UserError, ValueError):
  """A data file exists but is corrupted, truncated or of the wrong shape."""


class ModelDirError(UserError, RuntimeError):
  """The model_dir cannot be used as asked; the message says what to do instead."""


class SearchFailedError(UserError, RuntimeError):
  """No trial of a hyperparameter search completed; the message gives the last
  trial's error, and tuning_results.json every trial's."""


class TrainingDivergedError(UserError, FloatingPointError):
  """A loss or the weights became NaN or infinite; training stopped before saving them."""

  exit_status = 3


class TrainingInterrupted(UserError, KeyboardInterrupt):
  """SIGTERM or SIGINT stopped training; its last checkpoint is kept to resume from.

  The exit status is the shell's convention for death by that signal (128 + its
  number: 143 for SIGTERM, 130 for SIGINT), so schedulers see an interruption.
  """

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.signal_number = signal_number
    self.exit_status = 128 + signal_number


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
  """"; did you mean 'X'?" with the candidates nearest to a misspelt `name`
  (difflib's ratio, its default cutoff), or "" when none is near."""
  close = difflib.get_close_matches(name, list(candidates), n=3)
  if not close:
    return ""
  quoted = [repr(match) for match in close]
  listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
  return f"; did you mean {listed}?"
