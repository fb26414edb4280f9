"""The keras-tuner tuners of a search (acn_tf/run/tuning.py): keras-tuner's own,
with each trial's every epoch in its folder, the search written to TensorBoard's
HParams dashboard (hparams_log), a stop on SIGTERM or SIGINT that the same command
continues from, and a failed write that ends the search rather than failing every
trial after it. Also the process's part in keras-tuner's distributed tuning
(`search_role`)."""

import os
import signal
from typing import List, Optional

import keras
import keras_tuner as kt

from acn_tf.config.schema import ConfigError
from acn_tf.errors import TrainingInterrupted
from acn_tf.run import run_dir, safety, storage
from acn_tf.run.hparams_log import HParamsLog

# keras-tuner's record of a trial, in the trial's folder (model_dir/tuner/trial_ID).
TRIAL_FILE = "trial.json"
# Every epoch's logs of a trial, in the same folder, named as a run's.
TRIAL_HISTORY_FILE = run_dir.HISTORY_FILE
# A failed trial's error, in its folder, when a worker of a distributed search ran it.
FAILURE_FILE = "failure.txt"

# keras-tuner's distributed tuning: where its chief oracle listens, and which tuner
# a process is ("chief" for the oracle, any other name for a worker).
ORACLE_IP_VARIABLE = "KERASTUNER_ORACLE_IP"
ORACLE_PORT_VARIABLE = "KERASTUNER_ORACLE_PORT"
TUNER_ID_VARIABLE = "KERASTUNER_TUNER_ID"
DISTRIBUTED_VARIABLES = (ORACLE_IP_VARIABLE, ORACLE_PORT_VARIABLE, TUNER_ID_VARIABLE)


def search_role() -> str:
  """This process's part in a search: "alone" (the whole search), or, in
  keras-tuner's distributed tuning, "chief" (the oracle: it hands out trials and
  keeps the search; its KERASTUNER_TUNER_ID contains "chief", as keras-tuner
  reads it) or "worker" (runs the trials the chief hands it). Raises ConfigError
  when the variables are set in part: keras-tuner would fail later, or ignore
  them."""
  present = [name for name in DISTRIBUTED_VARIABLES if os.environ.get(name)]
  if not present:
    return "alone"
  if len(present) < len(DISTRIBUTED_VARIABLES):
    missing = [name for name in DISTRIBUTED_VARIABLES if name not in present]
    raise ConfigError(
        f"{', '.join(present)} set but not {', '.join(missing)}: keras-tuner's "
        f"distributed tuning needs all three ({ORACLE_IP_VARIABLE} and "
        f"{ORACLE_PORT_VARIABLE}, where the chief listens, and {TUNER_ID_VARIABLE}, "
        "\"chief\" for the chief and a name of its own for each worker). Set the "
        "missing ones, or unset them all for a search in this process alone.")
  tuner_id = os.environ[TUNER_ID_VARIABLE]
  if os.sep in tuner_id or tuner_id in (".", ".."):
    raise ConfigError(f"{TUNER_ID_VARIABLE}={tuner_id!r}: keras-tuner names a file after "
                      "it; give a name without a path separator (e.g. tuner1).")
  return "chief" if "chief" in tuner_id else "worker"


def oracle_address() -> str:
  return f"{os.environ[ORACLE_IP_VARIABLE]}:{os.environ[ORACLE_PORT_VARIABLE]}"


def stopped_for_failures(error: RuntimeError) -> bool:
  """Whether `error` is keras-tuner's stop after failed trials in a row."""
  return str(error).startswith("Number of consecutive failures")


class _HParamsLogging:
  """Mixin for a keras-tuner tuner: the search's HParams experiment at its start,
  and each trial once keras-tuner has scored it (BaseTuner.on_trial_end)."""

  def __init__(self, *args, hparams_log: HParamsLog, **kwargs):
    self.hparams_log = hparams_log
    super().__init__(*args, **kwargs)

  def on_search_begin(self):
    """Alone only: keras-tuner's chief never begins a search of its own (tuning.py
    writes the experiment there), and its workers leave it to the chief."""
    super().on_search_begin()
    if search_role() == "alone":
      self.hparams_log.write_config()

  def on_trial_end(self, trial):
    try:
      super().on_trial_end(trial)  # The oracle scores the trial.
    except RuntimeError as error:
      if not stopped_for_failures(error):
        raise
      self._record_stopping_trial(trial)
      self._log_trial(trial)
      raise
    self._log_trial(trial)

  def _record_stopping_trial(self, trial) -> None:
    """keras-tuner (1.4) raises its stop after failed trials in a row from inside
    `Oracle.end_trial`, before it saves the trial that triggered it and lets it
    go: that trial would stay RUNNING on disk and be run again by a resumed
    search. Here the trial is saved and released as `end_trial` would; its
    verbose summary line is not printed. A resumed search then stops again after
    its first new trial, whatever that trial's status: keras-tuner counts the
    failures in a row from the start of the search."""
    oracle = self.oracle
    for tuner_id, ongoing in list(oracle.ongoing_trials.items()):
      if ongoing.trial_id == trial.trial_id:
        oracle.ongoing_trials.pop(tuner_id)
    # What Oracle.end_trial writes for a trial, through the public API: the trial's
    # record in its folder, which the oracle reads when the search is reloaded.
    oracle.get_trial(trial.trial_id).save(
        os.path.join(self.get_trial_dir(trial.trial_id), TRIAL_FILE))
    self.save()

  def _log_trial(self, trial) -> None:
    ended = self.oracle.get_trial(trial.trial_id)
    # An INVALID trial is to be run again; it ends as FAILED or COMPLETED.
    if ended.status in (kt.engine.trial.TrialStatus.COMPLETED,
                        kt.engine.trial.TrialStatus.FAILED):
      self.hparams_log.write_trial(ended)


class _TrialHistory:
  """Mixin for a keras-tuner tuner: each trial's logs of every epoch, as a run's
  history.csv, in the trial's folder. keras-tuner's record keeps the metrics of
  the best epoch only; a search that reads a trial at its last epoch, or follows
  a figure (Phase A's health) through training, reads this file. A trial run
  again from its start (after a stop) writes it anew."""

  def run_trial(self, trial, *args, **kwargs):
    path = os.path.join(self.get_trial_dir(trial.trial_id), TRIAL_HISTORY_FILE)
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), keras.callbacks.CSVLogger(path)]
    return super().run_trial(trial, *args, **kwargs)

  def on_trial_end(self, trial):
    """A worker's chief receives a trial without its error message (keras-tuner's
    wire format has none): the worker leaves it in the trial's folder, for the
    chief's tuning_results.json."""
    if trial.message and search_role() == "worker":
      with open(os.path.join(self.get_trial_dir(trial.trial_id), FAILURE_FILE), "w",
                encoding="utf-8") as handle:
        handle.write(trial.message)
    super().on_trial_end(trial)


class SearchStopped(BaseException):
  """Carries a TrainingInterrupted out of keras-tuner, which would record any
  Exception raised in a trial as that trial's failure and go on searching."""

  def __init__(self, interruption: TrainingInterrupted):
    super().__init__(str(interruption))
    self.interruption = interruption


class _StopOnSignals:
  """Mixin for a keras-tuner tuner: once `stop_requested` holds a signal's number
  (stop_search_on_signals), the search stops at the next training step, or
  between trials, with TrainingInterrupted. keras-tuner keeps the stopped trial
  as running in its saved state, so the same command runs it again, from its
  start, and continues the search; every trial that ended is kept."""

  stop_requested: Optional[int] = None
  current_trial: Optional[str] = None  # The id of the trial running.

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.trials_begun: List[str] = []  # By this process (a worker runs some of them).

  def on_trial_begin(self, trial):
    self._stop_if_requested(f"before trial {trial.trial_id}")
    self.current_trial = trial.trial_id
    self.trials_begun.append(trial.trial_id)
    super().on_trial_begin(trial)

  def on_batch_end(self, trial, model, batch, logs=None):
    super().on_batch_end(trial, model, batch, logs)
    self._stop_if_requested(f"during trial {trial.trial_id}, which a rerun runs again "
                            "from its start")

  def on_trial_end(self, trial):
    super().on_trial_end(trial)
    self.current_trial = None
    self._stop_if_requested(f"after trial {trial.trial_id} ended")

  def run_trial(self, trial, *args, **kwargs):
    """A failed write (a full disk) ends the search: keras-tuner would record it as
    a failed trial and go on to the next, which fails the same way."""
    try:
      return super().run_trial(trial, *args, **kwargs)
    except Exception as error:  # pylint: disable=broad-except
      if not storage.is_write_error(error):
        raise
      raise kt.errors.FatalError(str(error)) from storage.storage_error(
          self.project_dir, error)

  def _stop_if_requested(self, where: str) -> None:
    if self.stop_requested is not None:
      raise SearchStopped(self.interrupted(self.stop_requested, where))

  def interrupted(self, signum: int, where: str) -> TrainingInterrupted:
    if search_role() == "worker":  # The chief keeps the search; a worker knows its part.
      return TrainingInterrupted(
          f"Interrupted by {signal.Signals(signum).name} {where}; the chief at "
          f"{oracle_address()} keeps the search in {self.project_dir}, and hands this "
          f"worker's unfinished trial to the next process with {TUNER_ID_VARIABLE}="
          f"{os.environ[TUNER_ID_VARIABLE]}: run the same command again to go on (the "
          "chief waits for it before it ends).", signum)
    ended = sum(trial.status in ("COMPLETED", "FAILED")
                for trial in self.oracle.trials.values())
    return TrainingInterrupted(
        f"Interrupted by {signal.Signals(signum).name} {where}; {ended} trial"
        f"{'s' if ended != 1 else ''} of the search in {self.project_dir} had ended and "
        "are kept. Run the same command again to continue the search.", signum)


class RandomSearch(_StopOnSignals, _TrialHistory, _HParamsLogging, kt.RandomSearch):
  pass


class BayesianOptimization(_StopOnSignals, _TrialHistory, _HParamsLogging, kt.BayesianOptimization):
  pass


class Hyperband(_StopOnSignals, _TrialHistory, _HParamsLogging, kt.Hyperband):
  pass


def stop_search_on_signals(search: _StopOnSignals, signals=safety.STOP_SIGNALS):
  """While the block runs, SIGTERM and SIGINT stop `search` at the next training
  step (as training stops: safety.stop_on_signals); a second signal stops at once."""

  def error_on_second(signum):
    trial = search.current_trial
    return SearchStopped(search.interrupted(signum, "again: stopped at once" + (
        f", during trial {trial}, which a rerun runs again from its start" if trial
        else "")))

  return safety.two_stage_stop(search, error_on_second, signals)


def stop_oracle_on_signals(search: _StopOnSignals, signals=safety.STOP_SIGNALS):
  """While the block runs, SIGTERM and SIGINT stop keras-tuner's chief at once: it
  only answers its workers, and keras-tuner saves its oracle whenever a trial
  begins or ends. A chief started again hands the trials that were running to the
  next workers that ask (keras-tuner's reload), so its workers are to be stopped
  and started again with it, or a trial would run twice."""

  def stop(signum, frame):
    raise SearchStopped(TrainingInterrupted(
        f"Interrupted by {signal.Signals(signum).name} while handing out the trials of "
        f"the search in {search.project_dir}; the trials that had ended are kept. Stop "
        "its workers too, then run the chief's command and theirs again: the search "
        "goes on, and the trials that were running run again from their start.",
        signum))

  return safety.handling_signals(stop, signals)
