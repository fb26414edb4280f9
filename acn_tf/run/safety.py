"""Training that stops well: a diverged run, a signal, a checkpoint cut short.

- `SafeBackupAndRestore`: Keras' BackupAndRestore (same files, same resume
  semantics) whose checkpoints always load. Keras writes `latest.weights.h5` in
  place and then the metadata, and on a load error falls back to the previous
  pair only for an OSError of the weights. Here each file is written under a
  temporary name and renamed into place; the metadata records the SHA-256 of
  the weights it belongs to, so a pair torn apart by a crash between the two
  renames is recognised; any unusable pair (unreadable or truncated weights,
  missing or damaged metadata, checksum mismatch) falls back to the previous
  one; and non-finite weights are never saved.
  A run that got SIGTERM or SIGINT is stopped by the backup at the next step's
  end, after it saved a checkpoint there (TrainingInterrupted).
- `TrainingGuard`, first among the callbacks: stops a run whose loss becomes
  NaN or infinite at the step it happens (TrainingDivergedError, naming the
  step, the metric and what to try); before every save it checks that the
  weights are finite and that the model's outputs on a few training images are
  (finite weights can be so large that every output overflows).
  Both stops are exceptions raised from a callback, so Keras runs no further
  callback: no backup of the bad weights, no history row, and `on_train_end`
  (which would tidy up) is skipped.
- `stop_on_signals`: the signal handlers, installed around `fit` only.
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
import numpy as np

from acn_tf import strict_json
from acn_tf.errors import ModelDirError, TrainingDivergedError, TrainingInterrupted


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
  (checkpoint_every_steps, or on SIGTERM) restarts epoch k from its weights.
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
    self.restored: Optional[Dict[str, Any]] = None  # Metadata of the restored checkpoint.
    self.saved: Optional[Dict[str, Any]] = None  # Metadata of the last save of this process.
    self._steps_into_epoch = 0
    self._latest_is_valid = True

  # -- Restore ---------------------------------------------------------------------

  def on_train_begin(self, logs=None):
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
    if self.stop_requested is not None and self._steps_into_epoch != self.steps:
      self.stop()

  def on_epoch_end(self, epoch, logs=None):
    self._steps_into_epoch = 0
    super().on_epoch_end(epoch, logs)
    if self.stop_requested is not None:
      # The checkpoint now, the stop once the epoch's other callbacks (its history
      # row, TensorBoard) have run: fit ends its loop and on_train_end raises.
      self.save_now()
      self.model.stop_training = True

  def stop(self) -> None:
    """Saves a checkpoint (unless one was just written here) and raises TrainingInterrupted."""
    self.save_now()
    signum = self.stop_requested
    raise TrainingInterrupted(
        f"Interrupted by {signal.Signals(signum).name} at {self.where()}: "
        f"{self.describe()}. Run the same command again to resume from it.", signum)

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
    if self.stop_requested is not None:
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
    os.makedirs(self.backup_dir, exist_ok=True)
    if (self._latest_is_valid and os.path.exists(self._weights_path)
        and os.path.exists(self._training_metadata_path)):
      _atomic_copy(self._weights_path, self._prev_weights_path)
      _atomic_copy(self._training_metadata_path, self._prev_training_metadata_path)
    incoming = os.path.join(self.backup_dir, "incoming.weights.h5")
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


# -- The guard -----------------------------------------------------------------------


def apply_learning_rates(model, config) -> None:
  """Sets every optimizer's constant learning rate from `config`.

  A constant rate is a variable of the optimizer, saved in checkpoints; a run
  resumed with another rate (after a divergence) must not get the old one back.
  Schedules are not variables: they are rebuilt from the config anyway.
  """
  rates = [(model.optimizer, config.optimization.learning_rate
            if config.optimization.lr_schedule == "constant" else None)]
  if config.uses_adversarial_phase():
    rates += [(getattr(model, "generator_optimizer", None), config.adversarial.generator_learning_rate),
              (getattr(model, "discriminator_optimizer", None),
               config.adversarial.discriminator_learning_rate)]
  for optimizer, rate in rates:
    if optimizer is None or rate is None:
      continue
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer.
    variable = getattr(inner, "_learning_rate", None)
    if isinstance(variable, keras.Variable):
      variable.assign(rate)


def _first_non_finite(variables) -> Optional[str]:
  for variable in variables:
    value = np.asarray(keras.ops.convert_to_numpy(variable))
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      return getattr(variable, "path", None) or variable.name
  return None


def _as_float(value) -> float:
  values = np.asarray(value, dtype=np.float64).reshape(-1)  # [1] under multi-worker.
  return float(values[0]) if values.size else float("nan")


class TrainingGuard(keras.callbacks.Callback):
  """Stops a diverged run at the step it diverges; first among the callbacks.

  Checked every step: the loss and each classifier's loss in the step's logs,
  and the generator's and discriminator's losses once Phase A runs (before, they
  are NaN by design: no value); at an epoch's end the validation losses too.
  Before every save of `backup`: every weight and optimizer variable, and the
  model's outputs on `probe_images`. It also sets the constant learning rates
  from the config after the backup restored a checkpoint.
  """

  def __init__(self, config, backup: SafeBackupAndRestore, steps: Optional[int] = None,
               probe_images=None):
    super().__init__()
    self.config = config  # Read only when needed (tests record which fields a method reads).
    self.backup = backup
    self.steps = steps
    self.probe_images = probe_images
    self.epoch = 0
    self.batch: Optional[int] = None
    backup.before_save = self.check_state
    backup.after_restore = lambda: apply_learning_rates(self.model, self.config)

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch, self.batch = epoch, None

  def on_train_batch_end(self, batch, logs=None):
    self.batch = batch
    self.check_logs(logs or {})

  def on_epoch_end(self, epoch, logs=None):
    self.check_logs(logs or {}, validation=True)

  def monitored(self, logs, validation: bool = False) -> list:
    losses = ["loss", *sorted(name for name in logs
                              if name.startswith("c") and name.endswith("_loss")
                              and name[1:-len("_loss")].isdigit())]
    if getattr(self.model, "adversarial_phase_active", False):
      # Without a generator (use_generator=False) or a discriminator (gan_weight = 0)
      # its loss is never updated: NaN, by design.
      if getattr(self.model, "generator", None) is not None:
        losses.append("g_loss")
      if getattr(self.model, "discriminator", None) is not None:
        losses.append("d_loss")
    names = losses + ([f"val_{name}" for name in losses] if validation else [])
    return [name for name in names if name in logs]

  def check_logs(self, logs, validation: bool = False) -> None:
    for name in self.monitored(logs, validation):
      value = _as_float(logs[name])
      if not np.isfinite(value):
        self.diverged(f"{name} is {value}", metric=name, value=value)

  def check_state(self) -> None:
    """Raises TrainingDivergedError unless the state about to be saved is usable."""
    variables = list(self.model.weights)
    for name in ("optimizer", "generator_optimizer", "discriminator_optimizer"):
      optimizer = getattr(self.model, name, None)
      if optimizer is not None:
        variables += list(optimizer.variables)
    culprit = _first_non_finite(variables)
    if culprit is not None:
      self.diverged(f"the weights are not finite ({culprit})", metric="weights", value=None)
    if self.probe_images is not None:
      outputs = self.model(self.probe_images, training=False)
      for index, logits in enumerate(outputs):
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(logits))):
          self.diverged(f"classifier {index}'s outputs on training images are not finite "
                        "(its weights overflow)", metric=f"c{index}_logits", value=None)

  def where(self) -> str:
    epoch = self.epoch + 1
    if self.batch is None:
      return f"the start of epoch {epoch}"
    of = f" of {self.steps}" if self.steps else ""
    return f"epoch {epoch}, step {self.batch + 1}{of}"

  def _iterations(self) -> int:
    try:
      return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
    except Exception:  # No optimizer (never in training); the message does without.
      return -1

  def diverged(self, what: str, metric: str, value, where: Optional[str] = None) -> None:
    raise diverged_error(self.config, where or self.where(), self._iterations(), what,
                         metric, value, self.backup, epoch=self.epoch + 1,
                         step=None if self.batch is None else self.batch + 1)


def diverged_error(config, where: str, iterations: int, what: str, metric: str, value,
                   backup: Optional[SafeBackupAndRestore], epoch=None, step=None
                   ) -> TrainingDivergedError:
  """The error for a run that diverged, with what to try and where it can resume."""
  hints = [f"lower the learning rate (now {config.optimization.learning_rate:g}, e.g. "
           f"--override=learning_rate={config.optimization.learning_rate / 10:g})"]
  base = metric[len("val_"):] if metric.startswith("val_") else metric
  if base in ("g_loss", "d_loss"):
    name = "generator" if base == "g_loss" else "discriminator"
    rate = config.get(f"{name}_learning_rate")
    hints.insert(0, f"lower {name}_learning_rate (now {rate:g}, e.g. "
                 f"--override={name}_learning_rate={rate / 10:g})")
  if config.runtime.mixed_precision != "none":
    hints.append("train in float32 (--mixed_precision=none)")
  hints.append("lower the loss weights (kd_weight, adv_weight) or raise weight_decay")
  checkpoint = (backup.describe() if backup is not None
                else "no checkpoint had been written yet")
  error = TrainingDivergedError(
      f"Training diverged at {where} (optimizer step {iterations}): {what}. Stopped "
      "before saving any of it (no results.json, final weights or export); "
      f"{checkpoint}. To try: {'; '.join(hints)}. Rerun into the same --model_dir with "
      "such settings to resume, or choose a new --model_dir.")
  error.details = {"epoch": epoch, "step": step, "optimizer_step": iterations,
                   "metric": metric, "value": value,
                   "checkpoint": (backup.saved or backup.restored) if backup else None}
  return error


@contextlib.contextmanager
def stop_on_signals(backup: SafeBackupAndRestore, signals=(signal.SIGTERM, signal.SIGINT)):
  """While the block runs, SIGTERM and SIGINT ask `backup` to checkpoint and stop at
  the next step's end; a second signal stops at once (the last checkpoint stays).
  Outside the main thread (where handlers cannot be set) this does nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    if backup.stop_requested is not None:
      raise TrainingInterrupted(
          f"{signal.Signals(signum).name} again: stopped at once, without a new "
          f"checkpoint; {backup.describe()}. Run the same command again to resume.",
          signum)
    backup.stop_requested = signum

  previous = {number: signal.signal(number, handler) for number in signals}
  try:
    yield
  finally:
    for number, old in previous.items():
      signal.signal(number, old)
