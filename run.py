"""Entry point: `python run.py --experiment=digits [--method=dml] [--mode=train]`.

Flags are defined here and only here; the library receives config objects.
"""

import os
import sys

# TensorFlow's C++ start-up chatter hides the lines a user needs; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from acn_tf import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Registered experiment name, e.g. digits, "
                    "fashion_mnist, cifar10, cifar100.")
flags.DEFINE_enum("method", None, list(config_lib.METHODS),
                  "Training method; default: the experiment's.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train: fit then evaluate on the test split; eval: evaluate the "
                  "trained run in --model_dir.")
flags.DEFINE_string("model_dir", None, "Directory for everything the run writes. "
                    "Default: runs/EXPERIMENT-METHOD-seedSEED.")
flags.DEFINE_string("data_dir", None, "Where datasets are looked for (tensorflow-datasets "
                    "data_dir, CIFAR python tarballs, Fashion-MNIST idx files).")
flags.DEFINE_multi_string("override", [], "KEY=VALUE setting any config field; "
                          "repeatable, e.g. --override=epochs=10 --override=seed=1.")
flags.DEFINE_string("config_file", None, "JSON object of config fields (e.g. a tuner's "
                    "best_config.json), applied before --method and --override.")
flags.DEFINE_integer("verbose", 2, "Keras verbosity: 0 silent, 1 progress bar, "
                     "2 one line per epoch.")


def _default_model_dir(config) -> str:
  return os.path.join("runs", f"{config.name}-{config.method}-seed{config.seed}")


def _print_summary(results) -> None:
  per_classifier = ", ".join(f"c{i} top1 {c['top1']:.4f}"
                             for i, c in enumerate(results["classifiers"]))
  print(f"{results['experiment']} {results['method']}: {per_classifier}, ensemble top1 "
        f"{results['ensemble_top1']:.4f}, divergence {results['mean_divergence']:.4f}, "
        f"{results['wall_seconds']:.1f} s")


def _run() -> None:
  from acn_tf import data, training  # Imports TensorFlow: after flags are valid.

  known_errors = (config_lib.ConfigError, data.DataNotFoundError, training.ModelDirError)
  try:
    if FLAGS.mode == "eval":
      if not FLAGS.model_dir:
        raise config_lib.ConfigError("--mode=eval needs --model_dir of a trained run.")
      results = training.evaluate(FLAGS.model_dir, FLAGS.data_dir, verbose=FLAGS.verbose)
    else:
      if not FLAGS.experiment:
        raise config_lib.ConfigError(
            "--experiment is required. Known experiments: "
            f"{', '.join(config_lib.experiment_names())}.")
      config = config_lib.resolve_config(FLAGS.experiment, FLAGS.method,
                                         FLAGS.config_file, FLAGS.override)
      model_dir = FLAGS.model_dir or _default_model_dir(config)
      results = training.train(config, model_dir, FLAGS.data_dir, verbose=FLAGS.verbose)
      print(f"Wrote {os.path.join(model_dir, training.RESULTS_FILE)}")
  except known_errors as error:
    sys.stderr.write(f"error: {error}\n")
    sys.exit(2)
  _print_summary(results)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  _run()


if __name__ == "__main__":
  app.run(main)
