"""Builds a run from its config and drives Keras: fit, evaluate, results.

This is where config, data, networks and optimizers meet. `run.py` parses flags
and creates the distribution strategy; everything here receives objects.
"""

import csv
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from acn_tf import (builders, callbacks as acn_callbacks, data, errors, platform, safety,
                    strict_json)
from acn_tf.config import ExperimentConfig, config_differences, config_from_dict, differing_fields

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
# What a hyperparameter search leaves in its model_dir (acn_tf/tuning.py's
# SEARCH_FILE and TUNER_DIR; tests/test_errors.py checks they agree).
TUNING_MARKERS = ("search.json", "tuner")
# The fields a run that diverged may change when it resumes from its last good
# checkpoint: none changes what the checkpoint holds (networks, optimizer
# variables), only how training continues from it. The classifiers' rate is a
# variable of the checkpoint only under lr_schedule=constant, and it is then set
# from the new config after the restore (safety.apply_learning_rates).
RESUMABLE_AFTER_DIVERGENCE = (
    "learning_rate", "lr_decay_epochs", "lr_decay_factor", "weight_decay", "nesterov",
    "temperature", "kd_weight", "adv_weight", "adv_ce_weight", "divergence_weight",
    "keep_label_weight", "wrc_alpha", "ras_epsilon", "ras_step_size",
    "generator_learning_rate", "discriminator_learning_rate", "jit_compile",
    "deterministic", "log_every_steps")

# The model_dir cannot be used as asked; the message says what to do instead.
# Defined in acn_tf/errors.py with the project's other error types.
ModelDirError = errors.ModelDirError


# -- Building blocks -------------------------------------------------------------


def validation_epochs(config: ExperimentConfig):
  """Keras' validation_freq: every `validation_every_epochs` epochs, and the last."""
  every = config.runtime.validation_every_epochs
  return sorted({*range(every, config.optimization.epochs + 1, every), config.optimization.epochs})


def training_callbacks(config: ExperimentConfig, model_dir: str, resuming: bool,
                       has_validation: bool, preview_batch=None, health_batches=(),
                       steps: Optional[int] = None):
  """The guard, checkpoints (resume and best), history, TensorBoard and ACN's callbacks.

  The guard comes first, so that a diverged step stops training before any other
  callback records it or saves its weights; it does nothing when training starts.
  The backup (Keras' BackupAndRestore, made crash-safe) comes next: on resume it
  restores weights, every optimizer's state (all are built before fit:
  docs/KERAS_NOTES.md 2) and the epoch counter before any other callback runs
  (`on_train_begin`), and it turns SIGTERM into a checkpoint and a clean stop.
  ACN's health figures come next, so that the history and TensorBoard, which
  read the epoch's logs after them, record them.
  """
  backup = safety.SafeBackupAndRestore(os.path.join(model_dir, BACKUP_DIR),
                                       save_freq=config.runtime.checkpoint_every_steps or "epoch",
                                       steps=steps)
  probe = preview_batch[0] if preview_batch is not None else None
  callbacks = [safety.TrainingGuard(config, backup, steps, probe_images=probe), backup]
  if config.uses_adversarial_phase():
    from acn_tf import health
    callbacks.append(health.PhaseAHealth(health_batches, seed=config.seed))
  callbacks += [
      keras.callbacks.CSVLogger(os.path.join(model_dir, HISTORY_FILE), append=resuming),
      acn_callbacks.EpochTensorBoard(os.path.join(model_dir, LOG_DIR),
                                     update_freq=config.runtime.log_every_steps or "epoch",
                                     write_graph=False, profile_batch=0),
  ]
  if has_validation:
    # On resume, the best score so far comes from the history, so that a worse
    # epoch after the restart cannot replace the best weights saved before it.
    best_so_far = best_recorded(os.path.join(model_dir, HISTORY_FILE),
                                "val_ensemble_top1") if resuming else None
    callbacks.append(keras.callbacks.ModelCheckpoint(
        os.path.join(model_dir, BEST_WEIGHTS_FILE), monitor="val_ensemble_top1",
        mode="max", save_best_only=True, save_weights_only=True,
        initial_value_threshold=best_so_far))
  if config.uses_adversarial_phase():
    from acn_tf import adversarial
    callbacks.append(adversarial.AdversarialWarmup(config.adversarial.adv_warmup_epochs))
    if preview_batch is not None:
      callbacks.append(acn_callbacks.DivergentExamplesSummary(
          os.path.join(model_dir, LOG_DIR), *preview_batch))
  return callbacks


def best_recorded(history_path: str, metric: str) -> Optional[float]:
  """The largest value of `metric` in a history.csv, or None if there is none."""
  if not os.path.exists(history_path):
    return None
  with open(history_path) as handle:
    values = []
    for row in csv.DictReader(handle):
      try:
        values.append(float(row.get(metric, "")))
      except ValueError:  # CSVLogger writes NA where a value is missing.
        continue
  return max(values) if values else None


# -- Model directory -------------------------------------------------------------


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
  if os.path.exists(os.path.join(model_dir, RESULTS_FILE)):
    raise ModelDirError(
        f"--model_dir={model_dir} already holds a finished run ({RESULTS_FILE}). "
        "Choose a new --model_dir, evaluate it with --mode=eval, or delete the "
        "directory yourself to start over.")
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


def prepare_model_dir(model_dir: str, config: ExperimentConfig) -> bool:
  """Starts a new run, or resumes an unfinished one; never clobbers earlier work.

  Returns True when resuming. Everything that can be refused is checked before
  the first write (inspect_model_dir, then whether the directory is writable);
  a run resumed after a divergence with other settings records them.
  """
  changed = inspect_model_dir(model_dir, config)
  config_path = os.path.join(model_dir, CONFIG_FILE)
  resuming = os.path.exists(config_path)
  ensure_writable(model_dir)
  if changed:
    record = read_divergences(model_dir)
    record[-1].setdefault("resumed_with", []).append(
        {field: config.get(field) for field in changed})
    strict_json.write(os.path.join(model_dir, DIVERGED_FILE), {"divergences": record})
  if not resuming or changed:
    strict_json.write(config_path, config.to_dict())
  return resuming


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
  return values


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


def load_weights(model: keras.Model, path: str) -> None:
  """model.load_weights with an error that names the file and the way out."""
  try:
    model.load_weights(path)
  except Exception as error:  # h5py raises OSError, Keras ValueError: both mean unusable.
    raise ModelDirError(
        f"Cannot load weights from {path}: {type(error).__name__}: "
        f"{str(error)[:200]}. The file is corrupted or from another configuration; "
        "retrain into a new --model_dir (or restore the file from a backup).") from None


# -- Train and evaluate --------------------------------------------------------------


def load_data(config: ExperimentConfig, data_dir: Optional[str]) -> data.DataSplits:
  return data.load_config_splits(config, data_dir)


def make_pipelines(config: ExperimentConfig, splits: data.DataSplits):
  """(train, validation or None, test) batched pipelines for `config`."""
  train = data.make_pipeline(splits.train, batch_size=config.data.batch_size, training=True,
                             augmentation=config.data.augmentation,
                             crop_padding=config.data.crop_padding, seed=config.seed)
  if config.optimization.steps_per_epoch:
    train = train.repeat()
  validation = None
  if splits.validation is not None:
    validation = data.make_pipeline(splits.validation, batch_size=config.data.batch_size,
                                    training=False)
  test = data.make_pipeline(splits.test, batch_size=config.data.batch_size, training=False)
  return train, validation, test


# Held-out examples on which ACN's Phase A health is measured each epoch.
HEALTH_EXAMPLES = 512


def health_batches(held_out: tf.data.Dataset):
  """The first HEALTH_EXAMPLES of a held-out pipeline (validation, else test), as arrays."""
  batches, count = [], 0
  for images, labels in held_out.as_numpy_iterator():
    batches.append((images, labels))
    count += len(labels)
    if count >= HEALTH_EXAMPLES:
      break
  return batches


def channel_statistics(config: ExperimentConfig, splits: data.DataSplits):
  """The training split's channel mean and variance. Reading it decodes a folder's
  images, so a damaged image file shows here, as a DataFormatError."""
  try:
    return data.channel_statistics(splits.train)
  except tf.errors.InvalidArgumentError as error:  # An image file that cannot be decoded.
    raise errors.DataFormatError(
        f"dataset={config.data.dataset}: an image of the training split cannot be read "
        f"({error.message[:300]}); remove or replace the damaged file.") from None


def build_for_splits(config, splits, strategy, statistics=None):
  """The model for `splits`; `statistics` (mean, variance) when already computed."""
  mean, variance = statistics or channel_statistics(config, splits)
  steps = builders.steps_per_epoch(config, splits.info)
  with strategy.scope():
    model = builders.build_model(config, splits.info, mean, variance, steps)
  return model, steps


def train(config: ExperimentConfig, model_dir: str, data_dir: Optional[str] = None,
          strategy: Optional[tf.distribute.Strategy] = None,
          verbose: int = 2, export: bool = False) -> Dict[str, Any]:
  """Trains `config` into `model_dir` (resuming an unfinished run there), writes
  results.json and, with `export`, the SavedModels; returns the results.

  Every input is checked before the first file is written: the model_dir (read
  only), the data (its training images read once, for their statistics), then
  the config against the data. A run that diverges stops
  within the epoch (TrainingDivergedError) with its last good checkpoint intact
  and no results; SIGTERM or SIGINT saves a checkpoint and stops
  (TrainingInterrupted). The backup is removed once results.json is written, so
  a run killed after training but before its results resumes without training.
  """
  strategy = strategy or tf.distribute.get_strategy()
  config.validate()
  inspect_model_dir(model_dir, config)
  splits = load_data(config, data_dir)
  builders.steps_per_epoch(config, splits.info)
  statistics = channel_statistics(config, splits)  # Reads (decodes) the training split.
  resuming = prepare_model_dir(model_dir, config)
  keras.utils.set_random_seed(config.seed)
  model, steps = build_for_splits(config, splits, strategy, statistics)
  train_data, validation_data, test_data = make_pipelines(config, splits)
  preview = next(iter(splits.train.batch(8).map(
      lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels))))
  held_out = validation_data if validation_data is not None else test_data
  callbacks = training_callbacks(config, model_dir, resuming, validation_data is not None,
                                 (preview[0].numpy(), preview[1].numpy()),
                                 health_batches(held_out), steps=steps)
  backup = next(callback for callback in callbacks
                if isinstance(callback, safety.SafeBackupAndRestore))
  start = time.time()
  try:
    with safety.stop_on_signals(backup):
      model.fit(train_data, epochs=config.optimization.epochs, steps_per_epoch=steps,
                validation_data=validation_data, validation_freq=validation_epochs(config),
                callbacks=callbacks, verbose=verbose,
                shuffle=False)  # The pipeline shuffles, seeded.
    train_seconds = time.time() - start
    metrics, evaluation_seconds = _evaluate(model, test_data, verbose)
    if not np.isfinite(float(metrics["loss"])):  # Finite weights whose outputs overflow.
      raise safety.diverged_error(
          config, "the end of training", _optimizer_iterations(model)["classifiers"],
          f"the test loss is {float(metrics['loss'])}", "test_loss", None, backup,
          epoch=config.optimization.epochs)
  except errors.TrainingDivergedError as error:
    record_divergence(model_dir, error)
    raise
  model.save_weights(os.path.join(model_dir, WEIGHTS_FILE))
  if export:
    from acn_tf import export as export_lib
    export_lib.export_saved_models(model, os.path.join(model_dir, EXPORT_DIR),
                                   class_names=splits.info.class_names)
  results = _record(config, model, metrics, evaluation_seconds, test_data, splits.info,
                    model_dir, train_seconds)
  shutil.rmtree(os.path.join(model_dir, BACKUP_DIR), ignore_errors=True)
  return results


def restore_run(model_dir: str, data_dir: Optional[str] = None,
                strategy: Optional[tf.distribute.Strategy] = None,
                checkpoint: str = "final"):
  """A trained run: (config, model with the `checkpoint` weights, data splits).

  checkpoint: "final" (end of training) or "best" (highest validation ensemble
  top-1; needs validation_fraction > 0 at training time).
  """
  if checkpoint not in CHECKPOINTS:
    raise ModelDirError(f"checkpoint={checkpoint!r}: use one of {', '.join(CHECKPOINTS)}.")
  config = run_config(model_dir)
  weights = os.path.join(model_dir, CHECKPOINTS[checkpoint])
  if not os.path.exists(weights):
    hint = ("train with --override=validation_fraction=0.1 to keep a best checkpoint"
            if checkpoint == "best" else "the run did not finish training; run the "
            "training command again to resume it")
    raise ModelDirError(f"No {CHECKPOINTS[checkpoint]} in --model_dir={model_dir}: {hint}.")
  strategy = strategy or tf.distribute.get_strategy()
  splits = load_data(config, data_dir)
  model, _ = build_for_splits(config, splits, strategy)
  load_weights(model, weights)
  return config, model, splits


def evaluate(model_dir: str, data_dir: Optional[str] = None,
             strategy: Optional[tf.distribute.Strategy] = None,
             verbose: int = 2, checkpoint: str = "final") -> Dict[str, Any]:
  """Re-evaluates the run in `model_dir` on the test split; rewrites results.json."""
  config, model, splits = restore_run(model_dir, data_dir, strategy, checkpoint)
  _, _, test_data = make_pipelines(config, splits)
  return _evaluate_and_record(config, model, test_data, splits.info, model_dir, None,
                              verbose=verbose, checkpoint=checkpoint)


def export(model_dir: str, data_dir: Optional[str] = None,
           checkpoint: str = "final") -> Dict[str, str]:
  """SavedModels (each classifier and the ensemble) of a trained run, under
  MODEL_DIR/export (MODEL_DIR/export_best for the best checkpoint)."""
  from acn_tf import export as export_lib
  _, model, splits = restore_run(model_dir, data_dir, checkpoint=checkpoint)
  target = EXPORT_DIR if checkpoint == "final" else f"{EXPORT_DIR}_{checkpoint}"
  try:
    return export_lib.export_saved_models(model, os.path.join(model_dir, target),
                                          class_names=splits.info.class_names)
  except ValueError as error:  # An earlier export is there: never overwrite silently.
    raise ModelDirError(f"{error} From the command line: delete "
                        f"{os.path.join(model_dir, target)} to export again.") from None


def _optimizer_iterations(model) -> Dict[str, int]:
  """Steps each player's optimizer has taken: shows that a resume kept their state."""
  optimizers = {"classifiers": model.optimizer,
                "generator": getattr(model, "generator_optimizer", None),
                "discriminator": getattr(model, "discriminator_optimizer", None)}
  return {name: int(optimizer.iterations.numpy())
          for name, optimizer in optimizers.items() if optimizer is not None}


def _evaluate(model, test_data, verbose: int = 2):
  """(the test metrics, the seconds they took)."""
  start = time.time()
  metrics = model.evaluate(test_data, return_dict=True, verbose=verbose)
  return metrics, time.time() - start


def _evaluate_and_record(config, model, test_data, info, model_dir, train_seconds,
                         verbose: int = 2, checkpoint: str = "final") -> Dict[str, Any]:
  metrics, evaluation_seconds = _evaluate(model, test_data, verbose)
  return _record(config, model, metrics, evaluation_seconds, test_data, info, model_dir,
                 train_seconds, checkpoint)


def _record(config, model, metrics, evaluation_seconds, test_data, info, model_dir,
            train_seconds, checkpoint: str = "final") -> Dict[str, Any]:
  """Writes results.json (strict JSON) from the test metrics; returns the results."""
  results_path = os.path.join(model_dir, RESULTS_FILE)
  if train_seconds is None and os.path.exists(results_path):
    try:  # Re-evaluation keeps the training time.
      train_seconds = strict_json.read(results_path).get("train_seconds")
    except (OSError, ValueError, AttributeError):
      train_seconds = None
  results = {
      "experiment": config.name,
      "method": config.method,
      "epochs": config.optimization.epochs,
      "seed": config.seed,
      "dataset": info.name,
      "data_source": info.source,
      "num_train": info.num_train,
      "num_test": info.num_test,
      "image_shape": list(info.image_shape),
      "class_names": list(info.class_names),
      "classifiers": [
          {"architecture": architecture,
           "top1": float(metrics[f"c{i}_top1"]),
           "top5": float(metrics[f"c{i}_top5"])}
          for i, architecture in enumerate(config.architectures)],
      "ensemble_top1": float(metrics["ensemble_top1"]),
      "mean_divergence": float(metrics["divergence"]),
      "test_loss": float(metrics["loss"]),
      "checkpoint": checkpoint,
      "optimizer_iterations": _optimizer_iterations(model),
      "train_seconds": train_seconds,
      "seconds_per_epoch": (train_seconds / config.optimization.epochs) if train_seconds else None,
      "evaluation_seconds": evaluation_seconds,
      "wall_seconds": (train_seconds or 0.0) + evaluation_seconds,
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      "machine": platform.machine_info(),
      "config": config.to_dict(),
  }
  if config.uses_adversarial_phase():
    from acn_tf import health
    results["phase_a_health"] = health.measure(model, test_data, seed=config.seed)
  divergences = read_divergences(model_dir)
  if divergences:  # The run resumed from a checkpoint before it diverged.
    results["divergences"] = divergences
  strict_json.write(results_path, results)
  return results
