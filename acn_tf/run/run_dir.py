"""A run's directory: what it holds, and the checks before anything is written.

`model_dir` holds config.json, history.csv, checkpoints, TensorBoard logs,
results.json and exports. Every way it can be unusable (a file, a finished run,
a search, another configuration, a damaged config) is refused here with a
message that says what to do, before any work is lost or overwritten.
"""

import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from acn_tf import errors, strict_json
from acn_tf.config.saved_runs import (config_differences, config_from_dict,
                                      differing_fields, with_fields_added_later)
from acn_tf.config.schema import FIELDS, ExperimentConfig

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"
WEIGHTS_FILE = "final.weights.h5"
BEST_WEIGHTS_FILE = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"
LOG_DIR = "logs"
EXPORT_DIR = "export"
CHECKPOINTS = {"final": WEIGHTS_FILE, "best": BEST_WEIGHTS_FILE}
# Written when training diverged: what, where, and the settings it resumed with.
DIVERGED_FILE = "diverged.json"
# What a hyperparameter search leaves in its model_dir (acn_tf/run/tuning.py's
# SEARCH_FILE and TUNER_DIR; tests/test_errors.py checks they agree).
TUNING_MARKERS = ("search.json", "tuner")
# The fields a run that diverged may change when it resumes from its last good
# checkpoint: none changes what the checkpoint holds (networks, optimizer
# variables), only how training continues from it. The classifiers' rate is a
# variable of the checkpoint only under lr_schedule=constant, and it is then set
# from the new config after the restore (guard.apply_learning_rates).
RESUMABLE_AFTER_DIVERGENCE = (
    "learning_rate", "lr_decay_epochs", "lr_decay_factor", "weight_decay", "nesterov",
    "temperature", "kd_weight", "adv_weight", "adv_ce_weight", "adv_kd_weight",
    "divergence_weight", "keep_label_weight", "wrc_alpha", "ras_epsilon",
    "ras_step_size", "generator_learning_rate", "discriminator_learning_rate", "jit_compile",
    "deterministic", "log_every_steps")

# The fields that neither --mode=eval nor --mode=export reads: how often training
# validated, checkpointed and logged, and what a search (--mode=tune) would try.
# They change neither the trained weights nor what evaluation and export compute,
# so a command about a trained run may give other values (a retyped training
# command without its logging override, say): applied or not, the outcome is
# the same. Every other field, the runtime ones eval and export build the model
# with (mixed_precision, jit_compile, deterministic) included, must agree with
# the run's: the run is restored with its own config, so another value would be
# silently not applied.
TRAINING_ONLY_FIELDS = ("validation_every_epochs", "checkpoint_every_steps",
                        "log_every_steps", "search_space")

# The model_dir cannot be used as asked; the message says what to do instead.
# Defined in acn_tf/errors.py with the project's other error types.
ModelDirError = errors.ModelDirError


def check_model_dir_path(model_dir: str) -> None:
  """The path can be a directory: it is not a file, nor under one."""
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise ModelDirError(f"--model_dir={model_dir} is a file, not a directory. Choose "
                        "another --model_dir (or move the file away).")
  parent = os.path.dirname(os.path.abspath(model_dir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ModelDirError(f"--model_dir={model_dir} cannot be created: {parent} is a file, "
                        "not a directory. Choose another --model_dir.")


def ensure_writable(model_dir: str, keep: bool = True) -> None:
  """Creates model_dir (and its missing parents) and checks that a file can be
  written in it; with keep=False removes again the directories it created.
  Raises ModelDirError naming the directory."""
  check_model_dir_path(model_dir)
  created = []
  path = os.path.abspath(model_dir)
  while not os.path.exists(path):
    created.append(path)
    path = os.path.dirname(path)
  writable = False
  try:
    try:
      os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
      raise ModelDirError(f"Cannot create --model_dir={model_dir}: {error.strerror or error}. "
                          "Choose a directory you can write to.") from None
    try:
      handle, probe = tempfile.mkstemp(dir=model_dir, prefix=".write-test-")
      os.close(handle)
      os.remove(probe)
    except OSError as error:
      raise ModelDirError(f"Cannot write into --model_dir={model_dir}: "
                          f"{error.strerror or error}. Choose a directory you can write "
                          "to.") from None
    writable = True
  finally:
    if not keep or not writable:
      for directory in created:  # Deepest first.
        if os.path.isdir(directory) and not os.listdir(directory):
          os.rmdir(directory)


def is_search_dir(model_dir: str) -> bool:
  return any(os.path.exists(os.path.join(model_dir, name)) for name in TUNING_MARKERS)


def inspect_model_dir(model_dir: str, config: ExperimentConfig) -> List[str]:
  """Read-only checks that `config` may train into model_dir, before any work.

  Returns the fields that differ from the unfinished run there (empty for a new
  run or a plain resume). A finished run (results.json), a search, a damaged
  config.json and an unfinished run of another configuration are refused; a run
  that diverged may resume with other RESUMABLE_AFTER_DIVERGENCE settings.
  """
  check_model_dir_path(model_dir)
  if not os.path.exists(model_dir):
    return []
  if finished_results(model_dir, config) is not None:
    raise ModelDirError(
        f"--model_dir={model_dir} already holds a finished run of this configuration "
        f"({RESULTS_FILE}): there is nothing to train. Evaluate it with --mode=eval, or "
        "choose a new --model_dir.")
  if not os.path.exists(os.path.join(model_dir, CONFIG_FILE)):
    if is_search_dir(model_dir):
      raise ModelDirError(
          f"--model_dir={model_dir} holds a hyperparameter search (--mode=tune), not a "
          "training run. Train into a new --model_dir (the search's best configuration: "
          f"--config_file={os.path.join(model_dir, 'best_config.json')}).")
    return []
  saved = load_run_config(model_dir)
  differences = config_differences(saved, config)
  if not differences:
    return []
  fields = differing_fields(saved, config)
  if os.path.exists(os.path.join(model_dir, DIVERGED_FILE)):
    locked = [difference for field, difference in zip(fields, differences)
              if field not in RESUMABLE_AFTER_DIVERGENCE]
    if not locked:
      return fields
    raise ModelDirError(
        f"--model_dir={model_dir} holds a run that diverged; resuming it from its last "
        f"good checkpoint may change only {', '.join(RESUMABLE_AFTER_DIVERGENCE)}. "
        f"Different: {'; '.join(locked)}. Choose a new --model_dir to train with those.")
  raise ModelDirError(
      f"--model_dir={model_dir} holds an unfinished run of another configuration; "
      f"resuming needs the same one. Different: {'; '.join(differences)}. "
      "Run the original command again to resume, or choose a new --model_dir.")


def finished_results(model_dir: str, config: ExperimentConfig) -> Optional[Dict[str, Any]]:
  """The results of `config`'s run if model_dir holds it finished, else None.

  A launch that finds its own run finished has nothing to do (a scheduler's retry
  of a job that ended, say): its caller reports the results instead of training.
  A finished run of another configuration, or results without the config.json
  they came from, is refused: training there would overwrite or mislabel them.
  """
  results_path = os.path.join(model_dir, RESULTS_FILE)
  if not os.path.exists(results_path):
    return None
  refusal = f"--model_dir={model_dir} already holds a finished run ({RESULTS_FILE})"
  advice = ("Choose a new --model_dir, evaluate it with --mode=eval, or delete the "
            "directory yourself to start over.")
  if not os.path.exists(os.path.join(model_dir, CONFIG_FILE)):
    raise ModelDirError(f"{refusal} without its {CONFIG_FILE}. {advice}")
  differences = config_differences(load_run_config(model_dir), config)
  if differences:
    raise ModelDirError(f"{refusal} of another configuration. Different: "
                        f"{'; '.join(differences)}. {advice}")
  return strict_json.read(results_path)


def prepare_model_dir(model_dir: str, config: ExperimentConfig, lock=None) -> bool:
  """Starts a new run, or resumes an unfinished one; never clobbers earlier work.

  Returns True when resuming. Everything that can be refused is checked before
  the first write (inspect_model_dir, then whether the directory is writable);
  `lock` (storage.RunDirLock) is taken before the first write, and the checks
  are made again under it, since another process may have written meanwhile.
  A run resumed after a divergence with other settings records them.
  """
  inspect_model_dir(model_dir, config)
  ensure_writable(model_dir)
  if lock is not None:
    lock.acquire()
  changed = inspect_model_dir(model_dir, config)
  config_path = os.path.join(model_dir, CONFIG_FILE)
  resuming = os.path.exists(config_path)
  if changed:
    record = read_divergences(model_dir)
    record[-1].setdefault("resumed_with", []).append(
        {field: config.get(field) for field in changed})
    strict_json.write(os.path.join(model_dir, DIVERGED_FILE), {"divergences": record})
  if not resuming or changed:
    strict_json.write(config_path, config.to_dict())
  return resuming


# What a run's later launch reads to go on: its config, its divergences, its
# history (the best score so far), its checkpoint, and whether it finished.
RUN_STATE = (CONFIG_FILE, DIVERGED_FILE, HISTORY_FILE, RESULTS_FILE, BACKUP_DIR)


def copy_run_state(model_dir: str, scratch: str) -> None:
  """Copies RUN_STATE of the run in model_dir, what exists of it, into scratch.

  A multi-worker run writes into model_dir from its chief only; every other
  worker writes into a scratch directory of its own. Seeded with the chief's
  state, a worker relaunched on an unfinished run resumes from the checkpoint
  the chief resumes from (the same epoch, the same place in the data), and one
  relaunched on a finished run trains nothing, as the chief does; otherwise it
  would train from the first epoch, out of step with the chief. This needs
  model_dir on a file system every worker reaches, as docs/DISTRIBUTION.md asks.
  The copy cannot catch the chief halfway: its checkpoint and history change
  only once every worker trains, and the JSON files it may write as it starts
  (a new run's config, a resume after divergence) are replaced whole.
  """
  if not os.path.isdir(model_dir):
    return
  for name in RUN_STATE:
    source, target = os.path.join(model_dir, name), os.path.join(scratch, name)
    if os.path.isdir(source):
      shutil.copytree(source, target, dirs_exist_ok=True)
    elif os.path.isfile(source):
      shutil.copyfile(source, target)


def read_divergences(model_dir: str) -> List[Dict[str, Any]]:
  """The divergences recorded in model_dir (an empty list if none or unreadable)."""
  try:
    record = strict_json.read(os.path.join(model_dir, DIVERGED_FILE))
    return list(record["divergences"])
  except (OSError, ValueError, KeyError, TypeError):
    return []


def record_divergence(model_dir: str, error: errors.TrainingDivergedError) -> None:
  record = read_divergences(model_dir)
  record.append(dict(getattr(error, "details", {}), message=str(error)))
  strict_json.write(os.path.join(model_dir, DIVERGED_FILE), {"divergences": record})


def load_run_config(model_dir: str) -> Dict[str, Any]:
  """config.json of the run in model_dir; ModelDirError if there is no run there."""
  check_model_dir_path(model_dir)
  if not os.path.exists(model_dir):
    raise ModelDirError(f"--model_dir={model_dir} does not exist: it holds no trained run. "
                        "Check the path, or train first with --mode=train.")
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(path):
    if is_search_dir(model_dir):
      raise ModelDirError(
          f"--model_dir={model_dir} holds a hyperparameter search, not a trained run (no "
          f"{CONFIG_FILE}). Train its best configuration first: --mode=train --config_file="
          f"{os.path.join(model_dir, 'best_config.json')} --model_dir=NEW_DIR.")
    raise ModelDirError(f"No {CONFIG_FILE} in --model_dir={model_dir}: it holds no "
                        "trained run. Train first with --mode=train.")
  try:
    values = strict_json.read(path)
  except (OSError, ValueError) as error:
    raise ModelDirError(f"{path} cannot be read ({type(error).__name__}: "
                        f"{str(error)[:200]}): the file is damaged, or this is not a run "
                        "of this project. Choose another --model_dir.") from None
  if not isinstance(values, dict):
    raise ModelDirError(f"{path} holds a JSON {type(values).__name__}, not a run's config. "
                        "Choose another --model_dir.")
  return with_fields_added_later(values)


def run_config(model_dir: str) -> ExperimentConfig:
  """The validated config of the run in model_dir."""
  values = load_run_config(model_dir)
  try:
    return config_from_dict(values)
  except errors.ConfigError as error:
    raise ModelDirError(f"{os.path.join(model_dir, CONFIG_FILE)} is not a valid run "
                        f"config: {str(error).rstrip('.')}. Was it edited by hand, or "
                        "written by another version of acn-tf? Fix the file or choose "
                        "another --model_dir.") from None


def conflicting_fields(run: ExperimentConfig, config: ExperimentConfig) -> List[str]:
  """The fields where `config` (what a command describes) differs from a trained
  run's config `run` in a way that matters to eval and export, in the schema's
  order (name, method, architectures, dataset, ... first)."""
  stored = strict_json.to_strict(run.to_dict())
  differing = set(differing_fields(stored, config)) - set(TRAINING_ONLY_FIELDS)
  return [field for field in FIELDS if field in differing]


def check_search_dir(model_dir: str) -> None:
  """--mode=tune's model_dir: not a training run, a readable search.json, writable.
  Leaves nothing behind (the search creates the directory itself)."""
  check_model_dir_path(model_dir)
  if os.path.isdir(model_dir):
    if os.path.exists(os.path.join(model_dir, CONFIG_FILE)):
      raise ModelDirError(f"--model_dir={model_dir} holds a training run ({CONFIG_FILE}), "
                          "not a hyperparameter search. Choose another --model_dir for "
                          "the search.")
    search_file = os.path.join(model_dir, TUNING_MARKERS[0])
    if os.path.exists(search_file):
      try:
        saved = strict_json.read(search_file)
        valid = isinstance(saved, dict) and {"tuner", "config"} <= set(saved)
      except (OSError, ValueError):
        valid = False
      if not valid:
        raise ModelDirError(f"{search_file} is damaged (not the JSON a search writes): "
                            "the search there cannot be continued. Choose a new "
                            "--model_dir.")
  ensure_writable(model_dir, keep=False)


def load_weights(model, path: str) -> None:
  """model.load_weights with an error that names the file and the way out."""
  try:
    model.load_weights(path)
  except Exception as error:  # h5py raises OSError, Keras ValueError: both mean unusable.
    raise ModelDirError(
        f"Cannot load weights from {path}: {type(error).__name__}: "
        f"{str(error)[:200]}. The file is corrupted or from another configuration; "
        "retrain into a new --model_dir (or restore the file from a backup).") from None
