"""Where an ACN step's time goes: each part of the step timed on its own.

  python experiments/step_breakdown.py [--repeats=5] [--override=key=value ...]
      [--profile_dir=DIR]

The cifar100 experiment's ACN (ResNet-32 pair, batch 128, K = 1 unless overridden)
on random CIFAR-shaped tensors. Each part is its own tf.function, timed as the
median of `--repeats` calls after two warm-up calls; parts run in turn, not
interleaved, so compare them within one run. The whole step is usually a little
less than the sum of its parts: TensorFlow overlaps independent ops.

With --profile_dir, two whole steps are also traced with TensorFlow's profiler
(open the directory in TensorBoard's profile tab) and the total self-time per op
type is printed.
"""

import argparse
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

from acn_tf.method.codistillation import DivergentBatch  # noqa: E402
from acn_tf.method.search import divergence_gradient, group_divergence  # noqa: E402
# The same CIFAR-shaped set-up as the throughput benchmark (this script's folder
# is on the import path when it runs).
from benchmark import (IMAGE_SHAPE, NUM_CLASSES, cifar_shaped_config,  # noqa: E402
                       op_type_self_times, synthetic_model)


def parts(model, images, labels) -> dict:
  """name -> function of no arguments; each runs one part of an ACN step."""
  classifiers = model.classifiers
  phase_a_classifiers = model.phase_a_classifiers()  # Batch norm folded, by default.
  settings = model.adversarial

  def generator_alone():
    with tf.GradientTape() as tape:
      start = model.generate(images, training=True)
      objective = tf.reduce_sum(tf.square(start))
    return tape.gradient(objective, model.generator.trainable_variables)

  return {
      "classifiers forward, inference (Phase A)": lambda: group_divergence(
          phase_a_classifiers, images, settings)[0],
      "classifiers forward, training": lambda: [c(images, training=True)
                                                for c in classifiers],
      "classifiers forward + input gradient (Phase A)": lambda: divergence_gradient(
          phase_a_classifiers, images, settings),
      "generator forward + backward": generator_alone,
      # Every output, or tf.function would prune the search's start gradient.
      "generator update (Phase A 1)": lambda: tuple(model.generator_update(images, labels)),
      "discriminator update (Phase A 2)": lambda: model.discriminator_update(images, images),
      "classifier update, real batch only (= DML)": lambda: model.classifier_update(
          images, labels),
      "classifier update, real + divergent (Phase B)": lambda: model.classifier_update(
          images, labels, DivergentBatch(images)),
      "whole ACN step": lambda: model.train_step((images, labels)),
  }


def median_milliseconds(function, repeats: int) -> float:
  compiled = tf.function(function)

  def call():
    start = time.perf_counter()
    outputs = compiled()
    for value in tf.nest.flatten(outputs):  # Waits for the outputs.
      if value is not None:
        value.numpy()
    return 1000 * (time.perf_counter() - start)

  call(), call()
  return statistics.median(call() for _ in range(repeats))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--override", action="append", default=[])
  parser.add_argument("--profile_dir", default=None)
  arguments = parser.parse_args()

  config = cifar_shaped_config(arguments.batch_size, arguments.override,
                               method="acn").validate()
  model = synthetic_model(config)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.random((config.data.batch_size, *IMAGE_SHAPE), dtype=np.float32))
  labels = tf.constant(rng.integers(0, NUM_CLASSES, config.data.batch_size))
  print(f"ACN step parts, batch {config.data.batch_size}, overrides {arguments.override}, "
        f"median of {arguments.repeats} (ms):")
  for name, function in parts(model, images, labels).items():
    print(f"  {median_milliseconds(function, arguments.repeats):8.1f}  {name}", flush=True)
  if arguments.profile_dir:
    step = tf.function(lambda: model.train_step((images, labels)))
    step()
    tf.profiler.experimental.start(arguments.profile_dir)
    for _ in range(2):
      tf.nest.map_structure(lambda value: value.numpy(), step())
    tf.profiler.experimental.stop()
    print("Self-time per op type over 2 profiled steps (ms):")
    for op_type, milliseconds in list(op_type_self_times(arguments.profile_dir).items())[:8]:
      print(f"  {milliseconds:8.1f}  {op_type}")


if __name__ == "__main__":
  main()
