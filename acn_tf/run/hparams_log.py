"""A hyperparameter search on TensorBoard's HParams dashboard, and the objective
its trials are scored by (acn_tf/run/tuning.py runs the search)."""

import os
from typing import Any, Tuple

import keras_tuner as kt
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2 as hparams_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from acn_tf.config.search_space import SearchDimension

# What keras-tuner ranks trials by: the validation ensemble top-1 of a trial's best epoch.
OBJECTIVE = kt.Objective("val_ensemble_top1", direction="max")


def hparam_domain(dimension: SearchDimension) -> hparams_api.Domain:
  if dimension.kind == "choice":
    return hparams_api.Discrete(list(dimension.choices))
  if dimension.kind == "int":
    return hparams_api.IntInterval(int(dimension.low), int(dimension.high))
  return hparams_api.RealInterval(float(dimension.low), float(dimension.high))


def _hparam_value(dimension: SearchDimension, value: Any) -> Any:
  """A plain Python value of the domain's type (the Bayesian oracle gives numpy ones)."""
  if dimension.kind == "choice":
    return type(dimension.choices[0])(value)
  return int(value) if dimension.kind == "int" else float(value)


class HParamsLog:
  """A search on TensorBoard's HParams dashboard (`tensorboard --logdir=log_dir`).

  `log_dir` holds the experiment: one HParam per searched field, with its
  search_space domain, and the objective as the metric. Each finished trial is
  the run `log_dir/trial_ID` (keras-tuner's trial id, as in model_dir/tuner):
  its values, its status (success or failure) and, unless it failed, its
  score, the number keras-tuner ranks trials by and tuning_results.json records
  (val_ensemble_top1 of its best epoch, at that epoch's step).
  """

  def __init__(self, log_dir: str, dimensions: Tuple[SearchDimension, ...]):
    self.log_dir = log_dir
    self.dimensions = dimensions
    self.hparams = {dimension.field: hparams_api.HParam(dimension.field,
                                                        hparam_domain(dimension))
                    for dimension in dimensions}

  def trial_dir(self, trial_id: str) -> str:
    return os.path.join(self.log_dir, f"trial_{trial_id}")

  def write_config(self) -> None:
    """Once per search: a continued search (the same config, check_same_search)
    keeps the first one."""
    if tf.io.gfile.glob(os.path.join(self.log_dir, "events.out.tfevents.*")):
      return
    metric = hparams_api.Metric(OBJECTIVE.name, display_name=OBJECTIVE.name,
                                description="trial score: validation ensemble top-1 "
                                "of the best epoch")
    self._write(self.log_dir, lambda: hparams_api.hparams_config(
        hparams=list(self.hparams.values()), metrics=[metric]))

  def write_trial(self, trial) -> None:
    values = trial.hyperparameters.values
    hparams = {self.hparams[dimension.field]: _hparam_value(dimension,
                                                            values[dimension.field])
               for dimension in self.dimensions if dimension.field in values}

    def write():
      hparams_api.hparams(hparams, trial_id=trial.trial_id)
      if trial.score is not None:
        tf.summary.scalar(OBJECTIVE.name, float(trial.score), step=trial.best_step or 0)
      # The end of the session, as hparams_api.KerasCallback writes it.
      status = (hparams_pb2.STATUS_SUCCESS
                if trial.status == kt.engine.trial.TrialStatus.COMPLETED
                else hparams_pb2.STATUS_FAILURE)
      tf.summary.experimental.write_raw_pb(
          hparams_summary.session_end_pb(status).SerializeToString(), step=0)

    self._write(self.trial_dir(trial.trial_id), write)

  @staticmethod
  def _write(log_dir: str, write) -> None:
    writer = tf.summary.create_file_writer(log_dir)
    # record_if(True): whatever record_if a fit may have left in force.
    with writer.as_default(), tf.summary.record_if(True):
      write()
    writer.close()
