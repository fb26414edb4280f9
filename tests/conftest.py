"""Test set-up, and what several test files share.

Set-up: quiet TensorFlow, and two logical CPU devices for strategy tests. The
logical devices must be configured before TensorFlow initialises its devices,
so this runs at import time, before any test module touches tf.

Shared: Phase A's settings as the spec gives them; run.py run as a user runs it
(a subprocess: exit status, stderr, TensorFlow's start-up) or in this process
(its own `main`: the same flags, messages and exit status, without a second
TensorFlow start-up); processes a session runs once, for the tests that only
read what they wrote (`early_runs`); the digits runs several
test files read; what a run's directory holds. Small networks and batches are in
tests/tiny_models.py, fake dataset files in tests/dataset_files.py.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import pytest  # noqa: E402

from acn_tf import strict_json  # noqa: E402
from acn_tf.config.schema import AdversarialConfig, ExperimentConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "run.py")


def spec_phase_a(**settings) -> AdversarialConfig:
  """Phase A's settings as the spec gives them (JS at temperature 1, equal L_g
  weights, the search ball 8/255), with `settings` (by their config names) on top. Tests written against
  the spec's equations keep them whatever the library's defaults become."""
  spec = dict(divergence="js", divergence_temperature=1.0, keep_label_weight=1.0,
              divergence_weight=1.0, ras_epsilon=8.0 / 255.0)
  return ExperimentConfig.from_fields(**{**spec, **settings}).adversarial


# -- run.py in a process of its own ---------------------------------------------------


def subprocess_environment(**variables):
  """os.environ with TensorFlow's C++ logging off, and `variables` on top."""
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **variables)


def run_py(*arguments, cwd=ROOT, env=None, timeout=300):
  """`python run.py ARGUMENTS`, waited for; a CompletedProcess with text output."""
  return subprocess.run([sys.executable, RUN_PY, *arguments], cwd=cwd,
                        env=env or subprocess_environment(), capture_output=True,
                        text=True, timeout=timeout)


def start_run_py(*arguments, cwd=ROOT, env=None, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE):
  """`python run.py ARGUMENTS` started, not waited for (a Popen with text output)."""
  return subprocess.Popen([sys.executable, RUN_PY, *arguments], cwd=cwd,
                          env=env or subprocess_environment(), stdout=stdout,
                          stderr=stderr, text=True)


def _saved_epoch(metadata):
  """The epoch of the checkpoint in `metadata`, 0 while there is none."""
  try:
    return strict_json.read(metadata)["epoch"]
  except (OSError, ValueError):
    return 0


def kill_run_py_after_checkpoint(command, model_dir, epoch):
  """Starts `python run.py COMMAND`, kills it (SIGKILL: nothing of its own runs)
  once the checkpoint of `epoch` or a later one is saved, and returns the epoch of
  the checkpoint it left; fails if the run finished before it could be killed."""
  process = start_run_py(*command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metadata = os.path.join(model_dir, "backup", "training_metadata.json")
  deadline = time.time() + 240
  while _saved_epoch(metadata) < epoch and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert os.path.exists(metadata), "the run never wrote its first checkpoint"
  assert not os.path.exists(os.path.join(model_dir, "results.json")), \
      "the run finished before it was killed: make it longer"
  return _saved_epoch(metadata)


def free_ports(count):
  """`count` distinct localhost ports free at the time of asking (all bound at once,
  then released, so that they differ)."""
  sockets = [socket.socket() for _ in range(count)]
  for handle in sockets:
    handle.bind(("localhost", 0))
  ports = [handle.getsockname()[1] for handle in sockets]
  for handle in sockets:
    handle.close()
  return ports


def history_epochs(path):
  """The epoch column of a history.csv, as written (one entry a row)."""
  with open(path) as handle:
    return [line.split(",")[0] for line in handle.read().splitlines()[1:]]


def error_lines(stderr):
  """stderr without TensorFlow's start-up chatter (absl's pre-init warnings)."""
  return [line for line in stderr.splitlines()
          if line.startswith(("error:", "interrupted:", "Traceback"))]


# -- run.py in this process -------------------------------------------------------------


@pytest.fixture(scope="session")
def run_module():
  """run.py as a module (its absl flags can be defined once per process)."""
  spec = importlib.util.spec_from_file_location("acn_run_entry_point", RUN_PY)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def run_py_here(run_module, capfd, monkeypatch, tmp_path):
  """Runs run.py's `main` in this process as `absl.app.run` would, with `cwd`
  (default: the test's tmp_path, where a default model_dir would go). Returns
  what `run_py` returns: the exit status (SystemExit's code, 0 without one),
  stdout and stderr (file descriptors 1 and 2, as a process's)."""
  from absl import flags, logging

  def run(*arguments, cwd=None):
    monkeypatch.chdir(cwd or tmp_path)
    capfd.readouterr()
    verbosity = logging.get_verbosity()
    flags.FLAGS.unparse_flags()
    try:
      argv = flags.FLAGS(["run.py", *arguments])
      run_module.main(argv)
      status = 0
    except SystemExit as exit:
      status = exit.code
    finally:
      flags.FLAGS.unparse_flags()
      logging.set_verbosity(verbosity)
    stdout, stderr = capfd.readouterr()
    return subprocess.CompletedProcess(["run.py", *arguments], status, stdout, stderr)

  return run


def assert_one_error_line(completed, *culprits, status=2):
  """Exit status `status`, no traceback, and stderr's only message is one
  `error:` line naming every culprit. Returns that line."""
  assert completed.returncode == status, completed.stderr[-3000:]
  assert "Traceback" not in completed.stderr
  lines = error_lines(completed.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr[-3000:]
  for culprit in culprits:
    assert culprit in lines[0], (culprit, lines[0])
  return lines[0]


# -- What a run's directory holds --------------------------------------------------------


def snapshot(path, recursive=True):
  """{relative path: (size, mtime_ns)} of everything under `path` (None if absent)."""
  if not os.path.lexists(path):
    return None
  if not os.path.isdir(path):
    status = os.lstat(path)
    return {".": (status.st_size, status.st_mtime_ns)}
  entries = {}
  for root, directories, files in os.walk(path):
    for name in directories + files:
      full = os.path.join(root, name)
      status = os.lstat(full)
      entries[os.path.relpath(full, path)] = (
          None if os.path.isdir(full) else status.st_size, status.st_mtime_ns)
    if not recursive:
      break
  return entries


def strict_json_files(model_dir):
  """Parses every .json under model_dir with a parser that rejects NaN and Infinity."""
  parsed = {}
  for root, _, files in os.walk(model_dir):
    for name in files:
      if name.endswith(".json") or name.endswith(".json.bkp"):
        path = os.path.join(root, name)
        with open(path) as handle:
          parsed[os.path.relpath(path, model_dir)] = strict_json.loads(handle.read())
  return parsed


def write_json(path, values):
  """Writes `values` as JSON to `path` (a str or pathlib.Path); returns the path as a str."""
  with open(path, "w") as handle:
    json.dump(values, handle)
  return str(path)


def read_json(path):
  with open(path) as handle:
    return json.load(handle)


# -- Processes a session runs once, for the tests that only read what they wrote ------------


class Command(typing.NamedTuple):
  """A process other than run.py for `early_runs`: its argv, and its environment
  (default: subprocess_environment())."""
  argv: list
  env: dict = None


class FinishedRun(subprocess.CompletedProcess):
  """A process of an `early_runs` fixture, with `directory`: DIRECTORY/RUN_NAME,
  where its command writes by convention (a run.py run's --model_dir)."""

  def __init__(self, args, returncode, stdout, stderr, directory):
    super().__init__(args, returncode, stdout, stderr)
    self.directory = directory

  def succeeded(self):
    """Its directory, once checked that the process exited with status 0."""
    assert self.returncode == 0, self.stderr[-3000:]
    return self.directory


def _finish(command, directory):
  """Runs one command of an `early_runs` fixture: run.py arguments or a Command."""
  if not isinstance(command, Command):
    command = Command([sys.executable, RUN_PY, *command])
  completed = subprocess.run(command.argv, cwd=ROOT, env=command.env or subprocess_environment(),
                             capture_output=True, text=True, timeout=900)
  return FinishedRun(completed.args, completed.returncode, completed.stdout, completed.stderr,
                     directory)


_EARLY_RUNS = set()  # The names of the `early_runs` fixtures.


def early_runs(commands):
  """Decorator of `commands(directory)`, which gives {run name: run.py arguments,
  or a Command} writing under `directory`. Returns a session fixture, named as
  `commands`, that runs them one after the other (each a process of its own) the
  first time a test asks for it, and gives {run name: FinishedRun}.

  The tests that read one are marked `slow` and, for pytest-xdist's
  `--dist loadgroup`, one `xdist_group` (pytest_collection_modifyitems): one
  worker runs its processes, once."""
  name = commands.__name__
  _EARLY_RUNS.add(name)

  @pytest.fixture(scope="session", name=name)
  def finished(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp(name))
    return {run: _finish(command, os.path.join(directory, run))
            for run, command in commands(directory).items()}

  finished.__doc__ = commands.__doc__
  return finished


def _uses_a_module_fixture(item):
  """Whether `item` uses a module-scoped fixture (directly, through another fixture,
  or autouse)."""
  info = getattr(item, "_fixtureinfo", None)
  return info is not None and any(
      definitions and definitions[-1].scope == "module"
      for definitions in info.name2fixturedefs.values())


@pytest.hookimpl(tryfirst=True)  # Before pytest-xdist reads the groups.
def pytest_collection_modifyitems(items):
  """Groups and order for pytest-xdist's `--dist loadgroup`.

  A test that reads an `early_runs` fixture is marked `slow` and put in that
  fixture's `xdist_group`. The tests of a module that share a module-scoped fixture
  are one `xdist_group`, so that one worker builds it: under loadgroup, tests
  without a group are scheduled one by one, and a module fixture is built anew
  by each worker that runs one of its tests.

  loadgroup hands out the groups first (most tests first), then the other tests in
  collection order, each to the next worker with room. The `slow` tests (processes
  of their own) are moved to the front of that order, so that they start first and
  the last tests to start are short: a long test started last would end alone."""
  for item in items:
    fixtures = sorted(_EARLY_RUNS & set(getattr(item, "fixturenames", ())))
    if fixtures:
      item.add_marker(pytest.mark.slow)
      item.add_marker(pytest.mark.xdist_group(fixtures[0]))
    elif _uses_a_module_fixture(item):
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # Stable.


# -- Digits runs that several tests read ------------------------------------------------

# Trained once per session, each with run.py as a user runs it: "acn"
# (tests/test_records.py, tests/test_run.py: TensorBoard events, the best
# checkpoint, a finished run refused), "dml" and "independent" (tests/test_run.py).
# No export: the tests that need one make their own. Tests that change a run
# copy it first.
DIGITS_RUNS = {
    # Default log_every_steps (50), 5 steps an epoch: the epoch's last step is not
    # a multiple of it, the case where Keras' own callback loses the epoch scalars.
    "acn": ["--method=acn", "--override=epochs=2", "--override=train_examples=320",
            "--override=adv_warmup_epochs=0", "--override=validation_fraction=0.2"],
    "dml": ["--method=dml", "--override=epochs=1", "--override=train_examples=256"],
    "dml_noise": ["--method=dml_noise", "--override=epochs=1",
                  "--override=train_examples=256"],
    "independent": ["--method=independent", "--override=epochs=1",
                    "--override=train_examples=256",
                    "--override=architectures=small_cnn,small_cnn,resnet8"],
}


@early_runs
def digits_runs(directory):
  """The DIGITS_RUNS: {name: FinishedRun}."""
  return {name: ["--experiment=digits", f"--model_dir={os.path.join(directory, name)}",
                 "--verbose=0", "--noexport", *arguments]
          for name, arguments in DIGITS_RUNS.items()}
