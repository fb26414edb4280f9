"""The machine a run ran on, and the entry points' choice of TensorFlow's oneDNN
CPU kernels.

TensorFlow turns its oneDNN kernels on by itself only on some x86 CPUs (those
with AVX-512 and newer). Elsewhere, e.g. on AVX2-only machines, they stay off,
although the convolutions that make up these networks' steps run faster with
them there as well. The setting is process-wide and read once, when TensorFlow
is imported, so it is a program's choice, not a library's: importing acn_tf
changes nothing, and the entry points (run.py, the experiments/ scripts that
train or measure) call `prefer_onednn` before anything imports TensorFlow.
A user's own TF_ENABLE_ONEDNN_OPTS (0 turns the kernels off) always wins.
"""

import os
import platform
import sys
from typing import Any, Dict

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
# The instruction-set extensions that decide which CPU kernels TensorFlow runs.
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_bf16", "amx_int8", "amx_tile")
# Environment variables that change the speed of the same code: thread pools, and
# oneDNN's instruction-set cap (how experiments/BENCHMARKS.md emulates AVX2).
SPEED_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
                   "ONEDNN_MAX_CPU_ISA")


def prefer_onednn() -> bool:
  """Sets TF_ENABLE_ONEDNN_OPTS=1 on x86 unless the user set it or TensorFlow is
  already imported (then it is too late). Returns whether it set it."""
  if (ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules
      or platform.machine().lower() not in _X86):
    return False
  os.environ[ONEDNN_VARIABLE] = "1"
  return True


def _cpu_facts() -> Dict[str, Any]:
  """Model name and ISA flags from /proc/cpuinfo (Linux); empty elsewhere."""
  try:
    with open("/proc/cpuinfo") as handle:
      lines = handle.read().splitlines()
  except OSError:
    return {"cpu_model": platform.processor() or None, "isa": []}
  model, flags = None, set()
  for line in lines:
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model is None:
      model = value.strip()
    elif key == "flags" and not flags:
      flags = set(value.split())
  return {"cpu_model": model, "isa": [flag for flag in _ISA_FLAGS if flag in flags]}


def onednn_enabled() -> bool:
  """Whether this process's TensorFlow runs its oneDNN kernels."""
  from tensorflow.python.util import _pywrap_util_port  # Private, but the only reader.
  return bool(_pywrap_util_port.IsMklEnabled())


def machine_info() -> Dict[str, Any]:
  """What speed figures depend on: CPU, ISA extensions, oneDNN, threads, versions."""
  import keras
  import tensorflow as tf
  threading = tf.config.threading
  return {
      **_cpu_facts(),
      "machine": platform.machine(),
      "cpu_count": os.cpu_count(),
      "onednn": onednn_enabled(),
      "onednn_variable": os.environ.get(ONEDNN_VARIABLE),
      "intra_op_threads": threading.get_intra_op_parallelism_threads(),
      "inter_op_threads": threading.get_inter_op_parallelism_threads(),
      "speed_variables": {name: os.environ[name] for name in SPEED_VARIABLES
                          if name in os.environ},
      "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
      "tensorflow_version": tf.__version__,
      "keras_version": keras.__version__,
      "python_version": platform.python_version(),
  }

