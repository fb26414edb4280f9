"""Compiled, mixed-precision and deterministic execution of the training step."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import config as config_lib, training
from acn_tf.data import DatasetInfo

import test_distribute  # The noise-free, batch-norm-free DML and ACN models.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compiled(build, jit_compile):
  model = build(tf.distribute.get_strategy())
  model.jit_compile = jit_compile
  return model


@pytest.mark.parametrize("build", [test_distribute._dml, test_distribute._acn],
                         ids=["dml", "acn"])
def test_whole_train_step_under_xla_matches_plain_graph(build):
  plain = _compiled(build, False)
  xla = _compiled(build, True)
  plain.fit(test_distribute._data(), epochs=1, verbose=0, shuffle=False)
  xla.fit(test_distribute._data(), epochs=1, verbose=0, shuffle=False)
  assert xla.train_function is not None
  for a, b in zip(plain.weights, xla.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def _digits_acn_model(precision):
  config = config_lib.get_experiment("digits").replace(
      method="acn", mixed_precision=precision, adv_warmup_epochs=0)
  info = DatasetInfo("digits", 10, (8, 8, 1), 64, 0, 64, "synthetic")
  try:
    return training.build_model(config, info, [0.5], [0.08], steps=2)
  finally:
    keras.mixed_precision.set_global_policy("float32")  # Never leak into other tests.


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_step_keeps_float32_losses_and_variables(precision):
  model = _digits_acn_model(precision)
  compute = precision.split("_")[1]
  assert model.classifiers[0].layers[2].compute_dtype == compute
  assert all(v.dtype == "float32" for v in model.trainable_variables)
  if precision == "mixed_float16":
    for optimizer in (model.optimizer, model.generator_optimizer,
                      model.discriminator_optimizer):
      assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  rng = np.random.default_rng(0)
  images = rng.random((32, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, 10, 32)
  logs = model.train_on_batch(images, labels, return_dict=True)
  for key in ("loss", "g_loss", "d_loss", "divergence_search"):
    assert np.isfinite(logs[key]), (key, logs)


def test_deterministic_runs_give_identical_results(tmp_path):
  results = []
  for attempt in range(2):
    model_dir = tmp_path / f"run{attempt}"
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), "--experiment=digits",
         "--method=acn", f"--model_dir={model_dir}", "--verbose=0", "--noexport",
         "--override=epochs=2", "--override=adv_warmup_epochs=1",
         "--override=train_examples=256", "--override=deterministic=true"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(model_dir / "results.json") as handle:
      results.append(json.load(handle))
  for key in ("ensemble_top1", "mean_divergence", "test_loss"):
    assert results[0][key] == results[1][key], key
  assert results[0]["classifiers"] == results[1]["classifiers"]
