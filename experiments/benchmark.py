"""Training-step throughput of one classifier, DML and ACN, and of the input pipeline.

  python experiments/benchmark.py [--steps=4] [--repeats=8] [--batch_size=128] [--json]
      [--configurations=single,dml,...] [--profile_dir=DIR]
  python experiments/benchmark.py --experiment=fashion_mnist_small [--json]
      [--configurations=dml,acn,...]

CIFAR-shaped synthetic data (32x32x3, 100 classes), ResNet-32 classifiers, the
cifar100 experiment's optimizers; one process. With --experiment, the registered
experiment's own shapes, networks, batch and optimizers instead, one configuration
per method as that experiment registers it (`experiment_configurations`): the step
costs that turn a run's training steps into its compute. Every configuration is built and
warmed up first; then `--repeats` rounds each time `--steps` steps of every
configuration in turn, so that a slow spell of the machine hits them alike.
Reported: the median (and min, max) over rounds. Images per second count real
training images (the global batch) per step.

With --profile_dir, two steps of each configuration are then traced with
TensorFlow's profiler (DIR/NAME; TensorBoard's profile tab) and the self-time per
op type is printed, the largest first.
"""

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's acn_tf rather than an installed one: a git worktree runs its own code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from acn_tf import platform  # noqa: E402

platform.prefer_onednn()  # Before TensorFlow loads, as run.py does.

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from acn_tf.config import command_line, presets, schema as config_lib, registry
from acn_tf.data import pipeline
from acn_tf.run import builders
from acn_tf.data.pipeline import DatasetInfo  # noqa: E402

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 100


def _synthetic(count: int, seed: int = 0, shape=IMAGE_SHAPE, classes=NUM_CLASSES):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
  labels = rng.integers(0, classes, count).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices((images, labels))


def cifar_shaped_config(batch_size: int, overrides=(), **changes):
  """The cifar100 experiment at `batch_size`, Phase A from the first step, no
  augmentation; then `changes`, then "key=value" `overrides` (they win)."""
  config = registry.get_experiment("cifar100").replace(
      batch_size=batch_size, adv_warmup_epochs=0, augmentation="none", **changes)
  return config_lib.apply_overrides(config, command_line.parse_override_strings(overrides))


# Image shape and number of classes of each named dataset, for synthetic batches.
DATASET_SHAPES = {"cifar100": (IMAGE_SHAPE, NUM_CLASSES), "cifar10": (IMAGE_SHAPE, 10),
                  "fashion_mnist": ((28, 28, 1), 10), "digits": ((8, 8, 1), 10)}


def experiment_configurations(experiment: str) -> dict:
  """The registered `experiment`'s config for each method as it registers it (its
  method settings included), ACN without a generator and ACN with the
  `live_generator` preset; Phase A from the first step, no augmentation (synthetic
  batches)."""
  def config(method, **changes):
    return registry.get_experiment(experiment, method).replace(
        **{**changes, "adv_warmup_epochs": 0, "augmentation": "none"})

  return {"independent": config("independent"), "dml": config("dml"),
          "dml_noise": config("dml_noise"), "kdcl": config("kdcl"), "one": config("one"),
          "cl_ilr": config("cl_ilr"), "acn": config("acn"),
          "acn_no_generator": config("acn", use_generator=False),
          "acn_live_generator": config("acn", **presets.get_preset("live_generator"))}


def synthetic_model(config):
  """`config`'s compiled training model for synthetic inputs of its dataset's
  shape (CIFAR's for a dataset without a known shape), without data."""
  shape, classes = DATASET_SHAPES.get(config.data.dataset, (IMAGE_SHAPE, NUM_CLASSES))
  info = DatasetInfo("synthetic", classes, shape, 4096, 0, 0, "synthetic")
  channels = shape[-1]
  return builders.build_model(config, info, [0.5] * channels, [0.06] * channels, steps=10)


class StepTimer:
  """One configuration's model and cached synthetic batches, traced and warmed up.

  Steps are timed by calling Keras' compiled train function directly, as `fit`
  does for each step, without `fit`'s per-call set-up (callbacks, iterator).
  """

  def __init__(self, config, warmup: int):
    self.batch_size = config.data.batch_size
    self.model = synthetic_model(config)
    shape, classes = DATASET_SHAPES.get(config.data.dataset, (IMAGE_SHAPE, NUM_CLASSES))
    batches = pipeline.make_pipeline(_synthetic(config.data.batch_size * 4, shape=shape,
                                                classes=classes),
                                     batch_size=config.data.batch_size,
                                     training=False).cache().repeat()
    self.model.fit(batches, epochs=1, steps_per_epoch=warmup, verbose=0, shuffle=False)
    self.iterator = iter(batches)
    self.images_per_second(2)  # May trace again (another iterator type than fit's).

  def _warm_train_function(self):
    """Keras' train function, after one untimed step: switching between models
    costs a first step more (oneDNN rebuilds primitives its cache dropped), which
    a training run pays once."""
    train_function = self.model.make_train_function()
    float(train_function(self.iterator)["loss"])
    return train_function

  def images_per_second(self, steps: int) -> float:
    train_function = self._warm_train_function()
    start = time.perf_counter()
    for _ in range(steps):
      logs = train_function(self.iterator)
    float(logs["loss"])  # Waits for the last step to finish.
    return steps * self.batch_size / (time.perf_counter() - start)

  def profile(self, profile_dir: str, steps: int = 2) -> dict:
    """Traces `steps` steps into `profile_dir`; op type -> self-time in ms."""
    train_function = self._warm_train_function()
    tf.profiler.experimental.start(profile_dir)
    for _ in range(steps):
      logs = train_function(self.iterator)
    float(logs["loss"])
    tf.profiler.experimental.stop()
    return op_type_self_times(profile_dir)


def op_type_self_times(profile_dir: str) -> dict:
  """Self-time (ms) per op type, read from the trace with TensorFlow's converter."""
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # Internal.
  path = sorted(glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  stats, _ = _pywrap_profiler_plugin.xspace_to_tools_data([path], "framework_op_stats", {})
  table = json.loads(stats)[0]
  columns = [column["id"] for column in table["cols"]]
  totals = collections.Counter()
  for row in table["rows"]:
    values = dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]]))
    totals[values["type"]] += values["total_self_time"] / 1000
  return dict(totals.most_common())


def pipeline_throughput(batch_size: int, batches: int) -> float:
  """Images per second of the cifar100 training pipeline (shuffle, crop, flip)."""
  batched = pipeline.make_pipeline(_synthetic(10_000), batch_size=batch_size, training=True,
                                   augmentation="crop_flip", crop_padding=4, seed=0).repeat()
  iterator = iter(batched)
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def configurations(base) -> dict:
  """One classifier, DML, the field's rivals (KDCL; ONE and CL-ILR on a pair of
  branches) and ACN (K = 0, 1, 3) with the defaults; the variant
  that shows what a speed-related default gives (32-filter Phase A networks);
  L_g without its label term, where the search's start gradient costs no backward pass
  of its own (`keep_label_weight=0`); and Phase A's passes through Keras'
  batch-norm layers as built (`fold_batch_norm=False`)."""
  pair = base.architectures * 2
  acn = base.replace(method="acn", architectures=pair)
  return {
      "single": base.replace(method="independent"),
      "dml": base.replace(method="dml", architectures=pair),
      "kdcl": base.replace(method="kdcl", architectures=pair),
      "one": base.replace(method="one", architectures=pair),
      "cl_ilr": base.replace(method="cl_ilr", architectures=pair),
      "acn_k0": acn.replace(ras_steps=0),
      "acn_k1": acn.replace(ras_steps=1),
      "acn_k3": acn.replace(ras_steps=3),
      "acn_k1_keep_label_0": acn.replace(ras_steps=1, keep_label_weight=0.0),
      "acn_k1_unfolded": acn.replace(ras_steps=1, fold_batch_norm=False),
      "acn_k1_filters32": acn.replace(ras_steps=1, generator_filters=32,
                                      discriminator_filters=32),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=8)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--architecture", default="resnet32")
  parser.add_argument("--experiment", default=None,
                      help="Time the methods of this registered experiment at its own "
                      "shapes, networks and batch instead of the CIFAR-shaped cases.")
  parser.add_argument("--configurations", default=None,
                      help="Comma-separated subset of the configurations (default: all).")
  parser.add_argument("--override", action="append", default=[],
                      help="key=value config override applied to every configuration.")
  parser.add_argument("--json", action="store_true", help="Print one JSON object.")
  parser.add_argument("--profile_dir", default=None,
                      help="Also trace two steps of each configuration into DIR/NAME.")
  arguments = parser.parse_args()

  if arguments.experiment:
    cases = {name: config_lib.apply_overrides(
        config, command_line.parse_override_strings(arguments.override))
             for name, config in experiment_configurations(arguments.experiment).items()}
    base = cases["dml"]
  else:
    base = cifar_shaped_config(arguments.batch_size, arguments.override,
                               architectures=(arguments.architecture,))
    cases = configurations(base)
  names = arguments.configurations.split(",") if arguments.configurations else list(cases)
  timers = {name: StepTimer(cases[name].validate(), arguments.warmup) for name in names}
  rates = {name: [] for name in names}
  for _ in range(arguments.repeats):
    for name, timer in timers.items():
      rates[name].append(timer.images_per_second(arguments.steps))
  results = {name: statistics.median(values) for name, values in rates.items()}
  results["rounds"] = rates
  if not arguments.experiment:
    results["input_pipeline"] = pipeline_throughput(arguments.batch_size, 50)
  # Step-time ratios: how many times longer one step takes than the reference.
  ratios = {"step_time_dml_over_single": ("single", "dml"),
            "pipeline_over_dml_consumption": ("input_pipeline", "dml")}
  for name in names:
    if name not in ("dml", "single"):
      ratios[f"step_time_{name}_over_dml"] = ("dml", name)
  for key, (numerator, denominator) in ratios.items():
    if numerator in results and denominator in results:
      results[key] = results[numerator] / results[denominator]
  results["devices"] = [d.name for d in tf.config.list_logical_devices()]
  results["machine"] = platform.machine_info()
  results["xla"] = builders.use_xla(base)
  results["overrides"] = arguments.override
  results["experiment"] = arguments.experiment
  if arguments.profile_dir:
    results["op_self_time_ms"] = {
        name: timer.profile(os.path.join(arguments.profile_dir, name))
        for name, timer in timers.items()}
  if arguments.json:
    print(json.dumps(results, indent=2))
    return
  for name in names:
    print(f"{name:20s} {results[name]:8.1f} images/s  (min {min(rates[name]):.1f}, "
          f"max {max(rates[name]):.1f})")
  for key in ["input_pipeline", *ratios]:
    if key in results:
      print(f"{key:40s} {results[key]:8.2f}")
  for name, self_times in results.get("op_self_time_ms", {}).items():
    total = sum(self_times.values())
    print(f"{name}: self-time per op type over 2 profiled steps (ms, share)")
    for op_type, milliseconds in list(self_times.items())[:10]:
      print(f"  {milliseconds:8.1f}  {100 * milliseconds / total:5.1f}%  {op_type}")


if __name__ == "__main__":
  main()
