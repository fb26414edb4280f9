"""oneDNN: the entry points' choice, not the library's (importing acn_tf changes no
environment variable); on by default on x86, a user's choice kept, the same numbers
either way; and the machine facts results.json records."""

import json
import os
import platform as python_platform
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, RUN_PY, Command, early_runs

# One DML and one ACN step of tiny networks on a fixed batch, oneDNN chosen as an
# entry point chooses it; prints the oneDNN state, then saves every weight after the
# steps to the .npz file given.
_STEPS = r"""
import sys
from acn_tf import platform
platform.prefer_onednn()
import keras, numpy as np, tensorflow as tf
from acn_tf.config.schema import ExperimentConfig
from acn_tf.data.pipeline import DatasetInfo
from acn_tf.run import builders
tf.config.experimental.enable_op_determinism()
info = DatasetInfo("test", 5, (8, 8, 1), 32, 0, 32, "test")
rng = np.random.default_rng(0)
images = tf.constant(rng.random((32, 8, 8, 1), dtype=np.float32))
labels = tf.constant(rng.integers(0, 5, 32))
weights = {}
for method in ("dml", "acn"):
  config = ExperimentConfig.from_fields(name="t", dataset="digits", method=method, batch_size=32,
                            architectures=("small_cnn", "small_cnn"), epochs=1)
  keras.utils.set_random_seed(0)
  model = builders.build_model(config, info, [0.5], [0.08], steps=1)
  model.train_on_batch(images, labels)
  for index, variable in enumerate(model.variables):
    weights[f"{method}/{index}/{variable.path}"] = variable.numpy()
np.savez(sys.argv[1], **weights)
print(platform.onednn_enabled(), platform.os.environ.get(platform.ONEDNN_VARIABLE))
"""


def _steps_environment(onednn=None):
  environment = {key: value for key, value in os.environ.items()
                 if key != "TF_ENABLE_ONEDNN_OPTS"}
  environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
  if onednn is not None:
    environment["TF_ENABLE_ONEDNN_OPTS"] = onednn
  return environment


@early_runs
def onednn_steps(directory):
  """_STEPS in a process of its own each: TF_ENABLE_ONEDNN_OPTS unset ("default",
  twice) or "0" ("off"); their weights in DIRECTORY/NAME.npz."""
  return {name: Command([sys.executable, "-c", _STEPS, os.path.join(directory, f"{name}.npz")],
                        _steps_environment(onednn))
          for name, onednn in (("default", None), ("off", "0"), ("again", None))}


def _steps_result(run):
  """(oneDNN on, TF_ENABLE_ONEDNN_OPTS as the process saw it, weights after the steps)."""
  assert run.returncode == 0, run.stderr[-2000:]
  enabled, variable = run.stdout.split()[-2:]
  return enabled == "True", variable, dict(np.load(f"{run.directory}.npz"))


@pytest.mark.skipif(python_platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="oneDNN's default is an x86 matter")
def test_onednn_is_on_by_default_and_a_users_choice_wins(onednn_steps):
  on, on_variable, on_weights = _steps_result(onednn_steps["default"])
  off, off_variable, off_weights = _steps_result(onednn_steps["off"])
  assert (on, on_variable) == (True, "1")
  assert (off, off_variable) == (False, "0")
  # The same DML and ACN steps, to float tolerance (kernels sum in other orders).
  assert on_weights.keys() == off_weights.keys()
  assert any(name.startswith("acn/") and name.endswith("residual_out/kernel")
             for name in on_weights)  # The generator stepped too.
  for name, value in on_weights.items():
    np.testing.assert_allclose(value, off_weights[name], rtol=1e-3, atol=1e-5,
                               err_msg=name)
  # With op determinism, oneDNN on twice gives the same numbers exactly.
  _, _, again = _steps_result(onednn_steps["again"])
  for name, value in on_weights.items():
    np.testing.assert_array_equal(value, again[name], err_msg=name)


# Imports the library (its public API too) and prints whether os.environ changed.
_IMPORT_LIBRARY = r"""
import os
before = dict(os.environ)
import acn_tf, acn_tf.platform
print(dict(os.environ) == before)
import acn_tf.api
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
"""

# Loads run.py as a module (its flags defined, `main` not run) and prints the variable.
_LOAD_RUN_PY = r"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("entry_point", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "tensorflow" in sys.modules)
"""


def _printed(script, *arguments, **variables):
  completed = subprocess.run([sys.executable, "-c", script, *arguments], cwd=ROOT,
                             env={**_steps_environment(), **variables},
                             capture_output=True, text=True, timeout=300)
  assert completed.returncode == 0, completed.stderr[-2000:]
  return completed.stdout.split()


def test_importing_acn_tf_leaves_the_environment_alone():
  assert _printed(_IMPORT_LIBRARY) == ["True", "None"]


@pytest.mark.skipif(python_platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="oneDNN's default is an x86 matter")
def test_run_py_chooses_onednn_before_tensorflow_loads_and_a_users_choice_wins():
  assert _printed(_LOAD_RUN_PY, RUN_PY) == ["1", "False"]
  assert _printed(_LOAD_RUN_PY, RUN_PY, TF_ENABLE_ONEDNN_OPTS="0") == ["0", "False"]


def test_machine_info_names_cpu_isa_onednn_and_versions(monkeypatch):
  from acn_tf import platform
  monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
  monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
  info = platform.machine_info()
  assert info["speed_variables"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
  assert "TF_NUM_INTEROP_THREADS" not in info["speed_variables"]
  json.dumps(info)  # results.json must be able to hold it.
  assert info["onednn"] in (True, False)
  assert info["tensorflow_version"] and info["keras_version"]
  assert info["cpu_count"] == os.cpu_count()
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as handle:
      flags = next(line for line in handle if line.startswith("flags")).split()
    assert ("avx2" in info["isa"]) == ("avx2" in flags)
    assert ("avx512f" in info["isa"]) == ("avx512f" in flags)
