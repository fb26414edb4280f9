"""The Python API (acn_tf/api.py): its documented example runs as written, and the
models it builds are the ones run.py builds."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import api, errors
from acn_tf.config import schema as config_lib, registry
from acn_tf.method.adversarial import AdversarialCoDistillation
from acn_tf.method.codistillation import CoDistillation
from acn_tf.method.noise import NoisyCoDistillation
from tiny_models import dense_classifier


def example_code():
  blocks = re.findall(r"```python\n(.*?)```", api.__doc__, re.S)
  assert len(blocks) == 1, "acn_tf/api.py's docstring holds one ```python example"
  return blocks[0]


def test_the_documented_example_runs_as_written(tmp_path, monkeypatch, capsys):
  code = example_code()
  assert len(code.splitlines()) <= 25
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(compile(code, "acn_tf/api.py example", "exec"), namespace)
  top1 = float(capsys.readouterr().out.strip().splitlines()[-1])
  assert 0.6 < top1 <= 1.0  # Two small CNNs learn the digits in 4 epochs.
  model = namespace["model"]
  assert isinstance(model, AdversarialCoDistillation)
  assert int(model.generator_optimizer.iterations) > 0  # Phase A ran after warm-up.
  # The export serves names: the digits' own ("0".."9"), read with plain TensorFlow.
  loaded = tf.saved_model.load(str(tmp_path / "digits_acn" / "ensemble"))
  assert [name.decode() for name in loaded.class_names.numpy()] == [str(d) for d in range(10)]
  images = namespace["images"][1400:1432]
  outputs = loaded.signatures["serving_default"](
      images=tf.constant(np.round(images * 255).astype(np.uint8)))
  names = [name.decode() for name in outputs["class_names"].numpy()]
  assert names == [str(label) for label in outputs["classes"].numpy()]
  agreement = np.mean(outputs["classes"].numpy() == namespace["labels"][1400:1432])
  assert agreement > 0.5


@pytest.mark.parametrize("method, model_type, kd_weight", [
    ("independent", CoDistillation, 0.0), ("dml", CoDistillation, 1.0),
    ("dml_noise", NoisyCoDistillation, 1.0), ("acn", AdversarialCoDistillation, 1.0)])
def test_build_model_gives_each_method_the_configs_settings(method, model_type, kd_weight):
  config = api.config(method=method, learning_rate=0.2, lr_schedule="step",
                      lr_decay_epochs=(2,), epochs=3, temperature=2.0)
  assert config.data.dataset == config_lib.PYTHON_DATASET and config.name == "python_api"
  model = api.build_model([dense_classifier(0), dense_classifier(1)], config,
                          steps_per_epoch=5)
  assert type(model) is model_type
  assert model.distillation.kd_weight == kd_weight and model.distillation.temperature == 2.0
  assert isinstance(model.optimizer, keras.optimizers.SGD)
  assert model.optimizer.nesterov and np.isclose(float(model.optimizer.momentum), 0.9)
  callbacks = api.callbacks(config)
  assert [type(c) for c in callbacks] == [keras.callbacks.TerminateOnNaN]
  if method == "acn":  # Phase A's networks take the classifiers' images.
    assert model.generator.output_shape == (None, 6, 6, 1)
    assert model.generator_optimizer.learning_rate.numpy() == pytest.approx(
        config.adversarial.generator_learning_rate)
  images = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype(np.float32)
  metrics = model.train_on_batch(images, np.array([0, 1, 2, 0]), return_dict=True)
  assert np.isfinite(metrics["loss"])


def test_a_plain_fit_of_the_acn_model_is_dml_for_the_warm_up_then_acn():
  """model.fit with no callback: after the warm-up epoch the classifiers are what
  the DML model of the same settings makes of them; after it Phase A runs."""
  images = np.random.default_rng(0).uniform(size=(40, 6, 6, 1)).astype(np.float32)
  labels = np.random.default_rng(1).integers(0, 3, size=40)
  train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
  settings = dict(epochs=3, adv_warmup_epochs=1, learning_rate=0.05)
  models = {method: api.build_model([dense_classifier(0), dense_classifier(1)],
                                    api.config(method=method, **settings),
                                    steps_per_epoch=len(train))
            for method in ("acn", "dml")}
  for method, model in models.items():
    model.fit(train, epochs=1, shuffle=False, verbose=0)
  assert int(models["acn"].generator_optimizer.iterations) == 0
  for acn, dml in zip(models["acn"].classifiers, models["dml"].classifiers):
    for acn_weights, dml_weights in zip(acn.get_weights(), dml.get_weights()):
      np.testing.assert_array_equal(acn_weights, dml_weights)
  models["acn"].fit(train, epochs=3, initial_epoch=1, shuffle=False, verbose=0)
  assert int(models["acn"].generator_optimizer.iterations) == 2 * len(train)


def test_the_learning_rate_schedule_follows_steps_per_epoch():
  config = api.config(method="dml", learning_rate=0.2, lr_schedule="step",
                      lr_decay_epochs=(2,), lr_decay_factor=0.1)
  model = api.build_model([dense_classifier(0), dense_classifier(1)], config,
                          steps_per_epoch=5)
  optimizer = model.optimizer  # Its learning_rate is the schedule's at `iterations`.
  optimizer.iterations.assign(9)
  assert float(optimizer.learning_rate) == pytest.approx(0.2)  # Epoch 2 ends at step 10.
  optimizer.iterations.assign(11)
  assert float(optimizer.learning_rate) == pytest.approx(0.02)


def test_api_config_starts_from_a_named_experiment():
  config = api.config("cifar100", method="acn", name="mine")
  paper = registry.get_experiment("cifar100")
  assert config.name == "mine" and config.data.dataset == config_lib.PYTHON_DATASET
  assert (config.optimization.learning_rate, config.optimization.lr_decay_epochs, config.optimization.epochs) == (
      paper.optimization.learning_rate, paper.optimization.lr_decay_epochs, paper.optimization.epochs)
  with pytest.raises(errors.ConfigError, match="Unknown config key 'learning_rat'"):
    api.config(learning_rat=0.1)
  with pytest.raises(errors.ConfigError, match="Unknown experiment"):
    api.config("imagenet")


def test_build_model_rejects_what_cannot_work_together():
  config = api.config(method="dml")
  with pytest.raises(errors.ConfigError, match="two classifiers or more"):
    api.build_model([dense_classifier(0)], config, steps_per_epoch=5)
  with pytest.raises(errors.ConfigError, match="different numbers of classes"):
    api.build_model([dense_classifier(0), dense_classifier(1, classes=4)], config, 5)
  with pytest.raises(errors.ConfigError, match="different image shapes"):
    api.build_model([dense_classifier(0), dense_classifier(1, shape=(5, 5, 1))], config, 5)
  with pytest.raises(errors.ConfigError, match="steps_per_epoch must be >= 1"):
    api.build_model([dense_classifier(0), dense_classifier(1)], config, 0)
  with pytest.raises(errors.ConfigError, match="keras.Model"):
    api.build_model(["resnet32", "resnet32"], config, 5)
  bfloat16 = api.config(method="dml", mixed_precision="mixed_bfloat16")
  with pytest.raises(errors.ConfigError, match="set_global_policy\\('mixed_bfloat16'\\)"):
    api.build_model([dense_classifier(0), dense_classifier(1)], bfloat16, 5)


def test_run_py_cannot_load_the_python_dataset():
  from acn_tf.data import pipeline
  with pytest.raises(errors.ConfigError, match="your own tf.data pipeline"):
    pipeline.load_splits(config_lib.PYTHON_DATASET, None)
