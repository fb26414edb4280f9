"""The crash-safe backup a run resumes from, and the signals that stop it cleanly.

- `SafeBackupAndRestore`: Keras' `keras.callbacks.BackupAndRestore` (its files,
  its save schedule, its epoch counting and resume semantics: it is the parent
  class) whose checkpoints always load. Keras writes `latest.weights.h5` in
  place and then the metadata, and on a load error falls back to the previous
  pair only for an OSError of the weights. Here each file is written under a
  temporary name and renamed into place; the metadata records the SHA-256 of
  the weights it belongs to, so a pair torn apart by a crash between the two
  renames is recognised; any unusable pair (unreadable or truncated weights,
  missing or damaged metadata, checksum mismatch) falls back to the previous
  one; non-finite weights are never saved (`before_save`: guard.TrainingGuard);
  and a failed write (a full disk) is one StorageError naming the file, with
  the previous checkpoints intact and the partial files removed.
  A run that got SIGTERM or SIGINT is stopped by the backup at the next step's
  end (TrainingInterrupted); the workers of a multi-worker run, at the next
  epoch's end or checkpoint, where they agree to (`_stop_agreed`). It keeps the
  last epoch's checkpoint, and writes one at that step only if the run
  checkpoints within epochs (`stop` says why).
  `restore` loads the checkpoint before the training data is built, so that
  the data stream can start where the run resumes (training.py).
- `stop_on_signals`: the signal handlers, installed around `fit` only (through
  `two_stage_stop`, which the tuner's search uses too).

Why not `tf.train.CheckpointManager`: it writes TensorFlow checkpoints
(index + data shards) and trusts its `checkpoint` state file; it neither
checks that a checkpoint loads nor falls back to an older one, and it would
change the backup's format, so the unfinished runs of earlier versions (Keras'
`latest.weights.h5` pair) could no longer resume. Keras' own callback gives the
format and the schedule; this subclass adds only what it lacks.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import sys
import threading
from typing import Any, Dict, Optional

import keras

from acn_tf import strict_json
from acn_tf.errors import ModelDirError, TrainingInterrupted
from acn_tf.run import storage


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _fsync(path: str) -> None:
  with open(path, "rb+") as handle:
    os.fsync(handle.fileno())


def _atomic_copy(source: str, target: str) -> None:
  incoming = f"{target}.incoming"
  shutil.copyfile(source, incoming)
  _fsync(incoming)
  os.replace(incoming, target)


class _Incomplete(Exception):
  """A checkpoint's weights without metadata: a save that never finished."""


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
  """BackupAndRestore (double checkpoint) whose checkpoints always load.

  Keras restores whole epochs: a checkpoint saved in the middle of epoch k
  (checkpoint_every_steps) restarts epoch k from its weights.
  `before_save`, if set, is called before every save and may raise to refuse it.
  The backup is kept at the end of training (train() removes it once the
  results are written).
  """

  def __init__(self, backup_dir: str, save_freq="epoch", steps: Optional[int] = None):
    super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True,
                     delete_checkpoint=False)
    self.steps = steps  # Per epoch, for messages.
    self.before_save = None  # Called before every save; may raise to refuse it.
    self.after_restore = None  # Called at the start of training, after any restore.
    self.stop_requested: Optional[int] = None  # A signal's number: save and stop.
    # Multi-worker only (distribute.stop_agreement): whether any worker was asked to
    # stop, agreed at each epoch's end and at each checkpoint within an epoch.
    self.agree_on_stop = None
    self._stopping = False  # Agreed (multi-worker).
    self.restored: Optional[Dict[str, Any]] = None  # Metadata of the restored checkpoint.
    self.saved: Optional[Dict[str, Any]] = None  # Metadata of the last save of this process.
    self._steps_into_epoch = 0
    self._latest_is_valid = True
    self._restored_before_fit = False

  # -- Restore ---------------------------------------------------------------------

  def restore(self, model: keras.Model) -> int:
    """Loads the checkpoint a rerun resumes from into `model` before `fit`, and
    returns the epochs it finished (0 without one): where the data must start."""
    self.set_model(model)
    self._restore()
    self._restored_before_fit = True
    return self.restored["epoch"] if self.restored else 0

  def on_train_begin(self, logs=None):
    if not self._restored_before_fit:
      self._restore()
    if self.after_restore is not None:
      self.after_restore()

  def _restore(self) -> None:
    if not self.model.built:
      raise ValueError("To use the BackupAndRestore callback, the model must be built "
                       "before fit().")
    pairs = (("latest", self._weights_path, self._training_metadata_path),
             ("previous", self._prev_weights_path, self._prev_training_metadata_path))
    problems, damaged = [], False
    for label, weights, metadata in pairs:
      if not os.path.exists(weights):
        continue
      try:
        self.restored = self._restore_pair(weights, metadata)
      except _Incomplete as problem:
        problems.append(f"{label} checkpoint {weights}: {problem}")
      except (OSError, ValueError, KeyError, TypeError) as error:
        damaged = True
        problems.append(f"{label} checkpoint {weights}: {type(error).__name__}: "
                        f"{str(error)[:200]}")
      else:
        self._latest_is_valid = label == "latest"
        if problems:
          sys.stderr.write(f"warning: skipped the {problems[0]}; resumed from the "
                           f"previous checkpoint (epoch {self.restored['epoch']}).\n")
        return
    self._latest_is_valid = False
    if damaged:
      raise ModelDirError(
          f"Cannot resume from {self.backup_dir}: no checkpoint there loads "
          f"({'; '.join(problems)}). Delete that folder to restart this run from "
          "scratch, or choose a new --model_dir.")
    if problems:
      sys.stderr.write(f"warning: ignored the {problems[0]}; starting from scratch.\n")

  def _restore_pair(self, weights: str, metadata_path: str) -> Dict[str, Any]:
    if not os.path.exists(metadata_path):
      raise _Incomplete("its metadata was never written (a save cut short)")
    metadata = strict_json.read(metadata_path)
    if not isinstance(metadata, dict) or not isinstance(metadata.get("epoch"), int):
      raise ValueError(f"{metadata_path} is not a checkpoint's metadata")
    checksum = metadata.get("weights_sha256")
    if checksum is not None and checksum != _sha256(weights):
      raise ValueError(f"the weights do not match {metadata_path} (a save cut short)")
    if self.model.optimizer is not None and not self.model.optimizer.built:
      self.model.optimizer.build(self.model.trainable_variables)
    if weights.endswith(".weights.h5"):
      self.model.load_weights(weights)
    else:  # Keras loads only files named *.weights.h5.
      loadable = os.path.join(self.backup_dir, "restoring.weights.h5")
      shutil.copyfile(weights, loadable)
      try:
        self.model.load_weights(loadable)
      finally:
        os.remove(loadable)
    self.model._initial_epoch = metadata["epoch"]  # As Keras' own restore does.
    self._current_epoch = metadata["epoch"]
    return metadata

  # -- Save --------------------------------------------------------------------------

  def on_epoch_begin(self, epoch, logs=None):
    self._steps_into_epoch = 0

  def on_train_batch_end(self, batch, logs=None):
    self._steps_into_epoch = batch + 1
    super().on_train_batch_end(batch, logs)
    # On an epoch's last step the stop waits for the epoch's end (on_epoch_end).
    if self._steps_into_epoch != self.steps and self._stop_agreed(
        self._is_saved(self.position())):
      self.stop()

  def on_epoch_end(self, epoch, logs=None):
    self._steps_into_epoch = 0
    super().on_epoch_end(epoch, logs)
    if self._stop_agreed(True):
      # The checkpoint now, the stop once the epoch's other callbacks (its history
      # row, TensorBoard) have run: fit ends its loop and on_train_end raises.
      self.save_now()
      self.model.stop_training = True

  def _stop_agreed(self, agreement_point: bool) -> bool:
    """Whether to stop here. One process stops at the first step's end after its
    signal. The workers of a multi-worker run stop together, where they agree: at
    an epoch's end, or at a checkpoint within one (which all take at the same
    steps); a worker stopped by another's signal reports SIGTERM."""
    if self.agree_on_stop is None:
      return self.stop_requested is not None
    if not self._stopping and agreement_point:
      self._stopping = self.agree_on_stop(self.stop_requested is not None)
      if self._stopping and self.stop_requested is None:
        self.stop_requested = signal.SIGTERM
    return self._stopping

  def stop(self) -> None:
    """Raises TrainingInterrupted, after a checkpoint of the current step if the
    run checkpoints within epochs.

    Otherwise the last epoch's checkpoint is the one kept, and a rerun redoes the
    steps taken since: it then repeats an uninterrupted run, if its step draws no
    random numbers (docs/COMMAND_LINE.md, "Stopping and resuming"). (Keras restarts a
    checkpoint from within an epoch at that epoch's first step, so the steps
    before it would be taken twice.)"""
    if self.save_freq != "epoch":
      self.save_now()
    kept = self.describe()
    redone = self._steps_into_epoch if not self._is_saved(self.position()) else 0
    if redone and (self.saved or self.restored):
      kept += (f"; a rerun redoes the {redone} step{'s' if redone > 1 else ''} of epoch "
               f"{self._current_epoch + 1} taken since")
    signum = self.stop_requested
    raise TrainingInterrupted(
        f"Interrupted by {signal.Signals(signum).name} at {self.where()}: {kept}. Run the "
        "same command again to resume from it.", signum)

  def where(self) -> str:
    if self._steps_into_epoch == 0:
      return f"the end of epoch {self._current_epoch}"
    of = f" of {self.steps}" if self.steps else ""
    return f"epoch {self._current_epoch + 1}, step {self._steps_into_epoch}{of}"

  def on_train_end(self, logs=None):
    """Saves the final state when the last save was mid-epoch (checkpoint_every_steps),
    and keeps the backup: a run killed before its results resumes without training."""
    position = {"epoch": self._current_epoch, "steps_into_epoch": 0}
    if self._current_epoch > 0 and not self._is_saved(position):
      self._save_model()
    if self._stop_agreed(False):  # Multi-worker: only a stop agreed at the last epoch's end.
      self.stop()

  def _is_saved(self, position: Dict[str, int]) -> bool:
    return self.saved is not None and all(self.saved.get(key) == value
                                          for key, value in position.items())

  def position(self) -> Dict[str, int]:
    """Where training is: epochs finished and steps into the next one."""
    return {"epoch": self._current_epoch, "steps_into_epoch": self._steps_into_epoch}

  def save_now(self) -> None:
    """A checkpoint of the current state, unless one was just written."""
    if not self._is_saved(self.position()):
      self._save_model()

  def _save_model(self):
    if self.before_save is not None:
      self.before_save()
    incoming = os.path.join(self.backup_dir, "incoming.weights.h5")
    try:
      with storage.writing(self.backup_dir):
        self._write_checkpoint(incoming)
    except storage.StorageError:
      # The previous checkpoints are whole; the partial files only take space.
      for partial in (incoming, f"{self._prev_weights_path}.incoming",
                      f"{self._prev_training_metadata_path}.incoming"):
        with contextlib.suppress(OSError):
          os.remove(partial)
      raise

  def _write_checkpoint(self, incoming: str) -> None:
    os.makedirs(self.backup_dir, exist_ok=True)
    if (self._latest_is_valid and os.path.exists(self._weights_path)
        and os.path.exists(self._training_metadata_path)):
      _atomic_copy(self._weights_path, self._prev_weights_path)
      _atomic_copy(self._training_metadata_path, self._prev_training_metadata_path)
    self.model.save_weights(incoming, overwrite=True)
    _fsync(incoming)
    metadata = dict(self.position(), batch=self._last_batch_seen,
                    weights_sha256=_sha256(incoming))
    os.replace(incoming, self._weights_path)
    strict_json.write(self._training_metadata_path, metadata, indent=None)
    self._latest_is_valid = True
    self.saved = metadata

  def describe(self) -> str:
    """The checkpoint a rerun resumes from, in words."""
    latest = self.saved or self.restored
    if latest is None:
      return "no checkpoint had been written yet, so a rerun starts from scratch"
    epochs = latest["epoch"]
    where = f"{epochs} epoch{'s' if epochs != 1 else ''} done"
    steps = latest.get("steps_into_epoch")
    if steps:
      where += (f", {steps} step{'s' if steps > 1 else ''} into epoch {latest['epoch'] + 1}, "
                "which a rerun restarts from these weights")
    return f"the last good checkpoint, {self.backup_dir} ({where}), is kept"


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def handling_signals(handler, signals=STOP_SIGNALS):
  """While the block runs, `handler(signum, frame)` receives `signals`; the previous
  handlers come back when it ends. Outside the main thread (where handlers cannot
  be set) this installs nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {number: signal.signal(number, handler) for number in signals}
  try:
    yield
  finally:
    for number, old in previous.items():
      signal.signal(number, old)


def two_stage_stop(target, error_on_second, signals=STOP_SIGNALS):
  """While the block runs, a first signal sets `target.stop_requested` to its number,
  for whoever owns `target` to stop cleanly at the next step's end; a second raises
  `error_on_second(signum)` at once, for a user who cannot wait."""

  def handler(signum, frame):
    if target.stop_requested is not None:
      raise error_on_second(signum)
    target.stop_requested = signum

  return handling_signals(handler, signals)


def stop_on_signals(backup: SafeBackupAndRestore, signals=STOP_SIGNALS):
  """While the block runs, SIGTERM and SIGINT ask `backup` to stop at the next step's
  end (`SafeBackupAndRestore.stop`); a second signal stops at once (the last
  checkpoint stays)."""
  return two_stage_stop(backup, lambda signum: TrainingInterrupted(
      f"{signal.Signals(signum).name} again: stopped at once, without a new "
      f"checkpoint; {backup.describe()}. Run the same command again to resume.",
      signum), signals)
