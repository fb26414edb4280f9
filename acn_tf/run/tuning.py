"""Hyperparameter search with keras-tuner (`run.py --mode=tune`).

The search space is the config's `search_space` (parsed in acn_tf/config/schema.py);
each trial is the base config with the sampled fields replaced, trained by the
same `build_model` and `fit` as a normal run and scored on the validation split
carved from the training data, so the test split stays unseen. The search lives
in `model_dir/tuner` and resumes when the same command runs again; the best
trial's full config is written as `model_dir/best_config.json`, ready for
`run.py --config_file=.../best_config.json`. Every finished trial is also a run
of TensorBoard's HParams dashboard (`model_dir/logs/hparams`): its searched
values and its score. Under keras-tuner's distributed tuning (its KERASTUNER_*
variables) one process, the chief, hands out the trials and writes all this, and
the others, its workers, run the trials (`_serve`, `_run_worker`).
"""

import contextlib
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import keras
import keras_tuner as kt
import tensorflow as tf
from keras_tuner.engine.trial import TrialStatus

from acn_tf import strict_json
from acn_tf.config.saved_runs import config_differences
from acn_tf.config.schema import (TUNERS, ConfigError, ExperimentConfig, field_types,
                                  fields_unused_by)
from acn_tf.config.search_space import SearchDimension, parse_search_space
from acn_tf.data import pipeline
from acn_tf.errors import ModelDirError, SearchFailedError
from acn_tf.run import builders, distribute, run_dir, storage, training
from acn_tf.run.hparams_log import OBJECTIVE, HParamsLog
from acn_tf.run.tuners import (FAILURE_FILE, ORACLE_IP_VARIABLE, ORACLE_PORT_VARIABLE,
                                TUNER_ID_VARIABLE, BayesianOptimization, Hyperband,
                                RandomSearch, SearchStopped, oracle_address, search_role,
                                stop_oracle_on_signals, stop_search_on_signals,
                                stopped_for_failures)

TUNER_DIR = "tuner"
BEST_CONFIG_FILE = "best_config.json"
RESULTS_FILE = "tuning_results.json"
SEARCH_FILE = "search.json"
# keras-tuner's record of a search, in model_dir/tuner.
ORACLE_FILE = "oracle.json"
# TensorBoard's HParams dashboard: the search space at this root, a run per trial.
HPARAMS_DIR = os.path.join(run_dir.LOG_DIR, "hparams")
DEFAULT_VALIDATION_FRACTION = 0.1

# -- Search space -----------------------------------------------------------------


def search_dimensions(config: ExperimentConfig) -> Tuple[SearchDimension, ...]:
  """The search_space entries that `config.method` uses."""
  ignored = fields_unused_by(config.method)
  dimensions = parse_search_space(config.tuning.search_space, field_types())
  return tuple(dimension for dimension in dimensions if dimension.field not in ignored)


def sample(hp: kt.HyperParameters, dimension: SearchDimension) -> Any:
  """The trial's value of one dimension (keras-tuner draws it on first call)."""
  if dimension.kind == "choice":
    return hp.Choice(dimension.field, list(dimension.choices))
  if dimension.kind == "int":
    return hp.Int(dimension.field, int(dimension.low), int(dimension.high))
  return hp.Float(dimension.field, dimension.low, dimension.high,
                  sampling=dimension.kind)


def trial_config(base_config: ExperimentConfig, hp: kt.HyperParameters,
                 dimensions: Tuple[SearchDimension, ...]) -> ExperimentConfig:
  """`base_config` with every dimension replaced by the trial's value.

  Each value is cast to its field's type: the Bayesian oracle can hand back
  numpy scalars (a numpy int is not JSON-serialisable in best_config.json), and
  an integer sample of a float field (temperature=int:1:4) must stay a float.
  """
  values = {dimension.field: _field_value(base_config, dimension.field,
                                          sample(hp, dimension))
            for dimension in dimensions}
  return base_config.replace(**values).validate()


def _field_value(config: ExperimentConfig, field: str, value: Any) -> Any:
  return type(config.get(field))(value)


def check_search_bounds(config: ExperimentConfig,
                        dimensions: Tuple[SearchDimension, ...]) -> None:
  """Fails before any training if an end of a range makes an invalid config
  (e.g. wrc_alpha=0.5:2.0): keras-tuner would record every such trial as failed."""
  for dimension in dimensions:
    values = dimension.choices or (dimension.low, dimension.high)
    for value in values:
      try:
        config.replace(**{dimension.field: _field_value(config, dimension.field, value)}
                       ).validate()
      except ConfigError as error:
        raise ConfigError(f"search_space allows {dimension.field}={value}, which is "
                          f"invalid: {error}") from None


# -- Hypermodel ---------------------------------------------------------------------


class CoDistillationHyperModel(kt.HyperModel):
  """Builds and trains one trial: the base config with sampled search_space values.

  Data splits and channel statistics are computed once for the whole search;
  pipelines are made per trial, because batch_size may be among the sampled fields.
  """

  def __init__(self, base_config: ExperimentConfig, splits: pipeline.DataSplits,
               strategy: Optional[tf.distribute.Strategy] = None):
    super().__init__(name="codistillation")
    if splits.validation is None:
      raise ConfigError("Tuning scores trials on validation data: set "
                        "validation_fraction > 0 (e.g. 0.1).")
    self.base_config = base_config
    self.splits = splits
    self.strategy = strategy or tf.distribute.get_strategy()
    self.dimensions = search_dimensions(base_config)
    self.channel_mean, self.channel_variance = pipeline.channel_statistics(splits.train)

  def trial_config(self, hp: kt.HyperParameters) -> ExperimentConfig:
    return trial_config(self.base_config, hp, self.dimensions)

  def build(self, hp: kt.HyperParameters) -> keras.Model:
    config = self.trial_config(hp)
    # keras-tuner clears the Keras session before each build; seeding here makes
    # a trial's initial weights depend on config.seed only, not on trial order.
    keras.utils.set_random_seed(config.seed)
    steps = builders.steps_per_epoch(config, self.splits.info)
    with self.strategy.scope():
      return builders.build_model(config, self.splits.info, self.channel_mean,
                                  self.channel_variance, steps)

  def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
    """Trains on the train split, scored on the validation split.

    kwargs come from the tuner: its callbacks (trial reporting, best-epoch
    checkpoint), verbose, and for Hyperband epochs and initial_epoch.
    """
    if args:
      raise TypeError("CoDistillationHyperModel.fit takes its data from the splits; "
                      "call tuner.search() without data arguments.")
    config = self.trial_config(hp)
    # Hyperband trains a trial on from a checkpoint of its parent, counting epochs
    # from `initial_epoch`: the data go on from that epoch too, not from the first.
    train_data = training.training_pipeline(config, self.splits,
                                            start_epoch=kwargs.get("initial_epoch", 0))
    validation_data, _ = training.evaluation_pipelines(config, self.splits)
    if config.uses_adversarial_phase():
      # Phase A's health in every epoch's logs, so each trial's record holds it:
      # a search may then choose among the trials whose generator does its job.
      from acn_tf.method import health
      kwargs["callbacks"] = [
          health.PhaseAHealth(training.health_batches(validation_data), seed=config.seed),
          *kwargs.get("callbacks", [])]
    return model.fit(train_data, validation_data=validation_data,
                     epochs=kwargs.pop("epochs", config.optimization.epochs),
                     steps_per_epoch=builders.steps_per_epoch(config, self.splits.info),
                     shuffle=False, **kwargs)


# -- Tuners ---------------------------------------------------------------------------


def oracle_seed(config: ExperimentConfig) -> int:
  """A keras-tuner seed that differs in kind from config.seed on purpose.

  keras-tuner replaces seed 0 by a random one, and seeds hyperparameter k of a
  search with seed + k: seeds 0 and 1 would give shifted copies of one search.
  Spreading the seeds apart keeps every config.seed its own, reproducible search.
  """
  return 1 + config.seed * 100_003


def make_tuner(tuner: str, hypermodel: CoDistillationHyperModel, model_dir: str,
               max_trials: int) -> kt.Tuner:
  """The keras-tuner tuner `tuner`, reloading a search already in model_dir/tuner,
  that also writes the search to model_dir/logs/hparams (HParamsLog)."""
  if tuner not in TUNERS:
    raise ValueError(f"Unknown tuner {tuner!r}. Valid tuners: {', '.join(TUNERS)}.")
  config = hypermodel.base_config
  if search_role() != "worker":
    _continue_under_this_name(os.path.join(model_dir, TUNER_DIR))
  common = dict(hypermodel=hypermodel, objective=OBJECTIVE, seed=oracle_seed(config),
                directory=model_dir, project_name=TUNER_DIR, overwrite=False,
                hparams_log=HParamsLog(os.path.join(model_dir, HPARAMS_DIR),
                                       hypermodel.dimensions))
  if tuner == "random":
    return RandomSearch(max_trials=max_trials, **common)
  if tuner == "bayesian":
    return BayesianOptimization(max_trials=max_trials, **common)
  search = Hyperband(max_epochs=config.optimization.epochs, **common)
  # Hyperband's brackets fix its number of trials; max_trials caps it.
  search.oracle.max_trials = max_trials
  return search


def _continue_under_this_name(project_dir: str) -> None:
  """keras-tuner reloads the search in project_dir only if it finds the file of
  this process's tuner name there ("tuner0" alone, the chief's name when
  distributed), an empty state: the search itself is the oracle's (oracle.json and
  the trials' folders). Without it, a search begun alone and continued by a chief,
  or the other way round, would start over and overwrite the trials. The file is
  written when a search exists and this name's is missing."""
  tuner_name = os.environ.get(TUNER_ID_VARIABLE, "tuner0")  # keras-tuner's default.
  tuner_file = os.path.join(project_dir, f"{tuner_name}.json")
  searched = os.path.exists(os.path.join(project_dir, ORACLE_FILE))
  if searched and not os.path.exists(tuner_file):
    strict_json.write(tuner_file, {})


# -- Search ---------------------------------------------------------------------------


def prepare_search_config(config: ExperimentConfig) -> Tuple[ExperimentConfig, List[str]]:
  """The config every trial starts from, and notes on what was changed or left out."""
  config = config.validate()
  notes = []
  if config.data.validation_fraction == 0.0:
    config = config.replace(validation_fraction=DEFAULT_VALIDATION_FRACTION)
    notes.append(f"validation_fraction was 0: trials are scored on "
                 f"{DEFAULT_VALIDATION_FRACTION:.0%} of the training split, carved out "
                 "of it (the test split is never used).")
  ignored = sorted(dimension.field
                   for dimension in parse_search_space(config.tuning.search_space, field_types())
                   if dimension.field in fields_unused_by(config.method))
  if ignored:
    notes.append(f"method={config.method} does not use {', '.join(ignored)}: "
                 "left out of the search.")
  dimensions = search_dimensions(config)
  if not dimensions:
    raise ConfigError(f"Nothing to tune: search_space has no field that "
                      f"method={config.method} uses. Set search_space, e.g. "
                      "--override=search_space=learning_rate=log:0.01:0.2")
  check_search_bounds(config, dimensions)
  return config, notes


def check_same_search(model_dir: str, tuner: str, config: ExperimentConfig) -> None:
  """Refuses to continue a search of another config or tuner in model_dir.

  keras-tuner reloads whatever model_dir/tuner holds; trials of a different base
  config would be ranked together with the new ones as if comparable.
  """
  path = os.path.join(model_dir, SEARCH_FILE)
  if not os.path.exists(path):
    os.makedirs(model_dir, exist_ok=True)
    strict_json.write(path, {"tuner": tuner, "config": config.to_dict()})
    return
  differences = _search_differences(strict_json.read(path), tuner, config)
  if differences:
    raise ConfigError(
        f"--model_dir={model_dir} holds a search of another configuration; continuing "
        f"it needs the same one. Different: {'; '.join(differences)}. Run the original "
        "command to continue that search, or choose a new --model_dir.")


def _search_differences(saved: Dict[str, Any], tuner: str,
                        config: ExperimentConfig) -> List[str]:
  differences = config_differences(saved["config"], config)
  if saved["tuner"] != tuner:
    differences.insert(0, f"tuner (saved {saved['tuner']!r}, now {tuner!r})")
  return differences


def tune(config: ExperimentConfig, model_dir: str, data_dir: Optional[str] = None,
         tuner: str = "random", max_trials: int = 10,
         strategy: Optional[tf.distribute.Strategy] = None,
         verbose: int = 2) -> Dict[str, Any]:
  """Searches config.tuning.search_space; writes best_config.json and tuning_results.json.

  Running the same command again continues the search in model_dir/tuner: trials
  already finished are kept, and only max_trials minus those are run.
  Returns the summary written to tuning_results.json.
  """
  if tuner not in TUNERS:
    raise ValueError(f"Unknown tuner {tuner!r}. Valid tuners: {', '.join(TUNERS)}.")
  if max_trials < 1:
    raise ValueError(f"max_trials must be >= 1, got {max_trials}.")
  strategy = strategy or tf.distribute.get_strategy()
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    raise ConfigError(
        "A search does not run under MultiWorkerMirroredStrategy: its workers would "
        "each keep a search of their own. keras-tuner's distributed tuning runs one "
        "on several machines (docs/DISTRIBUTION.md, \"A search on several machines\").")
  distribute.check_global_batch(config.data.batch_size, strategy)
  role = search_role()
  if role == "worker":
    return _run_worker(config, model_dir, data_dir, tuner, max_trials, strategy, verbose)
  with storage.RunDirLock(model_dir, purpose="search") as lock:
    lock.acquire(create=False, record=False)  # At once, if a search there ever took it.
    config, notes = prepare_search_config(config)
    splits = training.load_data(config, data_dir)  # Missing data fails before any file.
    with storage.writing(model_dir):
      os.makedirs(model_dir, exist_ok=True)
      lock.acquire(record=False)
      check_same_search(model_dir, tuner, config)  # May refuse: the lock file untouched.
      lock.acquire()
      hypermodel = CoDistillationHyperModel(config, splits, strategy)
      search = make_tuner(tuner, hypermodel, model_dir, max_trials)
      try:
        with _search_errors():
          if role == "chief":
            _serve(search, model_dir, verbose)
          else:
            with stop_search_on_signals(search):
              search.search(verbose=verbose)
      except RuntimeError as error:
        if not stopped_for_failures(error):  # That stop is a result to record.
          raise
        notes = [*notes, "The search stopped early: " + str(error).splitlines()[0]]
      return record_results(search, hypermodel, model_dir, tuner, notes)


@contextlib.contextmanager
def _search_errors():
  """A stop on a signal, and a trial's failed write, as the errors run.py reports."""
  try:
    yield
  except SearchStopped as stop:
    raise stop.interruption from None
  except kt.errors.FatalError as error:
    if isinstance(error.__cause__, storage.StorageError):  # A trial's write failed.
      raise error.__cause__ from None
    raise


def _serve(search: kt.Tuner, model_dir: str, verbose: int) -> None:
  """keras-tuner's chief: hands out the search's trials to its workers until
  max_trials have been handed out and no worker that asked for one runs one.

  keras-tuner's stop after failed trials in a row is switched off here: on a
  chief it is raised inside the server's thread while the oracle's lock is held,
  and the chief would then wait for ever. Every trial runs, failed or not."""
  oracle = search.oracle
  if len(oracle.trials) >= oracle.max_trials and all(
      trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED)
      for trial in oracle.trials.values()):
    return  # Nothing to hand out: keras-tuner's chief would wait for a worker to ask.
  oracle.max_consecutive_failed_trials = None
  search.hparams_log.write_config()  # keras-tuner's chief begins no search of its own.
  print(f"Serving the search in {model_dir} to its workers at {oracle_address()}; it "
        f"ends once its trials have ended (max_trials {oracle.max_trials}).",
        file=sys.stderr, flush=True)
  try:
    with stop_oracle_on_signals(search):
      search.search(verbose=verbose)
  except RuntimeError as error:
    if "Failed to bind" not in str(error):
      raise
    raise ConfigError(
        f"The chief cannot listen at {oracle_address()} ({error}): that port is taken, "
        f"or the address is not this machine's. Set {ORACLE_IP_VARIABLE} and "
        f"{ORACLE_PORT_VARIABLE} (the same on every worker) to a free port of this "
        "machine.") from None


def _run_worker(config: ExperimentConfig, model_dir: str, data_dir: Optional[str],
                tuner: str, max_trials: int, strategy: Optional[tf.distribute.Strategy],
                verbose: int) -> Dict[str, Any]:
  """A worker of keras-tuner's distributed tuning: runs the trials the chief hands
  out, in the chief's model_dir (a file system every process reaches), and
  returns the ids of those it began. The chief records the search's results.

  The worker's config and tuner must be the chief's (search.json, which the chief
  writes before it serves): trials trained under another config would be ranked
  with the chief's. Two processes with one KERASTUNER_TUNER_ID would be handed
  the same trial; the second is refused."""
  import grpc  # keras-tuner's workers call their chief through it.
  tuner_id = os.environ[TUNER_ID_VARIABLE]
  config, _ = prepare_search_config(config)
  splits = training.load_data(config, data_dir)  # Missing data fails before waiting.
  saved = _wait_for_chief(model_dir, tuner_id)
  differences = _search_differences(saved, tuner, config)
  if differences:
    raise ConfigError(
        f"Worker {tuner_id} was given another configuration than the search its chief "
        f"serves in --model_dir={model_dir}. Different: {'; '.join(differences)}. Run "
        "every worker with the chief's flags (--experiment, --method, --config_file, "
        "--override, --tuner).")
  lock = storage.RunDirLock(model_dir, purpose=f"worker {tuner_id}",
                            lock_file=f"{storage.LOCK_FILE}-{tuner_id}")
  try:
    lock.acquire()
  except ModelDirError:
    raise ModelDirError(
        f"Another process of the search in --model_dir={model_dir} is worker "
        f"{TUNER_ID_VARIABLE}={tuner_id}: the chief would hand both the same trial. Give "
        "each worker a name of its own.") from None
  with lock, storage.writing(model_dir):
    hypermodel = CoDistillationHyperModel(config, splits, strategy)
    search = make_tuner(tuner, hypermodel, model_dir, max_trials)
    try:
      with _search_errors(), stop_search_on_signals(search):
        search.search(verbose=verbose)
    except grpc.RpcError as error:
      raise SearchFailedError(
          f"Worker {tuner_id} lost its chief at {oracle_address()} ({error.code().name}: "
          f"{error.details()}). If the chief was stopped, stop every worker, then run the "
          "chief's command and the workers' again: the search goes on, and the trials "
          "that were running run again from their start.") from None
  return {"tuner_id": tuner_id, "trials_begun": list(search.trials_begun),
          "results_file": os.path.join(model_dir, RESULTS_FILE)}


# How long a worker waits for its chief's search.json (the chief loads its data first).
CHIEF_WAIT_SECONDS = 600.0


def _wait_for_chief(model_dir: str, tuner_id: str) -> Dict[str, Any]:
  """The chief's search.json, once it is there (CHIEF_WAIT_SECONDS at most)."""
  path = os.path.join(model_dir, SEARCH_FILE)
  deadline = time.monotonic() + CHIEF_WAIT_SECONDS
  said = False
  while not os.path.exists(path):
    if time.monotonic() > deadline:
      raise ModelDirError(
          f"Worker {tuner_id} found no {path} after {CHIEF_WAIT_SECONDS:.0f} s: its chief "
          f"({TUNER_ID_VARIABLE}=chief, at {oracle_address()}) writes it there as it "
          "starts. Start the chief with the same --model_dir, on a file system this "
          "worker reaches.")
    if not said:
      print(f"Worker {tuner_id} waits for its chief to start the search in {model_dir}.",
            file=sys.stderr, flush=True)
      said = True
    time.sleep(1.0)
  return strict_json.read(path)


def record_results(search: kt.Tuner, hypermodel: CoDistillationHyperModel,
                   model_dir: str, tuner: str, notes: List[str]) -> Dict[str, Any]:
  """best_config.json holds config fields only, so --config_file accepts it;
  the score and every trial go to tuning_results.json, also when no trial
  completed (then SearchFailedError says so)."""
  trials = sorted(search.oracle.trials.values(), key=lambda trial: trial.trial_id)
  completed = [trial for trial in trials if trial.status == "COMPLETED"]
  best = search.oracle.get_best_trials(1)[0] if completed else None
  if best is not None:
    best_config = hypermodel.trial_config(best.hyperparameters)
    strict_json.write(os.path.join(model_dir, BEST_CONFIG_FILE), best_config.to_dict())
  summary = {
      "tuner": tuner,
      "objective": OBJECTIVE.name,
      "best_trial": best.trial_id if best else None,
      "best_score": _score(best) if best else None,
      "best_values": _searched_values(best, hypermodel.dimensions) if best else None,
      "best_config_file": os.path.join(model_dir, BEST_CONFIG_FILE) if best else None,
      "hparams_logdir": os.path.join(model_dir, HPARAMS_DIR),
      "num_trials": len(trials),
      "num_completed": len(completed),
      "notes": notes,
      "trials": [{"trial": trial.trial_id, "status": trial.status, "score": _score(trial),
                  "values": _searched_values(trial, hypermodel.dimensions),
                  "message": _trial_message(search, trial)}
                 for trial in trials],
  }
  results_file = os.path.join(model_dir, RESULTS_FILE)
  strict_json.write(results_file, summary)
  if best is None:
    raise SearchFailedError(
        f"No trial of the search in {model_dir} completed ({len(trials)} failed). The "
        f"last one failed with: {_last_error_line(summary['trials'])}\nEvery trial's "
        f"error is in {results_file}. Fix its cause (often a search range that makes "
        "training diverge, or a setting that does not fit the data), then run the same "
        "command with a new --model_dir.")
  return summary


def _trial_message(search: kt.Tuner, trial) -> Optional[str]:
  """The trial's error: keras-tuner's record of it, or, for a trial a worker ran
  (its chief receives no message), the file the worker wrote."""
  if trial.message:
    return trial.message
  path = os.path.join(search.get_trial_dir(trial.trial_id), FAILURE_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as handle:
      return handle.read()
  return None


def _last_error_line(trials: List[Dict[str, Any]]) -> str:
  """The exception line of the last failed trial's traceback (tuning_results.json's)."""
  message = (trials[-1]["message"] or "").strip() if trials else ""
  return message.splitlines()[-1] if message else "(no message)"


def _score(trial) -> Optional[float]:
  """keras-tuner scores are numpy floats; failed trials have none."""
  return None if trial.score is None else float(trial.score)


def _searched_values(trial, dimensions) -> Dict[str, Any]:
  values = trial.hyperparameters.values
  return {dimension.field: values.get(dimension.field) for dimension in dimensions}
