"""Compiled, mixed-precision and deterministic execution of the training step."""

import inspect
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.config import registry
from acn_tf.run import builders
from acn_tf.data.pipeline import DatasetInfo
from conftest import early_runs, read_json
from tiny_models import (exact_acn, exact_batches,
                         exact_dml, random_batch)


def _compiled(build, jit_compile):
  model = build(tf.distribute.get_strategy())
  model.jit_compile = jit_compile
  return model


def _train_step_xla_flags(model):
  """{traced train step: its `_XlaMustCompile` attribute} after `fit`.

  Keras 3 (keras/src/backend/tensorflow/trainer.py, `_make_function`) wraps the
  step in `tf.function(one_step_on_data, jit_compile=self.jit_compile)`, called
  from the `multi_step_on_iterator` tf.function that `model.train_function`
  runs. TensorFlow records jit_compile in the step's FunctionDef as
  `_XlaMustCompile` (true: XLA compiles it, or fails loudly; false: plain graph).
  """
  flags = {}
  for train_function in _keras_train_functions(model):
    outer = inspect.getclosurevars(train_function).nonlocals["multi_step_on_iterator"]
    for concrete in outer._list_all_concrete_functions():
      for function in concrete.graph.as_graph_def().library.function:
        if function.signature.name.startswith("__inference_one_step_on_data"):
          attribute = function.attr.get("_XlaMustCompile")
          flags[function.signature.name] = attribute is not None and attribute.b
  return flags


def _keras_train_functions(model):
  """Keras' train functions of `model`: its own, or for the ACN model, which
  chooses one per phase of its warm-up (make_train_function), each it ran."""
  nonlocals = inspect.getclosurevars(model.train_function).nonlocals
  if "phase_functions" in nonlocals:
    return list(nonlocals["phase_functions"].values())
  return [model.train_function]


@pytest.mark.parametrize(
    "build", [exact_dml, exact_acn],
    ids=["dml", "acn"])
def test_whole_train_step_under_xla_matches_plain_graph(build):
  plain = _compiled(build, False)
  xla = _compiled(build, True)
  plain.fit(exact_batches(), epochs=1, verbose=0, shuffle=False)
  xla.fit(exact_batches(), epochs=1, verbose=0, shuffle=False)
  assert xla.train_function is not None
  # XLA really was on. Keras' `jit_compile` setter silently stores False when a
  # layer has supports_jit=False (or op determinism is enabled): the flag must
  # still be True after fit, and the step fit traced must carry XLA's mark.
  assert plain.jit_compile is False
  assert xla.jit_compile is True
  plain_flags, xla_flags = _train_step_xla_flags(plain), _train_step_xla_flags(xla)
  assert plain_flags and not any(plain_flags.values()), plain_flags
  assert xla_flags and all(xla_flags.values()), xla_flags
  for a, b in zip(plain.weights, xla.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def _digits_acn_model(precision):
  config = registry.get_experiment("digits").replace(
      method="acn", mixed_precision=precision, adv_warmup_epochs=0)
  info = DatasetInfo("digits", 10, (8, 8, 1), 64, 0, 64, "synthetic")
  try:
    return builders.build_model(config, info, [0.5], [0.08], steps=2)
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
  images, labels = random_batch(32, num_classes=10)
  logs = model.train_on_batch(images, labels, return_dict=True)
  for key in ("loss", "g_loss", "d_loss", "divergence_search"):
    assert np.isfinite(logs[key]), (key, logs)
  # The search's start gradient comes through the loss scale; an overflowed
  # scale (float16's first steps) must not put NaN in the images.
  divergent, _ = model.adversarial_phase(tf.constant(images), tf.constant(labels))
  assert np.all(np.isfinite(divergent.numpy()))
  assert np.abs(divergent.numpy() - images).max() <= model.adversarial.search.ras_epsilon + 1e-6


@early_runs
def deterministic_runs(directory):
  """The same command twice, each in a process of its own: one epoch of 4 ACN
  steps (Phase A from the first) with op determinism."""
  return {name: ["--experiment=digits", "--method=acn",
                 f"--model_dir={os.path.join(directory, name)}", "--verbose=0", "--noexport",
                 "--override=epochs=1", "--override=adv_warmup_epochs=0",
                 "--override=train_examples=256", "--override=deterministic=true"]
          for name in ("first", "second")}


def test_deterministic_runs_give_identical_results(deterministic_runs):
  results = [read_json(os.path.join(run.succeeded(), "results.json"))
             for run in deterministic_runs.values()]
  assert len(results) == 2
  for key in ("ensemble_top1", "mean_divergence", "test_loss"):
    assert results[0][key] == results[1][key], key
  assert results[0]["classifiers"] == results[1]["classifiers"]


def test_overflowed_float16_loss_scale_gives_no_search_step_not_nan():
  model = _digits_acn_model("mixed_float16")
  # float16 holds up to 65504: this scale overflows the backward pass.
  model.generator_optimizer.dynamic_scale.assign(2.0**40)
  images, labels = (tf.constant(array) for array in random_batch(32, num_classes=10))
  generated = model.generator_update(images, labels)
  gradient = generated.start_gradient.numpy()
  assert np.all(np.isfinite(gradient))
  assert np.any(gradient == 0)  # The overflowed entries: no step there.
