"""Stops a diverged run at the step it diverges, before anything records it.

- `TrainingGuard`, first among the callbacks: stops a run whose loss becomes
  NaN or infinite at the step it happens (TrainingDivergedError, naming the
  step, the metric and what to try); before every save of the backup
  (safety.SafeBackupAndRestore) it checks that the weights are finite and that
  the model's outputs on a few training images are (finite weights can be so
  large that every output overflows).
  The stop is an exception raised from a callback, so Keras runs no further
  callback: no backup of the bad weights, no history row, and `on_train_end`
  (which would tidy up) is skipped.
- `diverged_error`: the error's message, with what to try and where the run resumes.
- `apply_learning_rates`: a resumed run takes its constant rates from the config.
"""

from typing import Optional

import keras
import numpy as np

from acn_tf.errors import TrainingDivergedError
from acn_tf.run.safety import SafeBackupAndRestore


def apply_learning_rates(model, config) -> None:
  """Sets every optimizer's constant learning rate from `config`.

  A constant rate is a variable of the optimizer, saved in checkpoints; a run
  resumed with another rate (after a divergence) must not get the old one back.
  Schedules are not variables: they are rebuilt from the config anyway.
  """
  rates = [(model.optimizer, config.optimization.learning_rate
            if config.optimization.lr_schedule == "constant" else None)]
  if config.uses_adversarial_phase():
    rates += [(getattr(model, "generator_optimizer", None),
               config.adversarial.generator_learning_rate),
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
