"""Bad input fails well: one message naming the culprit, before any work, nothing written.

The battery is table-driven: each case prepares its files, then makes the same
calls a `run.py` mode makes (resolve_config + training.train, training.evaluate,
training.export, run_dir.check_search_dir), in-process. Every case asserts the
error type, that the message has no traceback and names the flag, field, file or
path at fault, and that the model_dir is exactly as it was (files, sizes and
modification times; a model_dir that did not exist still does not). Then run.py's
own entry point with bad flags, in this process (its exit status and one error
line), and for one config, one model_dir and one data error in a process of its
own (the exit status, and a stderr without traceback or TensorFlow's chatter).

Then: a diverged run stops within the epoch and keeps its last good checkpoint
(and resumes from it with another learning rate), SIGTERM leaves a checkpoint
that the same command resumes, a checkpoint cut short falls back to the previous
one, and every JSON file a run writes is strict JSON.
"""

import gzip
import io
import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import tarfile
import threading
import time
import types

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import errors, strict_json
from acn_tf.config import command_line, schema as config_lib, registry
from acn_tf.data import pipeline, sources
from acn_tf.run import distribute, guard, run_dir, safety, storage, training, tuning
from conftest import (ROOT, assert_one_error_line, early_runs, error_lines, history_epochs,
                      run_py, snapshot, start_run_py, strict_json_files)
from dataset_files import write_idx

IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------
# Helpers.


def write_fashion(directory, num_train=12, num_test=5, image_size=28, labels=None):
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, count in (("train", num_train), ("t10k", num_test)):
    images = rng.integers(0, 256, (count, image_size, image_size), dtype=np.uint8)
    split_labels = np.arange(count) % 10 if labels is None else labels[:count]
    write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), images, 0x803,
              compress=True)
    write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
              np.asarray(split_labels, np.uint8), 0x801, compress=True)


def write_cifar10_folder(data_dir):
  folder = os.path.join(data_dir, "cifar-10-batches-py")
  os.makedirs(folder)
  rows = np.zeros((2, 3072), np.uint8)
  for name in [f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]:
    with open(os.path.join(folder, name), "wb") as handle:
      pickle.dump({b"data": rows, b"labels": [1, 2]}, handle)
  return folder


def write_run_dir(model_dir, **changes):
  """An unfinished digits run: config.json and a history, as a killed run leaves them."""
  os.makedirs(model_dir)
  config = registry.get_experiment("digits").replace(**changes)
  strict_json.write(os.path.join(model_dir, "config.json"), config.to_dict())
  with open(os.path.join(model_dir, "history.csv"), "w") as handle:
    handle.write("epoch,loss\n0,1.5\n")


def write_search_dir(model_dir):
  os.makedirs(os.path.join(model_dir, "tuner"))
  strict_json.write(os.path.join(model_dir, "search.json"),
                    {"tuner": "random", "config": registry.get_experiment("digits").to_dict()})
  strict_json.write(os.path.join(model_dir, "best_config.json"), {"learning_rate": 0.05})


class Env:
  """Paths of one case: model_dir (absent unless a case creates it) and scratch space."""

  def __init__(self, tmp_path, monkeypatch):
    self.tmp = str(tmp_path)
    self.model_dir = os.path.join(self.tmp, "run")
    self.data_dir = os.path.join(self.tmp, "data")
    self.config_file = os.path.join(self.tmp, "config.json")
    self.monkeypatch = monkeypatch
    self.snapshot_recursive = True

  def values(self):
    return {"model_dir": self.model_dir, "data_dir": self.data_dir,
            "config_file": self.config_file, "tmp": self.tmp}

  def train(self, experiment="digits", overrides=(), config_file=None, data_dir=None):
    """What `run.py --mode=train` does, one epoch of one step if it ever got that far."""
    config = command_line.resolve_config(experiment, None, config_file,
                                       ["epochs=1", "steps_per_epoch=1", *overrides])
    return training.train(config, self.model_dir, data_dir, verbose=0)


CASES = []


def case(error, *culprits):
  """Registers a case: `error` is raised, the message names every culprit
  (str.format-ted with the Env's paths)."""

  def register(prepare):
    CASES.append(pytest.param(prepare, error, culprits, id=prepare.__name__))
    return prepare

  return register


# -- Config fields: --override, --config_file, configs built in Python. ------------


@case(errors.ConfigError, "batch_size=63", "2 replicas", "batch_size=62", "64")
def batch_that_two_replicas_cannot_share(env):
  config = command_line.resolve_config("digits", None, None, ["batch_size=63"])
  return lambda: training.train(config, env.model_dir, strategy=distribute.create_strategy(
      "mirrored"), verbose=0)  # conftest: two logical CPUs.


@case(errors.ConfigError, "batch_size=63", "2 replicas")
def search_batch_that_two_replicas_cannot_share(env):
  config = command_line.resolve_config("digits", None, None, ["batch_size=63"])
  return lambda: tuning.tune(config, env.model_dir, max_trials=1, verbose=0,
                             strategy=distribute.create_strategy("mirrored"))


@case(errors.ConfigError, "learning_rate", "finite")
def override_nan_learning_rate(env):
  return lambda: env.train(overrides=["learning_rate=nan"])


@case(errors.ConfigError, "temperature", "finite")
def override_inf_temperature(env):
  return lambda: env.train(overrides=["temperature=inf"])


@case(errors.ConfigError, "wrc_alpha", "finite")
def override_negative_inf_wrc_alpha(env):
  return lambda: env.train(overrides=["wrc_alpha=-inf"])


@case(errors.ConfigError, "learning_rate", "finite")
def config_file_nan_token(env):
  with open(env.config_file, "w") as handle:
    handle.write('{"learning_rate": NaN}')
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "momentum", "finite")
def config_file_infinity_token(env):
  with open(env.config_file, "w") as handle:
    handle.write('{"momentum": Infinity}')
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "weight_decay", "finite")
def config_file_nan_string(env):
  strict_json.write(env.config_file, {"weight_decay": "nan"})
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "batch_size must be > 0")
def override_zero_batch_size(env):
  return lambda: env.train(overrides=["batch_size=0"])


@case(errors.ConfigError, "epochs must be > 0")
def override_negative_epochs(env):
  return lambda: command_line.resolve_config("digits", overrides=["epochs=-3"])


@case(errors.ConfigError, "momentum", "[0, 1]")
def override_momentum_above_one(env):
  return lambda: env.train(overrides=["momentum=1.5"])


@case(errors.ConfigError, "validation_fraction", "[0, 1)")
def override_validation_fraction_one(env):
  return lambda: env.train(overrides=["validation_fraction=1"])


@case(errors.ConfigError, "adversarial_beta_1")
def override_beta_1_one(env):
  return lambda: env.train(overrides=["adversarial_beta_1=1.0"])


@case(errors.ConfigError, "Override epochs", "expected int")
def override_epochs_not_a_number(env):
  return lambda: env.train(overrides=["epochs=ten"])


@case(errors.ConfigError, "--config_file={config_file}", "epochs", "expected int")
def config_file_float_for_int_field(env):
  strict_json.write(env.config_file, {"epochs": 2.5})
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={config_file}", "nesterov", "expected bool")
def config_file_string_for_bool_field(env):
  strict_json.write(env.config_file, {"nesterov": "maybe"})
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={config_file}", "'learning_rat'")
def config_file_unknown_field(env):
  strict_json.write(env.config_file, {"learning_rat": 0.1})
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "architectures is empty")
def override_empty_architectures(env):
  return lambda: env.train(overrides=["architectures="])


@case(errors.ConfigError, "lr_schedule=step", "lr_decay_epochs")
def override_step_schedule_without_decay_epochs(env):
  return lambda: env.train(overrides=["lr_schedule=step", "lr_decay_epochs="])


@case(errors.ConfigError, "'vgg16'")
def override_unknown_architecture(env):
  return lambda: env.train(overrides=["architectures=vgg16,small_cnn"])


@case(errors.ConfigError, "'resnet31'", "6n+2")
def override_bad_resnet_depth(env):
  return lambda: env.train(overrides=["architectures=resnet31,resnet32"])


@case(errors.ConfigError, "Unknown config key 'learning_rat'")
def override_unknown_key(env):
  return lambda: env.train(overrides=["learning_rat=0.1"])


@case(errors.ConfigError, "Unknown experiment 'imagenet'")
def unknown_experiment(env):
  return lambda: env.train(experiment="imagenet")


@case(errors.ConfigError, "search_space entry", "finite")
def override_search_space_infinite_bound(env):
  return lambda: env.train(overrides=["search_space=learning_rate=0.01:inf"])


@case(errors.ConfigError, "epochs must be of type int", "'10'")
def python_config_wrong_type(env):
  return lambda: config_lib.ExperimentConfig.from_fields(name="x", dataset="digits",
                                             epochs="10").validate()


@case(errors.ConfigError, "learning_rate", "finite")
def python_config_nan(env):
  config = config_lib.ExperimentConfig.from_fields(name="x", dataset="digits",
                                       architectures=("small_cnn", "small_cnn"),
                                       learning_rate=float("nan"))
  return lambda: training.train(config, env.model_dir, verbose=0)


@case(errors.ConfigError, "train_examples=5000", "1437")
def override_more_train_examples_than_the_data(env):
  return lambda: env.train(overrides=["train_examples=5000"])


@case(errors.ConfigError, "batch_size=2048", "lower batch_size")
def override_batch_larger_than_the_data(env):
  return lambda: env.train(overrides=["batch_size=2048", "steps_per_epoch=0"])


# -- --config_file itself. -----------------------------------------------------------


@case(errors.ConfigError, "--config_file={config_file}", "no such file")
def config_file_missing(env):
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={tmp}", "is a directory")
def config_file_is_a_directory(env):
  return lambda: env.train(config_file=env.tmp)


@case(errors.ConfigError, "--config_file={config_file}", "cannot be read")
def config_file_unreadable(env):
  if IS_ROOT:  # root reads any file whatever its mode; /proc/self/mem refuses offset 0.
    env.config_file = "/proc/self/mem"
  else:
    strict_json.write(env.config_file, {"epochs": 2})
    os.chmod(env.config_file, 0)
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={config_file}", "not valid JSON", "line 1")
def config_file_not_json(env):
  with open(env.config_file, "w") as handle:
    handle.write("epochs: 3\n")
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={config_file}", "'epochs' more than once",
      "values 40 and 1")
def config_file_duplicate_key(env):
  """json.loads keeps the last of two values: this trained 1 epoch, silently."""
  with open(env.config_file, "w") as handle:
    handle.write('{"epochs": 40, "learning_rate": 0.05, "epochs": 1}')
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={config_file}", "JSON list", "not an object")
def config_file_not_an_object(env):
  strict_json.write(env.config_file, [["epochs", 3]])
  return lambda: env.train(config_file=env.config_file)


@case(errors.ConfigError, "--config_file={config_file}", "not a UTF-8 text file")
def config_file_binary(env):
  with open(env.config_file, "wb") as handle:
    handle.write(b"\x89PNG\r\n\x1a\n\xff\xfe")
  return lambda: env.train(config_file=env.config_file)


# -- --data_dir and the data files in it. ---------------------------------------------


@case(errors.DataNotFoundError, "--data_dir={data_dir}", "does not exist")
def data_dir_missing(env):
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataNotFoundError, "--data_dir={config_file}", "not a directory")
def data_dir_is_a_file(env):
  strict_json.write(env.config_file, {})
  return lambda: env.train("fashion_mnist", data_dir=env.config_file)


@case(errors.DataNotFoundError, "--data_dir={data_dir}", "train-images-idx3-ubyte.gz",
      "only place looked in")
def data_dir_empty_while_the_default_place_has_the_data(env):
  # The Debian package's directory holds valid files: an explicit data_dir must
  # still be the only place data is read from.
  debian = os.path.join(env.tmp, "debian")
  write_fashion(debian)
  env.monkeypatch.setattr(sources.fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", debian)
  os.makedirs(env.data_dir)
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataNotFoundError, "--data_dir={data_dir}", "cifar-10-python.tar.gz",
      "cifar-10-batches-py")
def data_dir_empty_for_cifar(env):
  os.makedirs(env.data_dir)
  return lambda: env.train("cifar10", data_dir=env.data_dir)


@case(errors.DataFormatError, "train-images-idx3-ubyte.gz", "truncated or corrupted")
def fashion_images_truncated(env):
  write_fashion(env.data_dir)
  path = os.path.join(env.data_dir, "train-images-idx3-ubyte.gz")
  with open(path, "rb") as handle:
    content = handle.read()
  with open(path, "wb") as handle:
    handle.write(content[:len(content) // 2])
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataFormatError, "train-images-idx3-ubyte.gz", "(32, 32, 1)", "(28, 28, 1)")
def fashion_images_of_the_wrong_shape(env):
  write_fashion(env.data_dir, image_size=32)
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataFormatError, "t10k-labels-idx1-ubyte.gz", "5 images but 3 labels")
def fashion_labels_missing(env):
  write_fashion(env.data_dir)
  write_idx(os.path.join(env.data_dir, "t10k-labels-idx1-ubyte.gz"),
            np.zeros(3, np.uint8), 0x801, compress=True)
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataFormatError, "train-labels-idx1-ubyte.gz", "expected 0..9")
def fashion_label_out_of_range(env):
  write_fashion(env.data_dir, labels=[0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 0, 1])
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataFormatError, "t10k-images-idx3-ubyte.gz", "magic number")
def fashion_file_of_another_kind(env):
  write_fashion(env.data_dir)
  with gzip.open(os.path.join(env.data_dir, "t10k-images-idx3-ubyte.gz"), "wb") as handle:
    handle.write(b"<html>404 Not Found</html>")
  return lambda: env.train("fashion_mnist", data_dir=env.data_dir)


@case(errors.DataFormatError, "cifar-10-python.tar.gz", "truncated")
def cifar_tarball_truncated(env):
  folder = write_cifar10_folder(os.path.join(env.tmp, "source"))
  os.makedirs(env.data_dir)
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
    archive.add(folder, arcname="cifar-10-batches-py")
  with open(os.path.join(env.data_dir, "cifar-10-python.tar.gz"), "wb") as handle:
    handle.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
  return lambda: env.train("cifar10", data_dir=env.data_dir)


@case(errors.DataFormatError, "data_batch_3", "cannot be unpickled")
def cifar_batch_corrupted(env):
  folder = write_cifar10_folder(env.data_dir)
  with open(os.path.join(folder, "data_batch_3"), "wb") as handle:
    handle.write(b"\x80\x04garbage")
  return lambda: env.train("cifar10", data_dir=env.data_dir)


# -- Your own data: tfds:NAME, folder:PATH, experiments defined by a file. ------------


@case(errors.ConfigError, "dataset='tfds:Bad Name'", "tfds:svhn_cropped")
def dataset_malformed_tfds_name(env):
  return lambda: env.train(overrides=["dataset=tfds:Bad Name"])


@case(errors.ConfigError, "tfds:mnsit", "Did you mean tfds:mnist")
def dataset_unknown_tfds_name(env):
  return lambda: env.train(overrides=["dataset=tfds:mnsit"])


@case(errors.ConfigError, "dataset='folder:'", "e.g. dataset=folder:")
def dataset_folder_without_a_path(env):
  return lambda: env.train(overrides=["dataset=folder:"])


@case(errors.DataNotFoundError, "{tmp}/nowhere", "does not exist", "one sub-folder per class")
def dataset_folder_missing(env):
  return lambda: env.train(overrides=[f"dataset=folder:{env.tmp}/nowhere", "image_size=8",
                                      "test_fraction=0.2"])


@case(errors.DataFormatError, "test_folder=", "(a, z) are not those of")
def dataset_test_folder_of_other_classes(env):
  import tensorflow as tf
  for folder, classes in (("train", "ab"), ("test", "az")):
    for name in classes:
      os.makedirs(os.path.join(env.tmp, folder, name))
      tf.io.write_file(os.path.join(env.tmp, folder, name, "image.png"),
                       tf.io.encode_png(tf.zeros((4, 4, 1), tf.uint8)))
  return lambda: env.train(overrides=[f"dataset=folder:{env.tmp}/train", "image_size=4",
                                      f"test_folder={env.tmp}/test"])


@case(errors.ConfigError, "--config_file={config_file}", "gives no dataset",
      "--experiment=NAME")
def config_file_alone_without_a_dataset(env):
  strict_json.write(env.config_file, {"name": "mine", "epochs": 2})
  return lambda: env.train(experiment=None, config_file=env.config_file)


# -- --model_dir for training. -----------------------------------------------------------


@case(errors.ModelDirError, "--model_dir={model_dir}", "is a file")
def model_dir_is_a_file(env):
  with open(env.model_dir, "w") as handle:
    handle.write("notes\n")
  return lambda: env.train()


@case(errors.ModelDirError, "--model_dir={model_dir}/run", "{model_dir} is a file")
def model_dir_under_a_file(env):
  with open(env.model_dir, "w") as handle:
    handle.write("notes\n")
  return lambda: training.train(command_line.resolve_config("digits"),
                                os.path.join(env.model_dir, "run"), verbose=0)


@case(errors.ModelDirError, "Cannot write into --model_dir={model_dir}")
def model_dir_not_writable(env):
  if IS_ROOT:  # Permissions do not stop root; sysfs does.
    env.model_dir = "/sys/kernel"
    env.snapshot_recursive = False
  else:
    os.makedirs(env.model_dir)
    os.chmod(env.model_dir, 0o555)
  return lambda: env.train()


@case(errors.ModelDirError, "Cannot create --model_dir={model_dir}")
def model_dir_cannot_be_created(env):
  if IS_ROOT:
    env.model_dir = "/sys/acn-tf-test-run"
  else:
    os.makedirs(os.path.join(env.tmp, "locked"))
    os.chmod(os.path.join(env.tmp, "locked"), 0o555)
    env.model_dir = os.path.join(env.tmp, "locked", "run")
  return lambda: env.train()


@case(errors.ModelDirError, "--model_dir={model_dir}", "already holds a finished run")
def model_dir_holds_a_finished_run(env):
  write_run_dir(env.model_dir)
  strict_json.write(os.path.join(env.model_dir, "results.json"), {"ensemble_top1": 0.9})
  return lambda: env.train()


@case(errors.ModelDirError, "--model_dir={model_dir}", "hyperparameter search")
def model_dir_holds_a_search(env):
  write_search_dir(env.model_dir)
  return lambda: env.train()


@case(errors.ModelDirError, "{model_dir}/config.json", "cannot be read")
def model_dir_config_damaged(env):
  write_run_dir(env.model_dir)
  with open(os.path.join(env.model_dir, "config.json"), "w") as handle:
    handle.write('{"name": "digits", "epo')
  return lambda: env.train()


@case(errors.ModelDirError, "--model_dir={model_dir}", "epochs (saved 20, now 1)")
def model_dir_holds_another_configuration(env):
  write_run_dir(env.model_dir)
  return lambda: env.train()


@case(errors.ModelDirError, "diverged", "architectures (saved")
def model_dir_diverged_run_resumed_with_other_networks(env):
  write_run_dir(env.model_dir, epochs=1, steps_per_epoch=1)
  strict_json.write(os.path.join(env.model_dir, "diverged.json"),
                    {"divergences": [{"epoch": 1, "metric": "loss"}]})
  return lambda: env.train(overrides=["architectures=small_cnn,resnet8"])


@case(errors.ModelDirError, "{model_dir}/backup", "no checkpoint there loads",
      "latest.weights.h5")
def model_dir_backup_damaged(env):
  write_run_dir(env.model_dir, epochs=1, steps_per_epoch=1)
  backup = os.path.join(env.model_dir, "backup")
  os.makedirs(backup)
  with open(os.path.join(backup, "latest.weights.h5"), "wb") as handle:
    handle.write(b"\x89HDF\r\n\x1a\n" + bytes(100))
  strict_json.write(os.path.join(backup, "training_metadata.json"), {"epoch": 1})
  return lambda: env.train()


# -- --mode=eval, export and tune against the wrong kind of model_dir. ----------------


@case(errors.ModelDirError, "--model_dir={model_dir}", "does not exist")
def eval_missing_model_dir(env):
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "--model_dir={model_dir}", "holds no trained run")
def eval_empty_model_dir(env):
  os.makedirs(env.model_dir)
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "--model_dir={model_dir}", "hyperparameter search",
      "best_config.json")
def eval_search_dir(env):
  write_search_dir(env.model_dir)
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "--model_dir={model_dir}", "is a file")
def eval_model_dir_is_a_file(env):
  with open(env.model_dir, "w") as handle:
    handle.write("notes\n")
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "{model_dir}/config.json", "learning_rate", "finite")
def eval_config_with_nan(env):
  write_run_dir(env.model_dir)
  path = os.path.join(env.model_dir, "config.json")
  with open(path) as handle:
    values = json.load(handle)
  values["learning_rate"] = float("nan")
  with open(path, "w") as handle:
    json.dump(values, handle)  # Python's NaN token, as a hand edit could leave it.
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "{model_dir}/config.json", "'dropout'")
def eval_config_of_another_version(env):
  write_run_dir(env.model_dir)
  path = os.path.join(env.model_dir, "config.json")
  values = strict_json.read(path)
  values["dropout"] = 0.5
  strict_json.write(path, values)
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "final.weights.h5", "--model_dir={model_dir}", "resume")
def eval_unfinished_run(env):
  write_run_dir(env.model_dir)
  return lambda: training.evaluate(env.model_dir, verbose=0)


@case(errors.ModelDirError, "--model_dir={model_dir}", "holds no trained run")
def export_empty_model_dir(env):
  os.makedirs(env.model_dir)
  return lambda: training.export(env.model_dir)


@case(errors.ModelDirError, "--model_dir={model_dir}", "hyperparameter search")
def export_search_dir(env):
  write_search_dir(env.model_dir)
  return lambda: training.export(env.model_dir)


@case(errors.ModelDirError, "--model_dir={model_dir}", "holds a training run")
def tune_into_a_training_run(env):
  write_run_dir(env.model_dir)
  return lambda: run_dir.check_search_dir(env.model_dir)


@case(errors.ModelDirError, "{model_dir}/search.json", "damaged")
def tune_damaged_search(env):
  write_search_dir(env.model_dir)
  with open(os.path.join(env.model_dir, "search.json"), "w") as handle:
    handle.write("{")
  return lambda: run_dir.check_search_dir(env.model_dir)


@case(errors.ModelDirError, "Cannot create --model_dir={model_dir}")
def tune_model_dir_cannot_be_created(env):
  env.model_dir = "/sys/acn-tf-test-search" if IS_ROOT else "/proc/acn-tf-test-search"
  return lambda: run_dir.check_search_dir(env.model_dir)


def test_the_battery_covers_every_kind_of_bad_input():
  """Every error type of bad input (acn_tf/errors.py) has cases here, and only those:
  the outcomes of a run that started (a failed search, a diverged or interrupted
  training) are tested where they happen."""
  outcomes = {errors.SearchFailedError, errors.TrainingDivergedError,
              errors.TrainingInterrupted}
  kinds = {kind for kind in vars(errors).values()
           if isinstance(kind, type) and issubclass(kind, errors.UserError)}
  assert {param.values[1] for param in CASES} == kinds - outcomes - {errors.UserError}


@pytest.mark.parametrize("prepare,error,culprits", CASES)
def test_bad_input_fails_with_one_message_before_any_work(tmp_path, monkeypatch, prepare,
                                                        error, culprits):
  env = Env(tmp_path, monkeypatch)
  action = prepare(env)
  before = snapshot(env.model_dir, env.snapshot_recursive)
  with pytest.raises(error) as raised:
    action()
  assert isinstance(raised.value, errors.UserError)
  message = str(raised.value)
  assert "Traceback" not in message and 'File "' not in message
  assert len(message.splitlines()) <= 12, message
  for culprit in culprits:
    assert culprit.format(**env.values()) in message, message
  after = snapshot(env.model_dir, env.snapshot_recursive)
  if before is not None and after is not None:  # The lock a run holds once it may write.
    after.pop(storage.LOCK_FILE, None)
  assert after == before, "the model_dir changed"


# ---------------------------------------------------------------------------
# run.py: the exit status and one error line on stderr, without traceback.


def _prepare_search(path):
  write_search_dir(str(path))


def _prepare_run(path):
  write_run_dir(str(path))


def _prepare_file(path):
  path.write_text("notes\n")


RUN_PY_CASES = {
    "nan_override": (["--experiment=digits", "--override=learning_rate=nan"], None,
                     "learning_rate"),
    "missing_data_dir": (["--experiment=fashion_mnist", "--data_dir={tmp}/nowhere"], None,
                         "--data_dir={tmp}/nowhere"),
    "model_dir_is_a_file": (["--experiment=digits"], _prepare_file, "--model_dir={model_dir}"),
    "eval_search_dir": (["--mode=eval"], _prepare_search, "hyperparameter search"),
    "override_with_export": (["--mode=export", "--override=epochs=3"], _prepare_run,
                             "--override"),
    "tune_into_run": (["--experiment=digits", "--mode=tune"], _prepare_run,
                      "holds a training run"),
    "missing_folder": (["--experiment=digits", "--override=dataset=folder:{tmp}/nowhere",
                        "--override=image_size=8", "--override=test_fraction=0.2"], None,
                       "{tmp}/nowhere"),
}


def _prepare_run_py_case(tmp_path, name):
  """Prepares case `name` of RUN_PY_CASES in tmp_path; returns its run.py arguments
  and a function that checks what run.py did: exit status 2, one error line naming
  the culprit, and the model_dir as it was."""
  arguments, prepare, culprit = RUN_PY_CASES[name]
  model_dir = tmp_path / "run"
  if prepare is not None:
    prepare(model_dir)
  values = {"tmp": str(tmp_path), "model_dir": str(model_dir)}
  before = snapshot(str(model_dir))

  def check(completed):
    assert_one_error_line(completed, culprit.format(**values))
    assert snapshot(str(model_dir)) == before

  return ([argument.format(**values) for argument in arguments] +
          [f"--model_dir={model_dir}", "--verbose=0"]), check


@pytest.mark.parametrize("name", sorted(RUN_PY_CASES))
def test_run_py_reports_bad_input_in_one_line(tmp_path, run_py_here, name):
  """run.py's main in this process: its flags, checks and messages."""
  arguments, check = _prepare_run_py_case(tmp_path, name)
  check(run_py_here(*arguments))


OWN_PROCESS_CASES = ("nan_override", "model_dir_is_a_file", "missing_data_dir")
_own_process_checks = {}  # Case name: its check, made when the case was prepared.


@early_runs
def own_process_cases(directory):
  """The OWN_PROCESS_CASES, each prepared in DIRECTORY/NAME."""
  arguments = {}
  for name in OWN_PROCESS_CASES:
    case_directory = pathlib.Path(directory, name)
    case_directory.mkdir()
    arguments[name], _own_process_checks[name] = _prepare_run_py_case(case_directory, name)
  return arguments


@pytest.mark.parametrize("name", OWN_PROCESS_CASES)
def test_run_py_in_its_own_process_reports_bad_input_in_one_line(own_process_cases, name):
  """What only a process shows (its exit status, a stderr without TensorFlow's
  start-up chatter or a traceback), for a config, a model_dir and a data error."""
  _own_process_checks[name](own_process_cases[name])


def test_a_config_error_is_reported_before_tensorflow_loads():
  """A misspelt setting costs a fraction of a second, not TensorFlow's start-up."""
  script = ("import runpy, sys\n"
            "sys.argv = ['run.py', '--experiment=digits', '--override=wrc_alpha=-1']\n"
            "try:\n"
            f"  runpy.run_path({os.path.join(ROOT, 'run.py')!r}, run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "  print('exit', exit.code, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
  completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120)
  assert completed.stdout.split() == ["exit", "2", "False", "False"], completed.stderr
  assert "wrc_alpha must be in [0, 1]" in completed.stderr


def test_user_errors_become_a_message_and_bugs_keep_their_traceback(run_module, capsys):
  def bad_input():
    raise errors.DataNotFoundError("--data_dir=/x does not exist.")

  with pytest.raises(SystemExit) as exited:
    run_module.report_user_errors(bad_input)
  assert exited.value.code == 2
  assert capsys.readouterr().err == "error: --data_dir=/x does not exist.\n"

  def interrupted():
    raise errors.TrainingInterrupted("Interrupted by SIGTERM.", signal.SIGTERM)

  with pytest.raises(SystemExit) as exited:
    run_module.report_user_errors(interrupted)
  assert exited.value.code == 143
  assert capsys.readouterr().err == "interrupted: Interrupted by SIGTERM.\n"

  def bug():
    raise ValueError("an internal error")  # Not a UserError, although a ValueError.

  with pytest.raises(ValueError, match="an internal error"):
    run_module.report_user_errors(bug)
  assert capsys.readouterr().err == ""


def test_tuning_markers_match_the_tuner():
  from acn_tf.run import tuning
  assert run_dir.TUNING_MARKERS == (tuning.SEARCH_FILE, tuning.TUNER_DIR)


# ---------------------------------------------------------------------------
# A diverged run.


def test_strict_json_writes_null_for_non_finite_numbers(tmp_path):
  path = str(tmp_path / "values.json")
  strict_json.write(path, {"nan": float("nan"), "inf": np.float32("inf"),
                           "values": (1, np.float64(-np.inf), np.int64(3)),
                           "array": np.array([0.5, np.nan])})
  with open(path) as handle:
    text = handle.read()
  assert "NaN" not in text and "Infinity" not in text
  assert strict_json.loads(text) == {"nan": None, "inf": None, "values": [1, None, 3],
                                     "array": [0.5, None]}
  with pytest.raises(ValueError, match="NaN is not JSON"):
    strict_json.loads('{"a": NaN}')
  assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # Not mkstemp's private mode.


def test_results_json_is_strict_when_a_metric_is_nan(tmp_path):
  config = command_line.resolve_config("digits")
  model = types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=tf.Variable(7)))
  metrics = {"c0_top1": 0.5, "c0_top5": 0.9, "c1_top1": 0.5, "c1_top5": np.float32(0.9),
             "ensemble_top1": 0.5, "divergence": np.float32("nan"), "loss": float("inf")}
  info = pipeline.DatasetInfo("digits", 10, (8, 8, 1), 10, 0, 10, "test")
  results = training._record(config, model, metrics, 0.1, None, info, str(tmp_path), 1.0)
  assert np.isnan(results["mean_divergence"])
  written = strict_json_files(str(tmp_path))["results.json"]
  assert written["mean_divergence"] is None and written["test_loss"] is None
  assert written["optimizer_iterations"] == {"classifiers": 7}


def test_a_diverged_run_stops_within_the_epoch_and_writes_no_results(tmp_path, run_py_here):
  model_dir = tmp_path / "run"
  completed = run_py_here("--experiment=digits", "--override=epochs=1",
                          "--override=learning_rate=1e6", f"--model_dir={model_dir}",
                          "--verbose=0")
  message = assert_one_error_line(completed, status=3)
  assert message.startswith("error: Training diverged at epoch 1, step ")
  assert "of 22" in message
  assert "loss is nan" in message or "not finite" in message
  assert "--override=learning_rate=100000" in message
  assert "no checkpoint had been written yet" in message
  for absent in ("results.json", "final.weights.h5", "export", "backup"):
    assert not (model_dir / absent).exists(), absent
  record = strict_json_files(str(model_dir))["diverged.json"]["divergences"]
  assert len(record) == 1 and record[0]["epoch"] == 1 and record[0]["step"] < 22


class _PoisonWeights(keras.callbacks.Callback):
  """Sets one weight to NaN after the first step of epoch `epoch` (0-based), and notes
  the backup's files as they were then."""

  def __init__(self, epoch, backup_dir):
    super().__init__()
    self.epoch, self.backup_dir = epoch, backup_dir
    self.backup_before = None

  def on_train_batch_end(self, batch, logs=None):
    if self._epoch == self.epoch and batch == 0:
      self.backup_before = snapshot(self.backup_dir)
      kernel = self.model.classifiers[0].trainable_weights[0]
      kernel.assign(np.full(kernel.shape, np.nan, np.float32))

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch


def test_a_diverged_run_keeps_its_checkpoint_and_resumes_with_another_rate(
    tmp_path, monkeypatch):
  model_dir = str(tmp_path / "run")
  backup_dir = os.path.join(model_dir, "backup")
  settings = ["epochs=3", "train_examples=128", "lr_schedule=constant"]
  poison = _PoisonWeights(epoch=1, backup_dir=backup_dir)
  original_callbacks = training.training_callbacks
  monkeypatch.setattr(training, "training_callbacks",
                      lambda *args, **kwargs: original_callbacks(*args, **kwargs) + [poison])
  config = command_line.resolve_config("digits", overrides=settings)
  with pytest.raises(errors.TrainingDivergedError) as raised:
    training.train(config, model_dir, verbose=0)
  message = str(raised.value)
  # Either check may see the poison first. With batch norm as TensorFlow's fused op
  # and oneDNN on, that step's logged loss stayed finite (oneDNN off: NaN) and the
  # weights check named the poisoned kernel; either diagnosis is right.
  assert "epoch 2, step 2 of 2" in message
  assert "loss is nan" in message or "weights are not finite (conv1/kernel)" in message
  assert f"the last good checkpoint, {backup_dir} (1 epoch done)" in message
  # The checkpoint of epoch 1 is untouched, loads, and matches its metadata.
  assert poison.backup_before is not None and snapshot(backup_dir) == poison.backup_before
  metadata = strict_json_files(model_dir)["backup/training_metadata.json"]
  assert metadata["epoch"] == 1 and metadata["steps_into_epoch"] == 0
  assert metadata["weights_sha256"] == safety._sha256(
      os.path.join(backup_dir, "latest.weights.h5"))
  with h5py.File(os.path.join(backup_dir, "latest.weights.h5")) as weights:
    assert len(weights.keys()) > 0
  assert not os.path.exists(os.path.join(model_dir, "results.json"))

  # Resume with a lower rate: allowed after a divergence, from the epoch-1 checkpoint,
  # and the constant rate (a variable of the checkpoint) is the new one.
  monkeypatch.setattr(training, "training_callbacks", original_callbacks)
  applied = []
  original_apply = guard.apply_learning_rates

  def recording_apply(model, config):
    original_apply(model, config)
    applied.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))

  monkeypatch.setattr(guard, "apply_learning_rates", recording_apply)
  lower = command_line.resolve_config("digits", overrides=settings + ["learning_rate=0.01"])
  results = training.train(lower, model_dir, verbose=0)
  assert applied == [pytest.approx(0.01)]
  assert results["optimizer_iterations"] == {"classifiers": 3 * 2}
  assert results["divergences"][0]["resumed_with"] == [{"learning_rate": 0.01}]
  # Epoch 0 from the first run, then resumed at 1.
  assert history_epochs(os.path.join(model_dir, "history.csv")) == ["0", "1", "2"]
  assert strict_json.read(os.path.join(model_dir, "config.json"))["learning_rate"] == 0.01
  assert not os.path.exists(backup_dir)  # Removed once results.json is written.
  strict_json_files(model_dir)


# ---------------------------------------------------------------------------
# SIGTERM.


class _Stoppable:
  stop_requested = None


def test_first_signal_asks_to_stop_the_second_raises_and_the_old_handler_returns():
  """safety.two_stage_stop, which training and the tuner's search both use, with a
  signal pytest does not use, sent to this process (its handler runs before the next
  line)."""
  assert threading.current_thread() is threading.main_thread()
  target, before = _Stoppable(), signal.getsignal(signal.SIGUSR1)
  with safety.two_stage_stop(target, lambda signum: RuntimeError(f"again {signum}"),
                             signals=(signal.SIGUSR1,)):
    os.kill(os.getpid(), signal.SIGUSR1)
    assert target.stop_requested == signal.SIGUSR1
    with pytest.raises(RuntimeError, match=f"again {int(signal.SIGUSR1)}"):
      os.kill(os.getpid(), signal.SIGUSR1)
  assert signal.getsignal(signal.SIGUSR1) is before


def test_no_signal_handler_is_set_outside_the_main_thread():
  """Python sets handlers in the main thread only; a fit run from another thread
  (a notebook's worker, a test runner's) trains without them rather than failing."""
  before, seen = signal.getsignal(signal.SIGUSR1), []

  def in_a_thread():
    with safety.two_stage_stop(_Stoppable(), RuntimeError, signals=(signal.SIGUSR1,)):
      seen.append(signal.getsignal(signal.SIGUSR1))

  thread = threading.Thread(target=in_a_thread)
  thread.start()
  thread.join()
  assert seen == [before]


def _final_weights(model_dir):
  """Every array of MODEL_DIR/final.weights.h5, by its path in the file."""
  arrays = {}
  with h5py.File(os.path.join(model_dir, "final.weights.h5"), "r") as handle:
    handle.visititems(lambda name, item: arrays.setdefault(name, item[()])
                      if isinstance(item, h5py.Dataset) else None)
  return arrays


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [[], ["--strategy=mirrored", "--cpu_devices=2"]],
                         ids=["default", "mirrored"])
def test_sigterm_stops_and_the_resumed_run_repeats_an_uninterrupted_one(tmp_path, strategy):
  """A real process takes the signal somewhere after its first checkpoint, and the
  same command runs again. The resumed run and one never interrupted end with the
  same history and weights to the last bit: the signal kept the last epoch's
  checkpoint, and the data stream resumed where that epoch ended (DML and crop
  augmentation: no random numbers but the data's), also on two replicas, where
  Keras reads a batch of its own before training. Every run has a process of its
  own: this one splits the CPU into two logical devices, and its losses differ
  from a process's own in the last bits. 10 epochs of 8 steps: the signal comes
  0.1 s after the first checkpoint, about one epoch (measured: 0.1 s an epoch on 2
  busy cores) of the nine still to run."""
  epochs, steps = 10, 512 // 64
  settings = ["--experiment=digits", "--method=dml", "--verbose=0", "--noexport",
              f"--override=epochs={epochs}", "--override=train_examples=512", *strategy]
  straight_dir, model_dir = str(tmp_path / "straight"), str(tmp_path / "run")
  straight = run_py(*settings, f"--model_dir={straight_dir}")
  assert straight.returncode == 0, straight.stderr[-3000:]
  command = [*settings, f"--model_dir={model_dir}"]
  process = start_run_py(*command)
  metadata_path = os.path.join(model_dir, "backup", "training_metadata.json")
  deadline = time.time() + 240
  while (not os.path.exists(metadata_path) and process.poll() is None
         and time.time() < deadline):
    time.sleep(0.02)
  time.sleep(0.1)  # Somewhere in the next epoch.
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Traceback" not in stderr
  lines = error_lines(stderr)
  assert len(lines) == 1 and lines[0].startswith("interrupted: Interrupted by SIGTERM at ")
  assert "Run the same command again to resume" in lines[0]
  assert not os.path.exists(os.path.join(model_dir, "results.json"))
  saved = strict_json_files(model_dir)["backup/training_metadata.json"]
  assert 1 <= saved["epoch"] < epochs and saved["steps_into_epoch"] == 0
  assert saved["weights_sha256"] == safety._sha256(
      os.path.join(model_dir, "backup", "latest.weights.h5"))
  if "step" in lines[0].split(":")[1]:  # Stopped within an epoch: its steps are redone.
    assert "a rerun redoes the " in lines[0] and f"of epoch {saved['epoch'] + 1}" in lines[0]

  completed = run_py(*command)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert (f"Resuming {model_dir} after epoch {saved['epoch']} of {epochs}" in completed.stderr
          and f"after the {saved['epoch'] * steps} batches read before it" in completed.stderr)
  results = strict_json_files(model_dir)["results.json"]
  assert results["optimizer_iterations"] == {"classifiers": epochs * steps}
  assert results["train_steps"] == (epochs - saved["epoch"]) * steps
  expected = strict_json_files(straight_dir)["results.json"]
  for key in ("classifiers", "ensemble_top1", "mean_divergence", "test_loss"):
    assert results[key] == expected[key], key
  with open(os.path.join(model_dir, "history.csv")) as resumed_history, \
       open(os.path.join(straight_dir, "history.csv")) as straight_history:
    assert resumed_history.read() == straight_history.read()
  resumed_weights, straight_weights = _final_weights(model_dir), _final_weights(straight_dir)
  assert resumed_weights.keys() == straight_weights.keys()
  for name, array in straight_weights.items():
    np.testing.assert_array_equal(resumed_weights[name], array, err_msg=name)


# ---------------------------------------------------------------------------
# Checkpoints cut short.


def _tiny_model():
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
  return model


class _StopAt(keras.callbacks.Callback):
  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch
    self.weights = {}

  def on_epoch_end(self, epoch, logs=None):
    self.weights[epoch + 1] = [w.copy() for w in self.model.get_weights()]
    if epoch + 1 == self.epoch:
      raise KeyboardInterrupt


def _train_tiny(backup_dir, stop_at=None, epochs=4):
  model = _tiny_model()
  backup = safety.SafeBackupAndRestore(backup_dir)
  recorder = _StopAt(stop_at)
  data_x = np.arange(24, dtype=np.float32).reshape(8, 3) / 24
  data_y = np.ones((8, 2), np.float32)
  try:
    model.fit(data_x, data_y, epochs=epochs, batch_size=4, verbose=0, shuffle=False,
              callbacks=[backup, recorder])
  except KeyboardInterrupt:
    pass
  return model, backup, recorder


def _weights_equal(first, second):
  return all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("damage", ["truncated_weights", "truncated_weights_of_keras",
                                    "garbled_metadata", "torn_pair", "missing_metadata"])
def test_a_checkpoint_cut_short_resumes_from_the_previous_one(tmp_path, damage, capsys):
  backup_dir = str(tmp_path / "backup")
  _, _, first = _train_tiny(backup_dir, stop_at=3)
  latest = os.path.join(backup_dir, "latest.weights.h5")
  metadata = os.path.join(backup_dir, "training_metadata.json")
  assert strict_json.read(metadata)["epoch"] == 3
  assert strict_json.read(metadata + ".bkp")["epoch"] == 2
  if damage == "truncated_weights_of_keras":  # Keras' own metadata has no checksum.
    values = strict_json.read(metadata)
    del values["weights_sha256"]
    strict_json.write(metadata, values)
  if damage.startswith("truncated_weights"):
    with open(latest, "rb") as handle:
      content = handle.read()
    with open(latest, "wb") as handle:
      handle.write(content[:len(content) // 2])
  elif damage == "garbled_metadata":
    with open(metadata, "w") as handle:
      handle.write('{"epoch": 3, "ste')
  elif damage == "torn_pair":  # New weights renamed in, the crash came before the metadata.
    values = strict_json.read(metadata)
    values["weights_sha256"] = "0" * 64
    strict_json.write(metadata, values)
  else:
    os.remove(metadata)
  model, backup, second = _train_tiny(backup_dir, epochs=2)
  # Restored the epoch-2 checkpoint: epoch 2 is done, so a 2-epoch fit trains no more.
  assert backup.restored["epoch"] == 2 and second.weights == {}
  assert _weights_equal(model.get_weights(), first.weights[2])
  assert "resumed from the previous checkpoint (epoch 2)" in capsys.readouterr().err


def test_no_loadable_checkpoint_is_an_error_naming_the_backup(tmp_path):
  backup_dir = str(tmp_path / "backup")
  _train_tiny(backup_dir, stop_at=3)
  for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
    with open(os.path.join(backup_dir, name), "r+b") as handle:
      handle.truncate(100)
  with pytest.raises(errors.ModelDirError, match="no checkpoint there loads") as raised:
    _train_tiny(backup_dir, epochs=4)
  assert backup_dir in str(raised.value) and "Delete that folder" in str(raised.value)


def test_the_backup_never_saves_non_finite_weights(tmp_path):
  backup_dir = str(tmp_path / "backup")
  model, backup, _ = _train_tiny(backup_dir, stop_at=2)
  before = snapshot(backup_dir)
  config = command_line.resolve_config("digits")
  training_guard = guard.TrainingGuard(config, backup, steps=2)
  training_guard.set_model(model)
  model.layers[0].kernel.assign(np.full((3, 2), np.inf, np.float32))
  with pytest.raises(errors.TrainingDivergedError, match="weights are not finite"):
    backup._save_model()
  assert snapshot(backup_dir) == before


def test_every_json_the_project_writes_goes_through_strict_json():
  """json.dump writes NaN and Infinity tokens; the project's writers use strict_json.
  Every module of the package (its sub-folders included) and run.py."""
  paths = [os.path.join(ROOT, "run.py")] + [
      os.path.join(root, name) for root, _, names in os.walk(os.path.join(ROOT, "acn_tf"))
      for name in names if name.endswith(".py") and name != "strict_json.py"]
  assert len(paths) > 20  # The package's sub-folders were walked.
  offenders = []
  for path in sorted(paths):
    with open(path) as handle:
      for number, line in enumerate(handle, start=1):
        plain = line.replace("strict_json.dumps(", "")  # The strict writer itself.
        if "json.dump(" in plain or ("json.dumps(" in plain and "allow_nan" not in plain
                                     and "json.loads(json.dumps(" not in plain):
          offenders.append(f"{os.path.relpath(path, ROOT)}:{number}")
  assert offenders == []


def test_search_json_is_strict(tmp_path):
  from acn_tf.run import tuning
  config = command_line.resolve_config("digits")
  tuning.check_same_search(str(tmp_path), "random", config)
  saved = strict_json_files(str(tmp_path))["search.json"]
  assert saved["tuner"] == "random" and saved["config"]["learning_rate"] == 0.05
  tuning.check_same_search(str(tmp_path), "random", config)  # Reads it back: the same search.


def test_a_backup_written_by_keras_itself_resumes(tmp_path):
  """Runs started before SafeBackupAndRestore left Keras' own files (no checksum)."""
  backup_dir = str(tmp_path / "backup")
  model = _tiny_model()
  recorder = _StopAt(2)
  data_x, data_y = np.ones((8, 3), np.float32), np.zeros((8, 2), np.float32)
  try:
    model.fit(data_x, data_y, epochs=4, batch_size=4, verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(backup_dir,
                                                          double_checkpoint=True),
                         recorder])
  except KeyboardInterrupt:
    pass
  assert "weights_sha256" not in strict_json.read(
      os.path.join(backup_dir, "training_metadata.json"))
  resumed, backup, _ = _train_tiny(backup_dir, epochs=2)
  assert backup.restored["epoch"] == 2
  assert _weights_equal(resumed.get_weights(), recorder.weights[2])


@pytest.mark.parametrize("has_discriminator", [True, False])
def test_guard_watches_d_loss_only_when_there_is_a_discriminator(tmp_path, has_discriminator):
  """gan_weight = 0 (the no-GAN ablation) leaves d_loss NaN by design: not a divergence."""
  config = command_line.resolve_config("digits", method="acn")
  model = keras.Model()
  model.adversarial_phase_active = True
  model.generator = keras.layers.Dense(1)
  model.discriminator = keras.layers.Dense(1) if has_discriminator else None
  training_guard = guard.TrainingGuard(config, safety.SafeBackupAndRestore(str(tmp_path)), steps=2)
  training_guard.set_model(model)
  logs = {"loss": 1.0, "c0_loss": 0.5, "g_loss": 0.3, "d_loss": float("nan")}
  if has_discriminator:
    with pytest.raises(errors.TrainingDivergedError, match="d_loss is nan"):
      training_guard.check_logs(logs)
  else:
    training_guard.check_logs(logs)
    with pytest.raises(errors.TrainingDivergedError, match="g_loss is nan"):
      training_guard.check_logs({**logs, "g_loss": float("nan")})


def test_guard_leaves_g_loss_alone_without_a_generator(tmp_path):
  """use_generator=false (the no-generator ablation) leaves g_loss NaN by design."""
  config = command_line.resolve_config("digits", method="acn")
  model = keras.Model()
  model.adversarial_phase_active = True
  model.generator = model.discriminator = None
  training_guard = guard.TrainingGuard(config, safety.SafeBackupAndRestore(str(tmp_path)), steps=2)
  training_guard.set_model(model)
  training_guard.check_logs({"loss": 1.0, "c0_loss": 0.5, "g_loss": float("nan"),
                             "d_loss": float("nan")})
  with pytest.raises(errors.TrainingDivergedError, match="c0_loss is nan"):
    training_guard.check_logs({"loss": 1.0, "c0_loss": float("nan")})


class _SignalAt(keras.callbacks.Callback):
  """Plays a signal arriving at `epoch`'s end, before the backup's own epoch end ran,
  or with `step`, during that step of `epoch` (both from 0)."""

  def __init__(self, backup, epoch, step=None):
    super().__init__()
    self.backup, self.epoch, self.step = backup, epoch, step
    self._current = None

  def on_epoch_begin(self, epoch, logs=None):
    self._current = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self.step is not None and self._current == self.epoch and batch == self.step:
      self.backup.stop_requested = signal.SIGTERM

  def on_epoch_end(self, epoch, logs=None):
    if self.step is None and epoch == self.epoch:
      self.backup.stop_requested = signal.SIGTERM


@pytest.mark.parametrize("step", [None, 1])  # At an epoch's end; on its last step.
def test_a_signal_at_an_epochs_end_keeps_that_epochs_history_row(tmp_path, step):
  backup_dir, history = str(tmp_path / "backup"), str(tmp_path / "history.csv")
  model = _tiny_model()
  backup = safety.SafeBackupAndRestore(backup_dir, steps=2)
  data_x = np.arange(24, dtype=np.float32).reshape(8, 3) / 24
  data_y = np.ones((8, 2), np.float32)
  signal_at = _SignalAt(backup, epoch=1, step=step)  # With a step: the epoch's last.
  with pytest.raises(errors.TrainingInterrupted, match="the end of epoch 2"):
    model.fit(data_x, data_y, epochs=4, batch_size=4, verbose=0, shuffle=False,
              callbacks=[signal_at, backup, keras.callbacks.CSVLogger(history)])
  assert history_epochs(history) == ["0", "1"]
  saved = strict_json.read(os.path.join(backup_dir, "training_metadata.json"))
  assert (saved["epoch"], saved["steps_into_epoch"]) == (2, 0)


@pytest.mark.parametrize("save_freq,signalled_here,stop_at", [
    ("epoch", True, "the end of epoch 2"), ("epoch", False, "the end of epoch 2"),
    (3, True, "epoch 2, step 1 of 2")])
def test_workers_stop_where_they_agree_to(tmp_path, save_freq, signalled_here, stop_at):
  """A multi-worker run's backup asks the cluster (`agree_on_stop`, played here by
  a function that says whether any worker was asked) at each epoch's end and at
  each checkpoint within one, and nowhere else. This worker's own signal in epoch
  2's first step, or another worker's (the function's answer alone), stops it
  at the next such point: epoch 2's end or, with a checkpoint every 3 steps, the
  checkpoint of the signal's own step (the run's 3rd); it reports SIGTERM."""
  model = _tiny_model()
  backup = safety.SafeBackupAndRestore(str(tmp_path / "backup"), save_freq=save_freq,
                                       steps=2)
  asked, positions = [], []

  def agree(this_worker_asked):
    asked.append(this_worker_asked)
    positions.append(backup.position())
    return this_worker_asked or (not signalled_here and len(positions) >= 2)

  backup.agree_on_stop = agree
  callbacks = [backup] if not signalled_here else [_SignalAt(backup, epoch=1, step=0), backup]
  data_x = np.arange(24, dtype=np.float32).reshape(8, 3) / 24
  with pytest.raises(errors.TrainingInterrupted) as raised:
    model.fit(data_x, np.ones((8, 2), np.float32), epochs=4, batch_size=4, verbose=0,
              shuffle=False, callbacks=callbacks)
  assert str(raised.value).startswith(f"Interrupted by SIGTERM at {stop_at}: ")
  if save_freq == "epoch":
    assert positions == [{"epoch": 1, "steps_into_epoch": 0},
                         {"epoch": 2, "steps_into_epoch": 0}]
    assert asked == [False, signalled_here]
  else:  # Checkpoints after steps 3 and 6; the epoch ends after steps 2, 4, 6.
    assert positions == [{"epoch": 1, "steps_into_epoch": 0},
                         {"epoch": 1, "steps_into_epoch": 1}]
    assert asked == [False, True]


@pytest.mark.parametrize("save_freq", ["epoch", 1])
def test_a_signal_within_an_epoch_keeps_the_epochs_checkpoint_unless_steps_are_saved(
    tmp_path, save_freq):
  """Checkpoints each epoch: the stop writes nothing, the checkpoint of epoch 1 is
  the one a rerun resumes from, and the message says the step it redoes.
  Checkpoints each step: the stop's step is saved, as before."""
  backup_dir = str(tmp_path / "backup")
  model = _tiny_model()
  backup = safety.SafeBackupAndRestore(backup_dir, save_freq=save_freq, steps=2)
  data_x = np.arange(24, dtype=np.float32).reshape(8, 3) / 24
  data_y = np.ones((8, 2), np.float32)
  kept = {}
  epoch_end = keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: kept.setdefault(epoch, snapshot(backup_dir)))
  with pytest.raises(errors.TrainingInterrupted) as raised:
    model.fit(data_x, data_y, epochs=4, batch_size=4, verbose=0, shuffle=False,
              callbacks=[_SignalAt(backup, epoch=1, step=0), backup, epoch_end])
  message = str(raised.value)
  assert message.startswith("Interrupted by SIGTERM at epoch 2, step 1 of 2: ")
  saved = strict_json.read(os.path.join(backup_dir, "training_metadata.json"))
  if save_freq == "epoch":
    assert (saved["epoch"], saved["steps_into_epoch"]) == (1, 0)
    assert snapshot(backup_dir) == kept[0]  # Nothing written since epoch 1 ended.
    assert "(1 epoch done), is kept; a rerun redoes the 1 step of epoch 2 taken since" \
        in message
  else:
    assert (saved["epoch"], saved["steps_into_epoch"]) == (1, 1)
    assert "1 step into epoch 2, which a rerun restarts from these weights" in message
    assert "redoes" not in message
