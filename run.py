"""Entry point: `python run.py --experiment=digits [--method=dml] [--mode=train]`,
or `python run.py --config_file=my_experiment.json` for an experiment a JSON file defines.

Flags are defined here and only here; the library receives config objects.

Errors: every error of the user's making (acn_tf.errors.UserError: a bad flag,
config field, config file, data_dir or model_dir, a diverged or interrupted run)
is printed by `main` as one message without a traceback, and the process exits
with the error's status (2; 3 for a diverged run; 128 + the signal's number for
an interrupted one). Anything else is a bug and keeps its traceback.
"""

import atexit
import os
import shutil
import sys
import tempfile

# TensorFlow's C++ start-up chatter hides the lines a user needs; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from acn_tf import platform  # noqa: E402

platform.prefer_onednn()  # Before anything imports TensorFlow, which reads it once.

from acn_tf import errors, strict_json  # noqa: E402
from acn_tf.config import command_line, presets, schema as config_lib  # noqa: E402
from acn_tf.run import run_dir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Registered experiment name, e.g. digits, "
                    "fashion_mnist, cifar10, cifar100; with --config_file, the base the "
                    "file's fields change. Optional when --config_file defines a dataset.")
flags.DEFINE_enum("method", None, list(config_lib.METHODS),
                  "Training method; default: the experiment's.")
flags.DEFINE_enum("preset", None, list(presets.preset_names()),
                  "Named settings applied after the experiment and --config_file, before "
                  "--method and --override (acn_tf/config/presets.py), e.g. "
                  "divergence_seeking: ACN's Phase A tuned for divergence, which lost to DML.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "export", "tune", "config"],
                  "train: fit, test, export; eval/export: test/export the run in "
                  "--model_dir; tune: keras-tuner search over search_space; config: "
                  "print the resolved config (JSON) and exit.")
flags.DEFINE_string("model_dir", None, "Directory for everything the run writes. "
                    "Default: runs/EXPERIMENT-METHOD-seedSEED.")
flags.DEFINE_string("data_dir", None, "Where datasets are looked for (tensorflow-datasets "
                    "data_dir, CIFAR python tarballs, Fashion-MNIST idx files).")
flags.DEFINE_multi_string("override", [], "KEY=VALUE setting any config field; "
                          "repeatable, e.g. --override=epochs=10 --override=seed=1.")
flags.DEFINE_string("config_file", None, "JSON object of config fields (e.g. a tuner's "
                    "best_config.json, or a whole experiment: name, dataset, ...), "
                    "applied over --experiment (else the defaults) and before --method "
                    "and --override.")
flags.DEFINE_enum("checkpoint", "final", ["final", "best"],
                  "--mode=eval: the final weights, or the best by validation ensemble "
                  "top-1 (needs validation_fraction > 0 when training).")
flags.DEFINE_enum("tuner", "random", list(config_lib.TUNERS),
                  "--mode=tune: the keras-tuner algorithm.")
flags.DEFINE_integer("max_trials", 10, "--mode=tune: trials in all (a re-run continues).")
flags.DEFINE_enum("strategy", "auto", list(config_lib.STRATEGIES),
                  "auto: MirroredStrategy over several GPUs, else one device; "
                  "multi_worker reads TF_CONFIG.")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices "
                     "(to run --strategy=mirrored without GPUs).")
flags.DEFINE_bool("export", True, "--mode=train: write SavedModels to MODEL_DIR/export "
                  "after training.")
flags.DEFINE_enum("mixed_precision", None, list(config_lib.MIXED_PRECISION),
                  "Shorthand for --override=mixed_precision=...: float16 on GPU, "
                  "bfloat16 on TPU/recent CPUs; losses stay float32.")
flags.DEFINE_bool("deterministic", None, "Shorthand for --override=deterministic=true: "
                  "op determinism, identical results for a fixed seed.")
flags.DEFINE_integer("verbose", None, "Keras verbosity: 0 silent, 1 progress bar, "
                     "2 one line per epoch. Default: a progress bar on a terminal, one "
                     "line per epoch when the output goes to a file.")


def _default_model_dir(config) -> str:
  return os.path.join("runs", f"{config.name}-{config.method}-seed{config.seed}")


def _print_summary(results) -> None:
  per_classifier = ", ".join(f"c{i} top1 {c['top1']:.4f}"
                             for i, c in enumerate(results["classifiers"]))
  print(f"{results['experiment']} {results['method']}: {per_classifier}, ensemble top1 "
        f"{results['ensemble_top1']:.4f}, divergence {results['mean_divergence']:.4f}, "
        f"{results['wall_seconds']:.1f} s")


def _overrides():
  """--override's items, then the shorthand flags' (which win)."""
  overrides = list(FLAGS.override)
  if FLAGS.mixed_precision is not None:
    overrides.append(f"mixed_precision={FLAGS.mixed_precision}")
  if FLAGS.deterministic is not None:
    overrides.append(f"deterministic={FLAGS.deterministic}")
  return overrides


def _override_flags():
  """{field: the flag that set it}, in _overrides' order (the last one wins)."""
  set_by = {}
  for item in FLAGS.override:
    set_by[item.partition("=")[0].strip()] = f"--override={item}"
  if FLAGS.mixed_precision is not None:
    set_by["mixed_precision"] = f"--mixed_precision={FLAGS.mixed_precision}"
  if FLAGS.deterministic is not None:
    set_by["deterministic"] = "--deterministic" if FLAGS.deterministic else "--nodeterministic"
  return set_by


def _resolved_config():
  return command_line.resolve_config(FLAGS.experiment, FLAGS.method, FLAGS.config_file,
                                     _overrides(), FLAGS.preset)


# Flags that describe a config; with --mode=eval or export they must agree with
# the config the run in --model_dir was trained with.
_CONFIG_FLAGS = ("experiment", "method", "preset", "override", "config_file",
                 "mixed_precision", "deterministic")
# Fields shown per flag in a conflict: the message stays one screen.
_MAX_SHOWN = 6


def _conflict_message(model_dir, run, config, fields) -> str:
  """One clause per flag at fault: the values it gives, and the run's."""
  stored = strict_json.to_strict(run.to_dict())
  given = strict_json.to_strict(config.to_dict())
  set_by = _override_flags()
  fields_of = {}
  for field in fields:
    origin = command_line.field_origin(field, experiment=FLAGS.experiment,
                                       method=FLAGS.method, config_file=FLAGS.config_file,
                                       set_by=set_by, preset=FLAGS.preset)
    fields_of.setdefault(origin, []).append(field)
  clauses = []
  for origin, names in fields_of.items():
    more = f" and {len(names) - _MAX_SHOWN} more" if len(names) > _MAX_SHOWN else ""

    def shown(values):
      return ", ".join(f"{name}={values[name]!r}" for name in names[:_MAX_SHOWN]) + more

    # A flag that is one field's value (--method=dml) is not repeated; a base
    # (--experiment, --config_file) says which of its values conflict.
    direct = origin == f"--method={FLAGS.method}" or origin in set_by.values()
    clauses.append(f"{origin}{'' if direct else f' (its {shown(given)})'} conflicts with "
                   f"the run's stored {shown(stored)}")
  path = os.path.join(model_dir, run_dir.CONFIG_FILE)
  return (f"{'; '.join(clauses)} in {path}; drop the flag{'s' if len(clauses) > 1 else ''} "
          f"or use another --model_dir (--mode={FLAGS.mode} restores the run with the config "
          "it was trained with).")


def _existing_model_dir() -> str:
  """--model_dir of a trained run, once the config flags given agree with its config.

  Retyping the training command with another --mode is the habit, so the flags
  may be given; each field they describe is compared with the run's config.json
  (run_dir.conflicting_fields, which lets pass the fields eval and export never
  read), and a conflict is refused rather than silently not applied.
  """
  if not FLAGS.model_dir:
    raise config_lib.ConfigError(f"--mode={FLAGS.mode} needs --model_dir of a trained run.")
  if any(FLAGS[name].present for name in _CONFIG_FLAGS):
    run = run_dir.run_config(FLAGS.model_dir)
    config = command_line.resolve_for_run(run, FLAGS.experiment, FLAGS.method,
                                          FLAGS.config_file, _overrides(), FLAGS.preset)
    fields = run_dir.conflicting_fields(run, config)
    if fields:
      raise config_lib.ConfigError(_conflict_message(FLAGS.model_dir, run, config, fields))
  return FLAGS.model_dir


def _check_flags() -> None:
  """Flags checked before TensorFlow loads."""
  if FLAGS.max_trials < 1:
    raise config_lib.ConfigError(f"--max_trials must be >= 1, got {FLAGS.max_trials}.")
  if FLAGS.cpu_devices < 1:
    raise config_lib.ConfigError(f"--cpu_devices must be >= 1, got {FLAGS.cpu_devices}.")
  if FLAGS.mode == "tune" and FLAGS.strategy == "multi_worker":
    raise config_lib.ConfigError(
        "--mode=tune does not run under --strategy=multi_worker: each worker would keep "
        "a search of its own. To search on several machines, run this command on each "
        "with keras-tuner's KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT and "
        "KERASTUNER_TUNER_ID (\"chief\" on one, a name of its own on every other) and "
        "--strategy=mirrored or default (docs/DISTRIBUTION.md).")


def _writable_model_dir(model_dir: str, training_run: bool = True) -> str:
  """Under multi-worker training only the chief writes into model_dir; the other
  workers write into a scratch directory of their own, removed at exit, which a
  training run starts with a copy of the chief's state (run_dir.copy_run_state)."""
  from acn_tf.run import distribute
  if distribute.is_chief():
    return model_dir
  scratch = tempfile.mkdtemp(prefix="acn_tf_worker_")
  atexit.register(shutil.rmtree, scratch, ignore_errors=True)
  if training_run:
    run_dir.copy_run_state(model_dir, scratch)
  return scratch


# What TensorFlow's C++ code writes while it loads, before any log level applies
# (TF_CPP_MIN_LOG_LEVEL does not reach it): notices, not news.
_STARTUP_NOTICES = ("All log messages before absl::InitializeLog() is called",
                    "oneDNN custom operations are on", "cudart_stub.cc",
                    "failed call to cuInit", "cpu_feature_guard.cc",
                    "rebuild TensorFlow with the appropriate compiler flags")


def _load_tensorflow() -> None:
  """Imports TensorFlow and finds its devices with the start-up notices held back;
  anything else written meanwhile is passed on. absl's --verbosity=0 shows all."""
  if FLAGS["verbosity"].present and FLAGS.verbosity >= 0:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf
      tf.config.list_physical_devices()
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines():
        if not any(notice in line for notice in _STARTUP_NOTICES):
          print(line, file=sys.stderr)


def _command_config():
  """The config the command describes: its flags' (resolve_config) when they name
  a base or no --model_dir is given; else the run's in --model_dir, with --method
  and the overrides over it (the stored config itself when none is given)."""
  if not (FLAGS.experiment or FLAGS.config_file or FLAGS.model_dir):
    raise config_lib.ConfigError(
        "--mode=config prints the config of a command: give it --experiment=NAME, "
        "--config_file=FILE or --model_dir of a run (and any other flags).")
  if FLAGS.experiment or FLAGS.config_file or not FLAGS.model_dir:
    return _resolved_config()
  return command_line.resolve_for_run(run_dir.run_config(FLAGS.model_dir), None,
                                      FLAGS.method, None, _overrides(), FLAGS.preset)


def _run() -> None:
  if FLAGS.mode == "config":  # No TensorFlow, no data, nothing written.
    print(strict_json.dumps(_command_config().to_dict()))
    return
  # A bad flag or config is reported before TensorFlow loads (seconds).
  if FLAGS.mode in ("eval", "export"):
    existing_model_dir = _existing_model_dir()
  else:
    config = _resolved_config()
  # Imports TensorFlow: only after the flags parsed, and after the CPU split.
  _load_tensorflow()
  from acn_tf.run import distribute
  distribute.split_cpu(FLAGS.cpu_devices)
  from acn_tf.data import pipeline  # noqa: F401  (data: before the strategy's devices)
  from acn_tf.run import training  # noqa: F401  (data: before the strategy's devices)

  strategy = distribute.create_strategy(FLAGS.strategy)
  if FLAGS.mode == "eval":
    results = training.evaluate(existing_model_dir, FLAGS.data_dir, strategy,
                                verbose=keras_verbosity(), checkpoint=FLAGS.checkpoint)
    _print_summary(results)
  elif FLAGS.mode == "export":
    paths = training.export(existing_model_dir, FLAGS.data_dir, FLAGS.checkpoint)
    print("Wrote " + ", ".join(paths.values()))
  elif FLAGS.mode == "tune":
    model_dir = _writable_model_dir(FLAGS.model_dir or _default_model_dir(config) + "-tune",
                                    training_run=False)
    run_dir.check_search_dir(model_dir)
    from acn_tf.run import tuning
    summary = tuning.tune(config, model_dir, FLAGS.data_dir, tuner=FLAGS.tuner,
                          max_trials=FLAGS.max_trials, strategy=strategy,
                          verbose=keras_verbosity())
    if "tuner_id" in summary:  # A worker of keras-tuner's distributed tuning.
      trials = ", ".join(summary["trials_begun"]) or "none"
      print(f"Worker {summary['tuner_id']} ran trials: {trials}. The chief writes the "
            f"search's results to {summary['results_file']}.")
    else:
      print(f"Best val_ensemble_top1 {summary.get('best_score')}; train it with "
            f"--config_file={os.path.join(model_dir, tuning.BEST_CONFIG_FILE)}")
  else:
    model_dir = _writable_model_dir(FLAGS.model_dir or _default_model_dir(config))
    results_path = os.path.join(model_dir, run_dir.RESULTS_FILE)
    finished_before = os.path.exists(results_path)
    results = training.train(config, model_dir, FLAGS.data_dir, strategy,
                             verbose=keras_verbosity(), export=FLAGS.export)
    print(f"{results_path} holds this run, finished by an earlier launch: nothing to "
          "train." if finished_before else f"Wrote {results_path}")
    _print_summary(results)


# Set when run.py is the program (not imported by a test): see report_user_errors.
_END_PROCESS_AT_ONCE_AFTER_A_WRITE_ERROR = False


def report_user_errors(function, *arguments) -> None:
  """Runs function(*arguments); a UserError becomes one message on stderr and
  the error's exit status. The one place that does so: other exceptions (bugs)
  propagate with their traceback.

  After a failed write (a full disk) the program ends at once, without the
  interpreter's clean-up: h5py would try again to close the file it could not
  write, print its tracebacks and can crash. Everything the run keeps is
  already on disk (each file is written whole or not at all)."""
  from acn_tf.run import storage
  try:
    function(*arguments)
  except errors.UserError as error:
    label = "interrupted" if isinstance(error, errors.TrainingInterrupted) else "error"
    sys.stdout.flush()
    sys.stderr.write(f"{label}: {error}\n")
    sys.stderr.flush()
    if isinstance(error, storage.StorageError) and _END_PROCESS_AT_ONCE_AFTER_A_WRITE_ERROR:
      os._exit(error.exit_status)
    sys.exit(error.exit_status)


def _quiet_libraries() -> None:
  """The libraries' INFO chatter (SavedModel export, tensorflow-datasets) stays out
  of a default run; absl's own -v/--verbosity brings it back."""
  from absl import logging
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def keras_verbosity() -> int:
  """--verbose, else Keras' convention: a progress bar with ETA on a terminal, one
  line per epoch when the output is a file."""
  if FLAGS.verbose is not None:
    return FLAGS.verbose
  return 1 if sys.stdout.isatty() else 2


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  _quiet_libraries()
  report_user_errors(_check_flags)
  report_user_errors(_run)


if __name__ == "__main__":
  _END_PROCESS_AT_ONCE_AFTER_A_WRITE_ERROR = True
  app.run(main)
