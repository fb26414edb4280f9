"""Small networks, batches and models that several test files build.

- `small_cnns`: the project's `small_cnn` classifiers on 8x8 grayscale images.
- `dense_classifier`: a Flatten + Dense classifier, for API and export checks.
- `random_batch`: uniform images in [0, 1) and random labels, from a seed.
- `exact_dml`, `exact_dml_noise`, `exact_acn` (and its variants): DML, dml_noise
  and ACN models whose networks have no batch norm and no noise channels (and
  dml_noise's signs come from the pixels), so that equal inputs give equal
  outputs wherever they run: one replica or two (tests/test_distribute.py),
  plain graph or XLA (tests/test_execution.py). Their classifiers' optimizer is the
  one run.py gives them (PyTorch's SGD rule, coupled weight decay).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from acn_tf.networks import backbones, discriminators
from acn_tf.method.adversarial import AdversarialCoDistillation
from acn_tf.config.schema import DistillationConfig
from acn_tf.method.codistillation import CoDistillation
from acn_tf.method.noise import NoisyCoDistillation
from acn_tf.run import optimizers
from conftest import spec_phase_a

IMAGE_SHAPE = (8, 8, 1)


def small_cnns(seeds=(1, 2), num_classes=5, image_shape=IMAGE_SHAPE):
  """One `small_cnn` per seed, named c0, c1, ..., normalising with mean 0.5 and
  variance 0.08."""
  return [backbones.build_classifier("small_cnn", image_shape, num_classes, [0.5], [0.08],
                                     name=f"c{i}", seed=seed)
          for i, seed in enumerate(seeds)]


def dense_classifier(seed, classes=3, shape=(6, 6, 1)):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                           keras.layers.Dense(classes)])


def randomise_batch_norms(model, seed=0):
  """Moving statistics, scales and shifts of every batch norm of `model` away
  from their initial 0 and 1 (numpy's default_rng(seed)), so that a computation
  that mishandles any of them shows."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, layers.BatchNormalization):
      size = layer.moving_mean.shape[0]
      layer.moving_mean.assign(0.3 * rng.normal(size=size))
      layer.moving_variance.assign(0.5 + rng.random(size))
      layer.gamma.assign(1.0 + 0.3 * rng.normal(size=size))
      layer.beta.assign(0.2 * rng.normal(size=size))


def random_batch(size=32, num_classes=5, image_shape=IMAGE_SHAPE, seed=0):
  """(float32 images in [0, 1), int64 labels) drawn from numpy's default_rng(seed)."""
  rng = np.random.default_rng(seed)
  images = rng.random((size, *image_shape), dtype=np.float32)
  labels = rng.integers(0, num_classes, size)
  return images, labels


# -- Models whose outputs do not depend on where they run --------------------------------

EXACT_CLASSES = 5
GLOBAL_BATCH = 16


def _exact_classifier(seed, name):
  keras.utils.set_random_seed(seed)
  images = keras.Input(IMAGE_SHAPE)
  x = layers.Normalization(mean=[0.5], variance=[0.08])(images)
  x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(images, layers.Dense(EXACT_CLASSES)(x), name=name)


def _exact_generator(seed):
  """No batch norm, no noise channels: equal inputs give equal outputs on every replica."""
  keras.utils.set_random_seed(seed)
  images = keras.Input(IMAGE_SHAPE)
  noise = keras.Input((*IMAGE_SHAPE[:2], 0))
  x = layers.Concatenate()([images, noise])
  x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
  return keras.Model([images, noise], layers.Conv2D(1, 3, padding="same")(x))


def exact_dml(strategy):
  with strategy.scope():
    model = CoDistillation([_exact_classifier(1, "c0"), _exact_classifier(2, "c1")])
    model.compile(optimizers.PyTorchSGD(0.1, momentum=0.9, weight_decay=1e-3),
                  distillation=DistillationConfig(temperature=2.0, kd_weight=1.0))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
  return model


class PixelSignNoise(NoisyCoDistillation):
  """dml_noise whose signs are a function of each pixel's value rather than random:
  every replica makes the noisy copy a single replica makes of the same images."""

  def noise_signs(self, images):
    return tf.where(tf.math.floormod(tf.floor(images * 997.0), 2.0) < 1.0, 1.0, -1.0)


def exact_dml_noise(strategy):
  """Masked, and noisy copies that every replica makes as one replica would."""
  with strategy.scope():
    model = PixelSignNoise([_exact_classifier(1, "c0"), _exact_classifier(2, "c1")])
    model.compile(optimizers.PyTorchSGD(0.1, momentum=0.9, weight_decay=1e-3),
                  distillation=DistillationConfig(temperature=2.0, input_noise=0.1))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
  return model


def exact_acn(strategy):
  with strategy.scope():
    keras.utils.set_random_seed(3)
    discriminator = discriminators.build_discriminator(IMAGE_SHAPE, filters=4)
    model = AdversarialCoDistillation(
        [_exact_classifier(1, "c0"), _exact_classifier(2, "c1")], _exact_generator(4),
        discriminator)
    model.compile(
        optimizers.PyTorchSGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        generator_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5),
        discriminator_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5),
        distillation=DistillationConfig(),
        adversarial=spec_phase_a(
            wrc_alpha=0.1, noise_channels=0, ras_steps=2, ras_step_size=0.01,
            ras_epsilon=0.03))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
  return model


def exact_batches(steps=2):
  """`steps` batches of GLOBAL_BATCH examples for the exact models."""
  images, labels = random_batch(GLOBAL_BATCH * steps, EXACT_CLASSES)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
