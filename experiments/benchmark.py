"""Training-step throughput of one classifier, DML and ACN, and of the input pipeline.

  python experiments/benchmark.py [--steps=10] [--warmup=3] [--batch_size=128] [--json]

CIFAR-shaped synthetic data (32x32x3, 100 classes), ResNet-32 classifiers, the
cifar100 experiment's optimizers; one process, one configuration at a time.
Images per second count real training images (the global batch) per step.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from acn_tf import config as config_lib, data, training  # noqa: E402
from acn_tf.data import DatasetInfo  # noqa: E402

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 100


def _synthetic(count: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, *IMAGE_SHAPE), dtype=np.uint8)
  labels = rng.integers(0, NUM_CLASSES, count).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices((images, labels))


def step_throughput(config, steps: int, warmup: int) -> float:
  """Images per second of `fit` steps on cached synthetic batches."""
  info = DatasetInfo("synthetic", NUM_CLASSES, IMAGE_SHAPE, 4096, 0, 0, "synthetic")
  model = training.build_model(config, info, [0.5] * 3, [0.06] * 3, steps=steps)
  batches = data.make_pipeline(_synthetic(config.batch_size * 4), batch_size=config.batch_size,
                               training=False).cache().repeat()
  model.fit(batches, epochs=1, steps_per_epoch=warmup, verbose=0,
            shuffle=False)  # Trace and warm up.
  start = time.perf_counter()
  model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
  return steps * config.batch_size / (time.perf_counter() - start)


def pipeline_throughput(batch_size: int, batches: int) -> float:
  """Images per second of the cifar100 training pipeline (shuffle, crop, flip)."""
  pipeline = data.make_pipeline(_synthetic(10_000), batch_size=batch_size, training=True,
                                augmentation="crop_flip", crop_padding=4, seed=0).repeat()
  iterator = iter(pipeline)
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--architecture", default="resnet32")
  parser.add_argument("--json", action="store_true", help="Print one JSON object.")
  arguments = parser.parse_args()

  base = config_lib.get_experiment("cifar100").replace(
      batch_size=arguments.batch_size, adv_warmup_epochs=0, augmentation="none")
  pair = (arguments.architecture,) * 2
  cases = {
      "single": base.replace(method="independent", architectures=pair[:1]),
      "dml": base.replace(method="dml", architectures=pair),
      "acn_k0": base.replace(method="acn", architectures=pair, ras_steps=0),
      "acn_k1": base.replace(method="acn", architectures=pair, ras_steps=1),
      "acn_k3": base.replace(method="acn", architectures=pair, ras_steps=3),
  }
  results = {}
  for name, config in cases.items():
    results[name] = step_throughput(config.validate(), arguments.steps, arguments.warmup)
    if not arguments.json:
      print(f"{name:8s} {results[name]:8.1f} images/s", flush=True)
  results["input_pipeline"] = pipeline_throughput(arguments.batch_size, 50)
  # A step-time ratio: how many times longer one step takes than the reference.
  results["step_time_dml_over_single"] = results["single"] / results["dml"]
  results["step_time_acn_k1_over_dml"] = results["dml"] / results["acn_k1"]
  results["pipeline_over_dml_consumption"] = results["input_pipeline"] / results["dml"]
  results["devices"] = [d.name for d in tf.config.list_logical_devices()]
  results["xla"] = training.use_xla(base)
  if arguments.json:
    print(json.dumps(results, indent=2))
  else:
    for key in ("input_pipeline", "step_time_dml_over_single", "step_time_acn_k1_over_dml",
                "pipeline_over_dml_consumption"):
      print(f"{key:32s} {results[key]:8.2f}")


if __name__ == "__main__":
  main()
