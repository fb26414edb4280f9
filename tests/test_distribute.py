"""A step on 2 replicas equals a step on 1 replica with the same global batch.

This is the test that catches a hand-written loss not scaled for the number of
replicas (MirroredStrategy sums the replicas' gradients). The networks here have
no batch norm, whose per-replica batch statistics would differ by design.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from acn_tf import discriminators, distribute
from acn_tf.adversarial import AdversarialCoDistillation
from acn_tf.config import DistillationConfig
from acn_tf.models import CoDistillation
from conftest import spec_phase_a

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 5
GLOBAL_BATCH = 16


def _classifier(seed, name):
  keras.utils.set_random_seed(seed)
  images = keras.Input(IMAGE_SHAPE)
  x = layers.Normalization(mean=[0.5], variance=[0.08])(images)
  x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(images, layers.Dense(NUM_CLASSES)(x), name=name)


def _generator(seed):
  """No batch norm, no noise channels: equal inputs give equal outputs on every replica."""
  keras.utils.set_random_seed(seed)
  images = keras.Input(IMAGE_SHAPE)
  noise = keras.Input((*IMAGE_SHAPE[:2], 0))
  x = layers.Concatenate()([images, noise])
  x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
  return keras.Model([images, noise], layers.Conv2D(1, 3, padding="same")(x))


def _dml(strategy):
  with strategy.scope():
    model = CoDistillation([_classifier(1, "c0"), _classifier(2, "c1")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3),
                  distillation=DistillationConfig(temperature=2.0, kd_weight=1.0))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
  return model


def _acn(strategy, adv_normalization="batch", mask_source="search", objective="divergence"):
  with strategy.scope():
    keras.utils.set_random_seed(3)
    discriminator = discriminators.build_discriminator(IMAGE_SHAPE, filters=4)
    model = AdversarialCoDistillation([_classifier(1, "c0"), _classifier(2, "c1")],
                                      _generator(4), discriminator)
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        generator_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5),
        discriminator_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5),
        distillation=DistillationConfig(adv_normalization=adv_normalization),
        adversarial=spec_phase_a(
            wrc_alpha=0.1, noise_channels=0, ras_steps=2, ras_step_size=0.01,
            ras_epsilon=0.03, ras_mask_source=mask_source, ras_objective=objective))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
  return model


def _data(steps=2):
  rng = np.random.default_rng(0)
  images = rng.random((GLOBAL_BATCH * steps, *IMAGE_SHAPE), dtype=np.float32)
  labels = rng.integers(0, NUM_CLASSES, GLOBAL_BATCH * steps)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)


def _two_replicas():
  strategy = distribute.create_strategy("mirrored")  # conftest: two logical CPUs.
  assert strategy.num_replicas_in_sync == 2
  return strategy


def _acn_kept_mean(strategy):
  """The masked mean over kept examples needs the global kept count (an all-reduce)."""
  return _acn(strategy, adv_normalization="kept")


def _acn_mask_from_update(strategy):
  """The label mask made inside the classifier update, on each replica's batch."""
  return _acn(strategy, mask_source="update")


def _acn_search_along_generator_loss(strategy):
  """The search's first step from the replica-scaled generator loss's gradient."""
  return _acn(strategy, objective="generator_loss")


@pytest.mark.parametrize(
    "build", [_dml, _acn, _acn_kept_mean, _acn_mask_from_update,
              _acn_search_along_generator_loss],
    ids=["dml", "acn", "acn_kept_mean", "acn_mask_from_update",
         "acn_search_along_generator_loss"])
def test_two_replicas_match_one_replica(build):
  single = build(tf.distribute.get_strategy())
  mirrored = build(_two_replicas())
  for a, b in zip(single.weights, mirrored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  single_logs = single.fit(_data(), epochs=1, verbose=0, shuffle=False).history
  mirrored_logs = mirrored.fit(_data(), epochs=1, verbose=0, shuffle=False).history
  moved = 0
  for a, b, start in zip(single.weights, mirrored.weights, build(tf.distribute.get_strategy()).weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)
    moved += not np.allclose(a.numpy(), start.numpy())
  assert moved > 4, "the step should have moved the weights"
  # Reported losses are per-example means on both, not divided by the replicas.
  for key in ("loss", "c0_loss") + (("g_loss", "d_loss") if build is not _dml else ()):
    np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4,
                               err_msg=key)


def test_create_strategy_names():
  assert distribute.create_strategy("mirrored").num_replicas_in_sync == 2  # conftest: 2 CPUs
  assert distribute.create_strategy("auto").num_replicas_in_sync == 1
  with pytest.raises(ValueError, match="Unknown strategy"):
    distribute.create_strategy("tpu")


@pytest.mark.parametrize("tf_config,chief", [
    (None, True),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_is_chief_reads_tf_config(monkeypatch, tf_config, chief):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  assert distribute.is_chief() is chief
