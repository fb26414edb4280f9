"""Distribution strategies, created once by the entry point, and what several
replicas need of the model (synchronised batch norm) and of the batch (an even split).

Everything that owns variables (models, optimizers, metrics) is then built
inside `strategy.scope()` by acn_tf/run/training.py, and Keras distributes the data.
"""

import json
import os
from typing import Sequence

import keras
import tensorflow as tf

from acn_tf.config.schema import STRATEGIES
from acn_tf.errors import ConfigError
from acn_tf.networks import batch_norm


def split_cpu(count: int) -> None:
  """Splits the CPU into `count` logical devices, so that MirroredStrategy can be
  run and tested without GPUs. Must run before TensorFlow initialises devices."""
  if count <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)


def _mirrored_devices() -> Sequence[str]:
  """All GPUs; without GPUs, all logical CPUs (see split_cpu)."""
  gpus = tf.config.list_logical_devices("GPU")
  devices = gpus or tf.config.list_logical_devices("CPU")
  return [device.name for device in devices]


def synchronize_batch_norm(model: keras.Model) -> int:
  """Under a strategy of several replicas, makes every batch norm of `model` (its
  classifiers', generator's and discriminator's, the caller's own networks' too)
  normalise by the moments of the global batch (Keras' `synchronized`), and returns
  how many it set. Then R replicas train as one device does with the same global
  batch, which is the batch the published recipes (one GPU) normalise over. Without
  it each replica normalises by its own batch_size / R images and keeps moving
  statistics of its own (Keras creates them unaggregated), of which checkpoints and
  exports read the first replica's. The price is three small all-reduces per batch
  norm in the forward pass. Call before the first step is traced; on one device it
  does nothing."""
  if tf.distribute.get_strategy().num_replicas_in_sync == 1:
    return 0
  layers = batch_norm.batch_norms(model)
  for layer in layers:
    layer.synchronized = True
  return len(layers)


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> None:
  """ConfigError unless `batch_size` splits evenly over the strategy's replicas. The
  losses divide each replica's sum by its share times the replicas, which weighs
  every example alike only when the shares are equal."""
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    lower = batch_size - batch_size % replicas
    raise ConfigError(
        f"batch_size={batch_size} does not split evenly over {replicas} replicas, so "
        "their examples would not weigh alike in the loss. Use a multiple of "
        f"{replicas} (e.g. --override=batch_size={lower or replicas} or "
        f"{lower + replicas}), or as many devices as divide it.")


def create_strategy(name: str) -> tf.distribute.Strategy:
  """auto: MirroredStrategy over several GPUs, else the default (one device).
  multi_worker: MultiWorkerMirroredStrategy configured by the TF_CONFIG variable."""
  if name not in STRATEGIES:
    raise ConfigError(f"Unknown strategy {name!r} (--strategy): use one of "
                      f"{', '.join(STRATEGIES)}.")
  if name == "auto":
    if len(tf.config.list_logical_devices("GPU")) > 1:
      return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    if tf.config.list_logical_devices("GPU"):
      return tf.distribute.MirroredStrategy(_mirrored_devices())
    # On logical CPUs the default collective all-reduce mismatched the gradient
    # reductions of ACN's three optimizers across replicas (measured: "Shape
    # mismatch in the collective instance"); reducing on one device is exact.
    return tf.distribute.MirroredStrategy(
        _mirrored_devices(), cross_device_ops=tf.distribute.ReductionToOneDevice())
  if "TF_CONFIG" not in os.environ:
    raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                      "(cluster and task of this worker); see docs/DISTRIBUTION.md, "
                      "'Several devices and machines'.")
  _tf_config()  # Fails with a clear message on a malformed TF_CONFIG.
  return tf.distribute.MultiWorkerMirroredStrategy()


def _tf_config() -> dict:
  """The TF_CONFIG environment variable, parsed; ConfigError if it is not a JSON object."""
  text = os.environ.get("TF_CONFIG", "{}")
  try:
    config = json.loads(text)
  except json.JSONDecodeError as error:
    raise ConfigError(f"The TF_CONFIG environment variable is not valid JSON ({error.msg}); "
                      'expected e.g. {"cluster": {"worker": ["host1:12345", '
                      '"host2:12345"]}, "task": {"type": "worker", "index": 0}}.') from None
  if not isinstance(config, dict) or not isinstance(config.get("task", {}), dict):
    raise ConfigError("The TF_CONFIG environment variable must be a JSON object with "
                      '"cluster" and "task" objects.')
  return config


def stop_agreement(strategy: tf.distribute.Strategy):
  """Under MultiWorkerMirroredStrategy, a function that every worker calls at the
  same points of training with whether it was asked to stop (a signal), and that
  returns whether any worker was: one all-reduce of a scalar. Each worker holds
  its own signal handlers, so without it a signalled worker stops alone and the
  others' next collective fails (seen: UnavailableError, the stopped worker's
  heartbeats missing). None for other strategies, whose one process sees every
  signal."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return None

  def any_worker(asked: bool) -> bool:
    flag = tf.constant(1 if asked else 0, tf.int32)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: flag),
                            axis=None)
    return int(total) > 0

  return any_worker


def is_chief() -> bool:
  """True unless TF_CONFIG names this process a non-chief worker.

  Only the chief writes checkpoints, logs, results and exports; run.py gives
  the other workers a scratch directory, removed when they exit.
  """
  config = _tf_config()
  task = config.get("task", {})
  task_type, task_index = task.get("type"), task.get("index", 0)
  if task_type in (None, "chief"):
    return True
  has_chief = "chief" in config.get("cluster", {})
  return task_type == "worker" and task_index == 0 and not has_chief
