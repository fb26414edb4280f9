"""How a run's directory is written so that kills, retries and full disks lose nothing.

- `RunDirLock`: one writer per `--model_dir`. An advisory `fcntl.flock` on the
  file LOCK_FILE there; the kernel releases it when its holder exits or dies
  (SIGKILL included), so a lock is never left stuck. A second process that
  wants the directory is refused at once (ModelDirError naming the directory
  and the holder's PID, which the holder writes into the file). Training,
  a search and an export hold it exclusively; an evaluation holds it shared
  (several evaluations may read one run at once: each replaces results.json
  whole with the figures of the same weights, while no training or export may
  write meanwhile).
- `writing(path)`: an OSError of a write (ENOSPC above all; h5py's and
  TensorFlow's errors that carry one too) becomes one StorageError naming the
  path and the cause, and what to do: free space, then run the same command.
  h5py cannot close a file it failed to write: a program that goes on after
  such an error may see h5py's tracebacks, or a crash, when it exits (run.py
  ends at once after printing the error, for that reason).
- `replace_directory`: a directory written under a temporary name is renamed
  into place, so a folder under its final name is always whole; leftovers of a
  kill (the temporary or the replaced folder) are removed by the next command.
- `reach(stage)`: a named point of the final phase where a test (the
  environment variable STOP_AT_VARIABLE) kills the process or raises an OSError
  of a full disk, to show that the same command then completes the run.
"""

import contextlib
import errno as errno_codes
import fcntl
import os
import re
import shutil
import signal
from typing import Optional

from acn_tf import errors

LOCK_FILE = ".lock"
# A folder being written (NAME + INCOMING_SUFFIX) or being removed (NAME + REMOVING_SUFFIX).
INCOMING_SUFFIX = ".incoming"
REMOVING_SUFFIX = ".removing"
# Test hook: "STAGE" or "STAGE:kill" kills the process (SIGKILL) when it reaches
# STAGE; "STAGE:enospc" raises the OSError of a full disk there.
STOP_AT_VARIABLE = "ACN_TF_STOP_AT"


class StorageError(errors.UserError, OSError):
  """A file of the run could not be written (full disk, no permission, I/O error)."""


# -- One writer per run directory -----------------------------------------------------


class RunDirLock:
  """The advisory lock of a run directory; `acquire` may be called again (then it
  only records the PID). `release` (or the process's end) frees it. The file is never
  removed: removing it would let two processes lock two different files."""

  def __init__(self, model_dir: str, shared: bool = False, purpose: str = "training",
               lock_file: str = LOCK_FILE):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, lock_file)
    self.shared = shared
    self.purpose = purpose
    self._handle: Optional[int] = None

  @property
  def held(self) -> bool:
    return self._handle is not None

  def acquire(self, create: bool = True, record: bool = True) -> bool:
    """Takes the lock; with create=False only if the lock file already exists
    (a directory that no run of this version ever wrote into is left untouched).
    With `record`, writes this process's PID into the file, for the message of a
    process refused; without, the file is left as it was (a check that may still
    refuse the command comes first). Called again, only records. Returns whether
    the lock is held. Raises ModelDirError if another process holds it,
    StorageError if the file cannot be made."""
    if not self.held:
      if not create and not os.path.exists(self.path):
        return False
      try:
        handle = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
      except FileNotFoundError:
        if create:
          raise
        return False
      except OSError as error:
        raise storage_error(self.path, error) from None
      try:
        fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _holder(handle)
        os.close(handle)
        raise errors.ModelDirError(
            f"--model_dir={self.model_dir} is in use by {holder} (it holds {self.path}); "
            f"one process at a time may write a run: wait for it to end, or choose "
            f"another --model_dir for this {self.purpose}.") from None
      self._handle = handle
    if record:
      try:  # The latest holder's PID, which a process refused names.
        os.ftruncate(self._handle, 0)
        os.pwrite(self._handle, f"{os.getpid()}\n".encode(), 0)
      except OSError:  # A full disk: the lock holds all the same, without the PID.
        pass
    return True

  def release(self) -> None:
    if self._handle is not None:
      os.close(self._handle)  # Closing the only descriptor frees the flock.
      self._handle = None

  def __enter__(self):
    return self

  def __exit__(self, *exception):
    self.release()


def _holder(handle: int) -> str:
  try:
    text = os.pread(handle, 32, 0).decode(errors="replace").strip()
  except OSError:
    text = ""
  return f"process {text}" if text.isdigit() else "another process"


# -- Write errors ---------------------------------------------------------------------

_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")


def _errno(error: BaseException) -> Optional[int]:
  """The errno of an OSError, or the one an h5py or TensorFlow message carries."""
  if isinstance(error, OSError) and error.errno:
    return error.errno
  match = _ERRNO_IN_TEXT.search(str(error))
  if match:
    return int(match.group(1))
  if "No space left on device" in str(error):
    return errno_codes.ENOSPC
  return None


def is_write_error(error: BaseException) -> bool:
  if isinstance(error, errors.UserError):
    return False
  if isinstance(error, OSError):
    return True
  import tensorflow as tf  # Only once an error happened: this module loads without it.
  return (isinstance(error, tf.errors.OpError)
          and (isinstance(error, tf.errors.ResourceExhaustedError)
               or _errno(error) is not None))


def storage_error(path: str, error: BaseException) -> StorageError:
  """The one-line error for a failed write of `path`."""
  number = _errno(error)
  cause = os.strerror(number) if number else f"{type(error).__name__}: {str(error)[:200]}"
  if number in (errno_codes.ENOSPC, errno_codes.EDQUOT):
    fix = "free some space (or choose another --model_dir)"
  elif number in (errno_codes.EACCES, errno_codes.EPERM, errno_codes.EROFS):
    fix = "make it writable (or choose another --model_dir)"
  else:
    fix = "fix the cause"
  failure = StorageError(
      f"Cannot write {path}: {cause}. Stopped at once; what was already written is "
      f"intact. To go on, {fix}, then run the same command again: it goes on "
      "from what was saved (a run from its last checkpoint, a search from its last "
      "finished trial).")
  failure.errno = number
  return failure


@contextlib.contextmanager
def writing(path: str):
  """While the block writes `path`, a write error becomes StorageError(path)."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    filename = getattr(error, "filename", None)
    filename = filename if isinstance(filename, str) else None
    if not is_write_error(error) or (filename and not _is_under(filename, path)):
      raise  # A bug, or a file of another place (the data's).
    raise storage_error(filename or path, error) from None


def _is_under(filename: str, path: str) -> bool:
  filename, path = os.path.abspath(filename), os.path.abspath(path)
  return filename == path or filename.startswith(path + os.sep) or filename.startswith(
      path + ".")  # Its temporary names: PATH.incoming, PATH.removing.


# -- Directories replaced whole -------------------------------------------------------


def incoming_path(path: str) -> str:
  return path + INCOMING_SUFFIX


def remove_leftovers(path: str) -> None:
  """Removes what a killed command left of writing or replacing `path`."""
  for leftover in (incoming_path(path), path + REMOVING_SUFFIX):
    if os.path.lexists(leftover):
      with writing(leftover):
        shutil.rmtree(leftover)


def replace_directory(incoming: str, path: str) -> None:
  """Puts the finished directory `incoming` in place of `path` (if any)."""
  with writing(path):
    if os.path.lexists(path):
      removing = path + REMOVING_SUFFIX
      os.replace(path, removing)
      reach("replacing")
      os.replace(incoming, path)
      shutil.rmtree(removing)
    else:
      os.replace(incoming, path)


def remove_directory(path: str) -> None:
  """Removes `path` so that a kill leaves it either whole or under a leftover name."""
  if not os.path.lexists(path):
    return
  removing = path + REMOVING_SUFFIX
  with writing(path):
    os.replace(path, removing)
    reach("removing")
    shutil.rmtree(removing)


# -- Stages for fault tests -----------------------------------------------------------


def reach(stage: str) -> None:
  """Kills this process, or raises a full disk's OSError, if a test asked for it
  at `stage` (STOP_AT_VARIABLE); otherwise does nothing."""
  wanted = os.environ.get(STOP_AT_VARIABLE, "")
  name, _, action = wanted.partition(":")
  if name != stage:
    return
  if action in ("", "kill"):
    os.kill(os.getpid(), signal.SIGKILL)
  raise OSError(errno_codes.ENOSPC, f"{os.strerror(errno_codes.ENOSPC)} (at {stage})")
