"""Builds a run from its config and drives Keras: fit, evaluate, results.

This is where config, data, networks and optimizers meet. `run.py` parses flags
and creates the distribution strategy; everything here receives objects.
"""

import json
import os
import time
from typing import Any, Dict, Optional

import keras
import tensorflow as tf

from acn_tf import backbones, data
from acn_tf.config import ExperimentConfig
from acn_tf.models import CoDistillation, DistillationSettings

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"
WEIGHTS_FILE = "final.weights.h5"


class ModelDirError(RuntimeError):
  """The model_dir cannot be used as asked; the message says what to do instead."""


# -- Building blocks -------------------------------------------------------------


def use_xla(config: ExperimentConfig) -> bool:
  """XLA is a GPU default: on this project's CPUs it measured slower (KERAS3_NOTES 5)."""
  if config.jit_compile == "auto":
    return bool(tf.config.list_physical_devices("GPU"))
  return config.jit_compile == "true"


def steps_per_epoch(config: ExperimentConfig, info: data.DatasetInfo) -> int:
  if config.steps_per_epoch:
    return config.steps_per_epoch
  steps = info.num_train // config.batch_size
  if steps == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the {info.num_train} "
                     "training examples; lower batch_size.")
  return steps


def learning_rate_schedule(config: ExperimentConfig, steps: int):
  """The classifiers' learning rate as a Keras schedule over optimizer steps."""
  if config.lr_schedule == "constant":
    return config.learning_rate
  if config.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, config.epochs * steps))
  boundaries = [epoch * steps for epoch in config.lr_decay_epochs]
  values = [config.learning_rate * config.lr_decay_factor**k
            for k in range(len(boundaries) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def classifier_optimizer(config: ExperimentConfig, steps: int) -> keras.optimizers.Optimizer:
  # Keras applies weight_decay as decoupled decay (w -= lr * wd * w), which for
  # SGD equals L2 regularisation of the gradient up to the momentum buffer.
  return keras.optimizers.SGD(
      learning_rate=learning_rate_schedule(config, steps), momentum=config.momentum,
      nesterov=config.nesterov, weight_decay=config.weight_decay or None)


def build_classifiers(config: ExperimentConfig, info: data.DatasetInfo,
                      channel_mean, channel_variance):
  """n classifiers, each from its own seed so they start apart (DML needs that)."""
  return [
      backbones.build_classifier(
          architecture, info.image_shape, info.num_classes, channel_mean,
          channel_variance, name=f"classifier_{index}",
          seed=config.seed * 1000 + index)
      for index, architecture in enumerate(config.architectures)
  ]


def distillation_settings(config: ExperimentConfig) -> DistillationSettings:
  return DistillationSettings(
      temperature=config.temperature, kd_weight=config.effective_kd_weight(),
      adv_weight=config.adv_weight, adv_ce_weight=config.adv_ce_weight)


def build_model(config: ExperimentConfig, info: data.DatasetInfo, channel_mean,
                channel_variance, steps: int) -> CoDistillation:
  """The compiled training model of `config.method`, optimizers built.

  Call inside the strategy's scope: everything here owns variables.
  """
  classifiers = build_classifiers(config, info, channel_mean, channel_variance)
  optimizer = classifier_optimizer(config, steps)
  if config.uses_adversarial_phase():
    from acn_tf import adversarial  # The ACN model is only needed for method=acn.
    model = adversarial.build_adversarial_model(config, info, classifiers)
    model.compile(optimizer=optimizer, settings=distillation_settings(config),
                  **adversarial.compile_arguments(config), jit_compile=use_xla(config))
  else:
    model = CoDistillation(classifiers, name="codistillation")
    model.compile(optimizer=optimizer, settings=distillation_settings(config),
                  jit_compile=use_xla(config))
  model(tf.zeros((1, *info.image_shape)))
  model.build_optimizers()
  return model


def training_callbacks(config: ExperimentConfig, model_dir: str):
  callbacks = [keras.callbacks.CSVLogger(os.path.join(model_dir, HISTORY_FILE))]
  if config.uses_adversarial_phase():
    from acn_tf import adversarial
    callbacks.append(adversarial.AdversarialWarmup(config.adv_warmup_epochs))
  return callbacks


# -- Model directory -------------------------------------------------------------


def prepare_model_dir(model_dir: str, config: ExperimentConfig) -> None:
  """Refuses a model_dir that already holds a run: never clobber earlier work."""
  existing = [name for name in (CONFIG_FILE, RESULTS_FILE, WEIGHTS_FILE, HISTORY_FILE)
              if os.path.exists(os.path.join(model_dir, name))]
  if existing:
    raise ModelDirError(
        f"--model_dir={model_dir} already holds a run ({', '.join(existing)}). "
        "Choose a new --model_dir, evaluate the run with --mode=eval, or delete the "
        "directory yourself to start over.")
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, CONFIG_FILE), "w") as handle:
    json.dump(config.to_dict(), handle, indent=2)


def load_run_config(model_dir: str) -> Dict[str, Any]:
  path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ModelDirError(f"No {CONFIG_FILE} in --model_dir={model_dir}: it holds no "
                        "trained run. Train first with --mode=train.")
  with open(path) as handle:
    return json.load(handle)


# -- Train and evaluate --------------------------------------------------------------


def load_data(config: ExperimentConfig, data_dir: Optional[str]) -> data.DataSplits:
  return data.load_splits(config.dataset, data_dir, train_examples=config.train_examples,
                          validation_fraction=config.validation_fraction,
                          seed=config.seed)


def make_pipelines(config: ExperimentConfig, splits: data.DataSplits):
  """(train, validation or None, test) batched pipelines for `config`."""
  train = data.make_pipeline(splits.train, batch_size=config.batch_size, training=True,
                             augmentation=config.augmentation,
                             crop_padding=config.crop_padding, seed=config.seed)
  if config.steps_per_epoch:
    train = train.repeat()
  validation = None
  if splits.validation is not None:
    validation = data.make_pipeline(splits.validation, batch_size=config.batch_size,
                                    training=False)
  test = data.make_pipeline(splits.test, batch_size=config.batch_size, training=False)
  return train, validation, test


def build_for_splits(config, splits, strategy):
  mean, variance = data.channel_statistics(splits.train)
  steps = steps_per_epoch(config, splits.info)
  with strategy.scope():
    model = build_model(config, splits.info, mean, variance, steps)
  return model, steps


def train(config: ExperimentConfig, model_dir: str, data_dir: Optional[str] = None,
          strategy: Optional[tf.distribute.Strategy] = None,
          verbose: int = 2) -> Dict[str, Any]:
  """Trains `config` into `model_dir` and writes results.json; returns the results."""
  strategy = strategy or tf.distribute.get_strategy()
  splits = load_data(config, data_dir)  # Fails on missing data before any file is written.
  prepare_model_dir(model_dir, config)
  keras.utils.set_random_seed(config.seed)
  model, steps = build_for_splits(config, splits, strategy)
  train_data, validation_data, test_data = make_pipelines(config, splits)
  start = time.time()
  model.fit(train_data, epochs=config.epochs, steps_per_epoch=steps,
            validation_data=validation_data,
            callbacks=training_callbacks(config, model_dir), verbose=verbose,
            shuffle=False)  # The pipeline shuffles, seeded.
  train_seconds = time.time() - start
  model.save_weights(os.path.join(model_dir, WEIGHTS_FILE))
  return _evaluate_and_record(config, model, test_data, splits.info, model_dir,
                              train_seconds)


def restore_run(model_dir: str, data_dir: Optional[str] = None,
                strategy: Optional[tf.distribute.Strategy] = None):
  """The trained run in `model_dir`: (config, model with its weights, data splits)."""
  config = ExperimentConfig(**_tuples(load_run_config(model_dir))).validate()
  weights = os.path.join(model_dir, WEIGHTS_FILE)
  if not os.path.exists(weights):
    raise ModelDirError(f"No {WEIGHTS_FILE} in --model_dir={model_dir}: the run did not "
                        "finish training.")
  strategy = strategy or tf.distribute.get_strategy()
  splits = load_data(config, data_dir)
  model, _ = build_for_splits(config, splits, strategy)
  model.load_weights(weights)
  return config, model, splits


def evaluate(model_dir: str, data_dir: Optional[str] = None,
             strategy: Optional[tf.distribute.Strategy] = None,
             verbose: int = 2) -> Dict[str, Any]:
  """Re-evaluates the trained run in `model_dir` on the test split."""
  config, model, splits = restore_run(model_dir, data_dir, strategy)
  _, _, test_data = make_pipelines(config, splits)
  return _evaluate_and_record(config, model, test_data, splits.info, model_dir, None,
                              verbose=verbose)


def _tuples(values: Dict[str, Any]) -> Dict[str, Any]:
  """JSON turns the config's tuples into lists; frozen configs want tuples back."""
  return {key: tuple(value) if isinstance(value, list) else value
          for key, value in values.items()}


def _evaluate_and_record(config, model, test_data, info, model_dir, train_seconds,
                         verbose: int = 2) -> Dict[str, Any]:
  start = time.time()
  metrics = model.evaluate(test_data, return_dict=True, verbose=verbose)
  evaluation_seconds = time.time() - start
  results_path = os.path.join(model_dir, RESULTS_FILE)
  if train_seconds is None and os.path.exists(results_path):
    with open(results_path) as handle:  # Re-evaluation keeps the training time.
      train_seconds = json.load(handle).get("train_seconds")
  results = {
      "experiment": config.name,
      "method": config.method,
      "epochs": config.epochs,
      "seed": config.seed,
      "dataset": info.name,
      "data_source": info.source,
      "num_train": info.num_train,
      "num_test": info.num_test,
      "classifiers": [
          {"architecture": architecture,
           "top1": float(metrics[f"c{i}_top1"]),
           "top5": float(metrics[f"c{i}_top5"])}
          for i, architecture in enumerate(config.architectures)],
      "ensemble_top1": float(metrics["ensemble_top1"]),
      "mean_divergence": float(metrics["divergence"]),
      "test_loss": float(metrics["loss"]),
      "train_seconds": train_seconds,
      "seconds_per_epoch": (train_seconds / config.epochs) if train_seconds else None,
      "evaluation_seconds": evaluation_seconds,
      "wall_seconds": (train_seconds or 0.0) + evaluation_seconds,
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      "config": config.to_dict(),
  }
  with open(results_path, "w") as handle:
    json.dump(results, handle, indent=2)
  return results
