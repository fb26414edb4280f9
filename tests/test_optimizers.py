"""The classifiers' SGD (acn_tf/run/optimizers.py) against PyTorch's documented update
rule and Keras' own, each written out in numpy here, on a conv + batch norm + dense
network across a step decay of the learning rate."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import api
from acn_tf.config.schema import ExperimentConfig, OptimizationConfig
from acn_tf.run import builders, optimizers
from tiny_models import dense_classifier

MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
# The step decay inside the steps: lr_decay_epochs=(1,) at 3 steps per epoch, so epoch
# 0's three steps at 0.1 and epoch 1's at 0.01, as PyTorch's MultiStepLR([1]) per epoch.
STEPS_PER_EPOCH = 3
RATES = (0.1, 0.1, 0.1, 0.01, 0.01, 0.01)


def _optimizer(mode: str, nesterov: bool = True):
  """The classifiers' optimizer as run.py and the API build it."""
  return builders.classifier_optimizer(OptimizationConfig(
      learning_rate=0.1, momentum=MOMENTUM, nesterov=nesterov, weight_decay=WEIGHT_DECAY,
      weight_decay_mode=mode, lr_schedule="step", lr_decay_epochs=(1,),
      lr_decay_factor=0.1), STEPS_PER_EPOCH)


def _network(seed: int = 0) -> keras.Model:
  keras.utils.set_random_seed(seed)
  images = keras.Input((6, 6, 2))
  x = keras.layers.Conv2D(3, 3, use_bias=True)(images)
  x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(images, keras.layers.Dense(4)(x))


def _batches():
  generator = np.random.default_rng(1)
  return [(generator.normal(size=(8, 6, 6, 2)).astype(np.float32),
           generator.integers(0, 4, size=8)) for _ in RATES]


def _gradients(network, weights, batch):
  """d CE / d weights of `network` at `weights` (numpy), batch moments as in training."""
  for variable, value in zip(network.trainable_variables, weights):
    variable.assign(value)
  images, labels = batch
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        labels, network(images, training=True), from_logits=True))
  return [gradient.numpy() for gradient in tape.gradient(loss, network.trainable_variables)]


def _trained(optimizer):
  """The network's trainable weights after one optimizer step per batch."""
  network = _network()
  for images, labels in _batches():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
          labels, network(images, training=True), from_logits=True))
    variables = network.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)
  assert int(optimizer.iterations) == len(RATES)
  return [variable.numpy() for variable in network.trainable_variables]


def pytorch_sgd(nesterov: bool):
  """torch.optim.SGD's documented update (dampening 0), gradients from a twin network."""
  twin = _network()
  weights = [variable.numpy().astype(np.float64) for variable in twin.trainable_variables]
  buffers = [None] * len(weights)
  for step, (rate, batch) in enumerate(zip(RATES, _batches())):
    gradients = _gradients(twin, weights, batch)
    for k, (weight, gradient) in enumerate(zip(weights, gradients)):
      gradient = gradient + WEIGHT_DECAY * weight
      buffers[k] = gradient if step == 0 else MOMENTUM * buffers[k] + gradient
      direction = gradient + MOMENTUM * buffers[k] if nesterov else buffers[k]
      weights[k] = weight - rate * direction
  return weights


def keras_sgd(nesterov: bool):
  """Keras' SGD as its source writes it: the decoupled decay w -= lr wd w first, then
  m <- mu m - lr g and w <- w + mu m - lr g (Nesterov) or w <- w + m, g taken at the
  weights before the step."""
  twin = _network()
  weights = [variable.numpy().astype(np.float64) for variable in twin.trainable_variables]
  velocities = [np.zeros_like(weight) for weight in weights]
  for rate, batch in zip(RATES, _batches()):
    gradients = _gradients(twin, weights, batch)
    for k, (weight, gradient) in enumerate(zip(weights, gradients)):
      weight = weight - rate * WEIGHT_DECAY * weight
      velocities[k] = MOMENTUM * velocities[k] - rate * gradient
      step = MOMENTUM * velocities[k] - rate * gradient if nesterov else velocities[k]
      weights[k] = weight + step
  return weights


def _assert_all_close(trained, reference):
  assert len(trained) == len(reference) == 6  # Conv kernel, bias; BN gamma, beta; dense.
  for got, want in zip(trained, reference):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_each_step_takes_its_epochs_rate():
  """The rate the optimizer applies at each step (measured on a unit gradient without
  momentum), against the rates by epoch: the drop at epoch 1 starts with its first step."""
  optimizer = builders.classifier_optimizer(OptimizationConfig(
      learning_rate=0.1, momentum=0.0, weight_decay=0.0, lr_schedule="step",
      lr_decay_epochs=(1,), lr_decay_factor=0.1), STEPS_PER_EPOCH)
  weight = keras.Variable(np.zeros(1, np.float32))
  applied = []
  for _ in RATES:
    before = float(weight.numpy()[0])
    optimizer.apply([tf.ones(1)], [weight])
    applied.append(before - float(weight.numpy()[0]))
  assert applied == pytest.approx(RATES, rel=1e-5)


@pytest.mark.parametrize("nesterov", [True, False])
def test_coupled_sgd_is_pytorchs_update_across_a_step_decay(nesterov):
  optimizer = _optimizer("coupled", nesterov)
  assert type(optimizer) is optimizers.PyTorchSGD
  _assert_all_close(_trained(optimizer), pytorch_sgd(nesterov))


def test_the_step_decay_separates_pytorchs_momentum_rule_from_keras():
  """Across the boundary Keras' buffer still holds steps at the old rate, so the test
  above tells PyTorch's rule from Keras' momentum rule with L2 added to its gradient."""
  class KerasMomentumWithL2(keras.optimizers.SGD):
    def update_step(self, gradient, variable, learning_rate):
      super().update_step(gradient + WEIGHT_DECAY * variable, variable, learning_rate)

  keras_rule = KerasMomentumWithL2(_optimizer("coupled")._learning_rate, momentum=MOMENTUM,
                                   nesterov=True)
  trained = _trained(keras_rule)
  reference = pytorch_sgd(nesterov=True)
  assert max(np.max(np.abs(a - b)) for a, b in zip(trained, reference)) > 1e-4


@pytest.mark.parametrize("nesterov", [True, False])
def test_decoupled_mode_is_keras_sgd(nesterov):
  optimizer = _optimizer("decoupled", nesterov)
  assert type(optimizer) is keras.optimizers.SGD
  _assert_all_close(_trained(optimizer), keras_sgd(nesterov))


def test_steady_state_shrink_of_the_two_modes():
  """With no loss gradient the coupled decay, once the buffer is full, shrinks w by
  lr wd / (1 - mu) per step to first order (Nesterov: wd w + mu b, b -> wd w / (1 - mu));
  the decoupled one by lr wd: 10x less at momentum 0.9."""
  rate = 0.1
  shrinks = {}
  for mode in ("coupled", "decoupled"):
    optimizer = builders.classifier_optimizer(OptimizationConfig(
        learning_rate=rate, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY,
        weight_decay_mode=mode, lr_schedule="constant"), steps=1)
    weight = keras.Variable(np.ones(3, np.float32))
    for _ in range(200):
      before = weight.numpy().astype(np.float64)
      optimizer.apply([tf.zeros(3)], [weight])
    shrinks[mode] = float(np.mean(1.0 - weight.numpy() / before))
  # Exactly: w_t = r^t w_0 makes b_t = wd w_t / (1 - mu / r), so r solves
  # r = 1 - lr wd (1 + mu / (1 - mu / r)); 0.4% above the first-order lr wd / (1 - mu).
  ratio = 1.0
  for _ in range(100):
    ratio = 1.0 - rate * WEIGHT_DECAY * (1.0 + MOMENTUM / (1.0 - MOMENTUM / ratio))
  assert shrinks["coupled"] == pytest.approx(1.0 - ratio, rel=1e-3)
  assert shrinks["coupled"] == pytest.approx(rate * WEIGHT_DECAY / (1 - MOMENTUM), rel=1e-2)
  assert shrinks["decoupled"] == pytest.approx(rate * WEIGHT_DECAY, rel=1e-3)


def test_run_and_api_give_the_classifiers_the_coupled_optimizer():
  config = api.config(method="dml", learning_rate=0.2, lr_schedule="step",
                      lr_decay_epochs=(2,), epochs=3)
  assert config.optimization.weight_decay_mode == "coupled"
  assert ExperimentConfig.from_fields().optimization.weight_decay_mode == "coupled"
  model = api.build_model([dense_classifier(0), dense_classifier(1)], config,
                          steps_per_epoch=5)
  assert type(model.optimizer) is optimizers.PyTorchSGD
  assert float(model.optimizer.weight_decay) == pytest.approx(5e-4)
  assert model.optimizer.nesterov and float(model.optimizer.momentum) == pytest.approx(0.9)
  decoupled = api.build_model([dense_classifier(0), dense_classifier(1)],
                              api.config(method="dml", weight_decay_mode="decoupled"),
                              steps_per_epoch=5)
  assert type(decoupled.optimizer) is keras.optimizers.SGD


def test_the_optimizer_round_trips_through_keras_serialization():
  optimizer = _optimizer("coupled")
  restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
  assert type(restored) is optimizers.PyTorchSGD
  assert (restored.nesterov, float(restored.momentum), restored.weight_decay) == (
      True, pytest.approx(MOMENTUM), pytest.approx(WEIGHT_DECAY))
