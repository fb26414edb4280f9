"""Builds a run from its config and drives Keras: fit, evaluate, results.

This is where config, data, networks and optimizers meet. `run.py` parses flags
and creates the distribution strategy; everything here receives objects.
"""

import csv
import os
import sys
import time
from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from acn_tf import errors, platform, strict_json
from acn_tf.data import pipeline
from acn_tf.run import (builders, callbacks as acn_callbacks, distribute, guard, run_dir, safety,
                        storage)
from acn_tf.config.schema import ExperimentConfig

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
  (`restore`, before fit, so the data can start there), and it turns SIGTERM into
  a clean stop that keeps the last epoch's checkpoint (and writes one at the stop's
  step when `checkpoint_every_steps` is set).
  ACN's health figures come next, so that the history and TensorBoard, which
  read the epoch's logs after them, record them.
  """
  backup = safety.SafeBackupAndRestore(os.path.join(model_dir, run_dir.BACKUP_DIR),
                                       save_freq=config.runtime.checkpoint_every_steps or "epoch",
                                       steps=steps)
  probe = preview_batch[0] if preview_batch is not None else None
  callbacks = [guard.TrainingGuard(config, backup, steps, probe_images=probe), backup]
  if config.uses_adversarial_phase():
    from acn_tf.method import health
    callbacks.append(health.PhaseAHealth(health_batches, seed=config.seed))
  callbacks += [
      acn_callbacks.HistoryLogger(os.path.join(model_dir, run_dir.HISTORY_FILE), append=resuming),
      acn_callbacks.EpochTensorBoard(os.path.join(model_dir, run_dir.LOG_DIR),
                                     update_freq=config.runtime.log_every_steps or "epoch",
                                     write_graph=False, profile_batch=0),
  ]
  if has_validation:
    # On resume, the best score so far comes from the history, so that a worse
    # epoch after the restart cannot replace the best weights saved before it.
    best_so_far = best_recorded(os.path.join(model_dir, run_dir.HISTORY_FILE),
                                "val_ensemble_top1") if resuming else None
    callbacks.append(acn_callbacks.BestWeightsCheckpoint(
        os.path.join(model_dir, run_dir.BEST_WEIGHTS_FILE), monitor="val_ensemble_top1",
        mode="max", save_best_only=True, save_weights_only=True,
        initial_value_threshold=best_so_far))
  if config.uses_adversarial_phase():
    if preview_batch is not None:
      callbacks.append(acn_callbacks.DivergentExamplesSummary(
          os.path.join(model_dir, run_dir.LOG_DIR), *preview_batch))
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


# -- Train and evaluate --------------------------------------------------------------


def load_data(config: ExperimentConfig, data_dir: Optional[str]) -> pipeline.DataSplits:
  return pipeline.load_config_splits(config, data_dir)


def training_pipeline(config: ExperimentConfig, splits: pipeline.DataSplits,
                      start_epoch: int = 0) -> tf.data.Dataset:
  """The training batches as one endless stream, started after `start_epoch` epochs.

  Every pass over the split is reshuffled and re-augmented exactly as a new
  iterator of it would be, so a run resumed after epoch k reads the batches an
  uninterrupted run reads from epoch k + 1 on (what it costs: the skipped
  batches are prepared and dropped). The stream is built anew for each iterator
  of it, because the seeds of the passes live in the dataset: any iterator opened
  first (under a distribution strategy Keras reads a batch from one of its own, to
  build the model) would otherwise move them on for the iterators after it.
  """
  steps = builders.steps_per_epoch(config, splits.info)
  buffer = pipeline.shuffle_buffer_size(splits.train)

  def stream(_):
    train = pipeline.make_pipeline(splits.train, batch_size=config.data.batch_size,
                                   training=True, augmentation=config.data.augmentation,
                                   crop_padding=config.data.crop_padding, seed=config.seed,
                                   shuffle_buffer=buffer)
    return train.repeat().skip(start_epoch * steps)

  return tf.data.Dataset.from_tensors(0).flat_map(stream).prefetch(tf.data.AUTOTUNE)


def resume_message(model_dir: str, start_epoch: int, epochs: int, steps: int) -> str:
  """What a launch that resumes says before its first step, which may be long: it
  prepares and drops every batch the earlier launches read (training_pipeline)."""
  where = (f"Resuming {model_dir} after epoch {start_epoch} of {epochs} (its checkpoint "
           f"in {run_dir.BACKUP_DIR}/)")
  if start_epoch >= epochs:
    return f"{where}: training is done; evaluating and writing the results."
  batches = start_epoch * steps
  return (f"{where}; the first step comes after the {batches} batch"
          f"{'es' if batches != 1 else ''} read before it are prepared again and dropped.")


def evaluation_pipelines(config: ExperimentConfig, splits: pipeline.DataSplits):
  """(validation or None, test) batched pipelines for `config`."""
  validation = None
  if splits.validation is not None:
    validation = pipeline.make_pipeline(splits.validation, batch_size=config.data.batch_size,
                                        training=False)
  test = pipeline.make_pipeline(splits.test, batch_size=config.data.batch_size, training=False)
  return validation, test


def make_pipelines(config: ExperimentConfig, splits: pipeline.DataSplits):
  """(train, validation or None, test) batched pipelines for `config`."""
  return (training_pipeline(config, splits), *evaluation_pipelines(config, splits))


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


def channel_statistics(config: ExperimentConfig, splits: pipeline.DataSplits):
  """The training split's channel mean and variance. Reading it decodes every
  image, so a damaged one shows here, as a DataFormatError, before anything is
  written. A folder's files were already checked as it was listed (and are
  named: folders.check_images_decode); this catches the others (a damaged record
  of tensorflow-datasets)."""
  try:
    return pipeline.channel_statistics(splits.train)
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
  results.json and, with `export`, the SavedModels; returns the results. If
  model_dir holds this run finished, returns its results and trains nothing.

  Every input is checked before the first file is written: the model_dir (read
  only; in use by another process is refused: storage.RunDirLock), the data
  (its training images read once, for their statistics), then the config
  against the data. A run that diverges stops within the epoch
  (TrainingDivergedError) with its last good checkpoint intact and no results;
  SIGTERM or SIGINT stops it at the next step, keeping the last epoch's
  checkpoint, or saving that step with `checkpoint_every_steps`
  (TrainingInterrupted); a write that fails (a full disk) stops at
  once (storage.StorageError).
  """
  strategy = strategy or tf.distribute.get_strategy()
  config.validate()
  distribute.check_global_batch(config.data.batch_size, strategy)
  with storage.RunDirLock(model_dir) as lock:
    lock.acquire(create=False, record=False)  # At once, if a run there ever took it.
    finished = run_dir.finished_results(model_dir, config)
    if finished is not None:  # This run, finished by an earlier launch.
      return finished
    run_dir.inspect_model_dir(model_dir, config)
    if lock.held:
      lock.acquire()  # This command goes on: its PID for a process refused.
    splits = load_data(config, data_dir)
    builders.steps_per_epoch(config, splits.info)
    statistics = channel_statistics(config, splits)  # Reads (decodes) the training split.
    with storage.writing(model_dir):  # A write no callback named (Keras' own files).
      resuming = run_dir.prepare_model_dir(model_dir, config, lock)
      return _train(config, model_dir, splits, statistics, resuming, strategy, verbose,
                    export)


def _train(config, model_dir, splits, statistics, resuming, strategy, verbose, export):
  keras.utils.set_random_seed(config.seed)
  model, steps = build_for_splits(config, splits, strategy, statistics)
  validation_data, test_data = evaluation_pipelines(config, splits)
  preview = next(iter(splits.train.batch(8).map(
      lambda images, labels: (pipeline.pixels_to_unit_range(images), labels))))
  held_out = validation_data if validation_data is not None else test_data
  callbacks = training_callbacks(config, model_dir, resuming, validation_data is not None,
                                 (preview[0].numpy(), preview[1].numpy()),
                                 health_batches(held_out), steps=steps)
  backup = next(callback for callback in callbacks
                if isinstance(callback, safety.SafeBackupAndRestore))
  backup.agree_on_stop = distribute.stop_agreement(strategy)
  # The checkpoint first, then the data from where it ends.
  start_epoch = backup.restore(model)
  if start_epoch and distribute.is_chief():
    sys.stderr.write(resume_message(model_dir, start_epoch, config.optimization.epochs,
                                    steps) + "\n")
  train_data = training_pipeline(config, splits, start_epoch=start_epoch)
  counter = acn_callbacks.StepCounter()
  callbacks.append(counter)
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
      raise guard.diverged_error(
          config, "the end of training", _optimizer_iterations(model)["classifiers"],
          f"the test loss is {float(metrics['loss'])}", "test_loss", None, backup,
          epoch=config.optimization.epochs)
  except errors.TrainingDivergedError as error:
    run_dir.record_divergence(model_dir, error)
    raise
  return _finish(config, model, model_dir, splits, metrics, evaluation_seconds, test_data,
                 train_seconds, counter.steps, export)


def _finish(config, model, model_dir, splits, metrics, evaluation_seconds, test_data,
            train_seconds, train_steps, export) -> Dict[str, Any]:
  """The final phase, after training: final weights, export, results.json, then the
  backup removed. Each piece is written under a temporary name and renamed into
  place, and results.json (the mark of a finished run) comes after the others,
  so a kill or a full disk at any point leaves a run that the same command
  finishes: it restores the last checkpoint (no training left) and writes the
  final phase again. The backup goes last: until results.json exists it is what
  a rerun resumes from."""
  save_final_weights(model, model_dir)
  if export:
    from acn_tf.run import export as export_lib
    export_lib.export_run(model, model_dir, run_dir.EXPORT_DIR, splits.info.class_names,
                          replace=True)
    storage.reach("recording")
  results = _record(config, model, metrics, evaluation_seconds, test_data, splits.info,
                    model_dir, train_seconds, train_steps=train_steps)
  storage.reach("results")
  storage.remove_directory(os.path.join(model_dir, run_dir.BACKUP_DIR))
  return results


def save_final_weights(model, model_dir: str) -> None:
  """final.weights.h5, written under a temporary name and renamed into place."""
  path = os.path.join(model_dir, run_dir.WEIGHTS_FILE)
  incoming = os.path.join(model_dir, "final.incoming.weights.h5")  # Keras wants *.weights.h5.
  try:
    with storage.writing(path):
      model.save_weights(incoming, overwrite=True)
      storage.reach("final_weights")
      os.replace(incoming, path)
  except storage.StorageError:
    if os.path.exists(incoming):
      os.remove(incoming)
    raise


def restore_run(model_dir: str, data_dir: Optional[str] = None,
                strategy: Optional[tf.distribute.Strategy] = None,
                checkpoint: str = "final"):
  """A trained run: (config, model with the `checkpoint` weights, data splits).

  checkpoint: "final" (end of training) or "best" (highest validation ensemble
  top-1; needs validation_fraction > 0 at training time).
  """
  if checkpoint not in run_dir.CHECKPOINTS:
    raise errors.ModelDirError(f"checkpoint={checkpoint!r}: use one of {', '.join(run_dir.CHECKPOINTS)}.")
  config = run_dir.run_config(model_dir)
  weights = os.path.join(model_dir, run_dir.CHECKPOINTS[checkpoint])
  if not os.path.exists(weights):
    hint = ("train with --override=validation_fraction=0.1 to keep a best checkpoint"
            if checkpoint == "best" else "the run did not finish training; run the "
            "training command again to resume it")
    raise errors.ModelDirError(f"No {run_dir.CHECKPOINTS[checkpoint]} in --model_dir={model_dir}: {hint}.")
  strategy = strategy or tf.distribute.get_strategy()
  splits = load_data(config, data_dir)
  model, _ = build_for_splits(config, splits, strategy)
  run_dir.load_weights(model, weights)
  return config, model, splits


def evaluate(model_dir: str, data_dir: Optional[str] = None,
             strategy: Optional[tf.distribute.Strategy] = None,
             verbose: int = 2, checkpoint: str = "final") -> Dict[str, Any]:
  """Re-evaluates the run in `model_dir` on the test split; rewrites results.json.

  Holds the directory's lock shared: evaluations may run side by side (each
  replaces results.json whole), a training or an export may not meanwhile."""
  with storage.RunDirLock(model_dir, shared=True, purpose="evaluation") as lock:
    lock.acquire(create=False, record=False)
    config, model, splits = restore_run(model_dir, data_dir, strategy, checkpoint)
    _, test_data = evaluation_pipelines(config, splits)
    lock.acquire()  # Before results.json is written (a run of an older version has no lock file).
    storage.remove_leftovers(os.path.join(model_dir, run_dir.BACKUP_DIR))  # After a kill.
    return _evaluate_and_record(config, model, test_data, splits.info, model_dir, None,
                                verbose=verbose, checkpoint=checkpoint)


def export(model_dir: str, data_dir: Optional[str] = None,
           checkpoint: str = "final") -> Dict[str, str]:
  """SavedModels (each classifier and the ensemble) of a trained run, under
  MODEL_DIR/export (MODEL_DIR/export_best for the best checkpoint). A run's
  export already there is refused; one a kill left unfinished is redone."""
  from acn_tf.run import export as export_lib
  with storage.RunDirLock(model_dir, purpose="export") as lock:
    lock.acquire(create=False, record=False)
    _, model, splits = restore_run(model_dir, data_dir, checkpoint=checkpoint)
    target = run_dir.EXPORT_DIR if checkpoint == "final" else f"{run_dir.EXPORT_DIR}_{checkpoint}"
    export_lib.check_run_export_free(os.path.join(model_dir, target))  # Before the lock file.
    lock.acquire()
    storage.remove_leftovers(os.path.join(model_dir, run_dir.BACKUP_DIR))  # After a kill.
    return export_lib.export_run(model, model_dir, target, splits.info.class_names,
                                 replace=False)


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
            train_seconds, checkpoint: str = "final",
            train_steps: Optional[int] = None) -> Dict[str, Any]:
  """Writes results.json (strict JSON) from the test metrics; returns the results.

  `train_seconds` and `train_steps` are this process's `fit`: its seconds and the
  steps it ran (a resumed run's since its checkpoint). None for both (a
  re-evaluation) keeps what results.json recorded.
  """
  results_path = os.path.join(model_dir, run_dir.RESULTS_FILE)
  if train_seconds is None and os.path.exists(results_path):
    try:  # Re-evaluation keeps the training time.
      recorded = strict_json.read(results_path)
      train_seconds, train_steps = recorded.get("train_seconds"), recorded.get("train_steps")
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
      # Steps and images of this process's `fit` (a resumed run: since its checkpoint).
      "train_steps": train_steps,
      "train_images_per_second": (train_steps * config.data.batch_size / train_seconds
                                  if train_seconds and train_steps is not None else None),
      "evaluation_seconds": evaluation_seconds,
      "wall_seconds": (train_seconds or 0.0) + evaluation_seconds,
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      "machine": platform.machine_info(),
      "config": config.to_dict(),
  }
  if config.uses_adversarial_phase():
    from acn_tf.method import health
    results["phase_a_health"] = health.measure(model, test_data, seed=config.seed)
  divergences = run_dir.read_divergences(model_dir)
  if divergences:  # The run resumed from a checkpoint before it diverged.
    results["divergences"] = divergences
  with storage.writing(results_path):
    strict_json.write(results_path, results)
  return results
