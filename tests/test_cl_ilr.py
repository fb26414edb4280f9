"""CL-ILR (acn_tf/method/cl_ilr.py): its loss against a numpy transcription, its
gradient by hand, and the model's step with the trunk's gradient rescaled."""

import keras
import numpy as np
import tensorflow as tf

from acn_tf.config.schema import BranchedConfig
from acn_tf.method.cl_ilr import CollaborativeLearning, cl_ilr_losses
from acn_tf.networks import branched

CLASSES = 5


def _softmax(z, temperature=1.0):
  z = np.asarray(z, np.float64) / temperature
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def numpy_cl_ilr_loss(logits, labels, temperature, hard_weight):
  """Σ_h β CE(z_h, y) + (1 − β) T² KL(t_h ‖ p_h^T), t_h the softmax at T of the
  mean logits of the other heads, per example."""
  rows = np.arange(len(labels))
  total = np.zeros(len(labels))
  for h, z in enumerate(logits):
    others = np.mean([logits[j] for j in range(len(logits)) if j != h], axis=0)
    target = _softmax(others, temperature)
    student = _softmax(z, temperature)
    total += (hard_weight * -np.log(_softmax(z)[rows, labels])
              + (1 - hard_weight) * temperature**2
              * np.sum(target * np.log(target / student), axis=-1))
  return total


def _logits(seed, heads=4, batch=6):
  rng = np.random.default_rng(seed)
  return ([rng.normal(scale=2.0, size=(batch, CLASSES)).astype(np.float32)
           for _ in range(heads)], rng.integers(0, CLASSES, batch))


def test_cl_ilr_loss_matches_numpy():
  for seed, heads, temperature, beta in ((0, 4, 2.0, 0.5), (1, 2, 1.0, 0.3), (2, 3, 3.0, 1.0)):
    logits, labels = _logits(seed, heads)
    terms = cl_ilr_losses([tf.constant(z) for z in logits], labels, temperature, beta)
    np.testing.assert_allclose(tf.add_n(terms).numpy(),
                               numpy_cl_ilr_loss(logits, labels, temperature, beta), rtol=1e-5)


def test_each_heads_gradient_is_its_own_by_hand():
  """d/dz_h = β (p_h − y) + (1 − β) T (p_h^T − t_h): the consensus targets are
  constants, so no head is pulled towards another through the other's target."""
  logits, labels = _logits(3, heads=3)
  temperature, beta = 2.0, 0.5
  variables = [tf.Variable(z) for z in logits]
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(tf.add_n(cl_ilr_losses(variables, labels, temperature, beta)))
  onehot = np.eye(CLASSES)[labels]
  for h, gradient in enumerate(tape.gradient(total, variables)):
    target = _softmax(np.mean([logits[j] for j in range(3) if j != h], axis=0), temperature)
    expected = (beta * (_softmax(logits[h]) - onehot)
                + (1 - beta) * temperature * (_softmax(logits[h], temperature) - target))
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-4, atol=1e-6)


def _model(settings=BranchedConfig()):
  network = branched.build_branched_network("small_cnn", (8, 8, 1), CLASSES, [0.5], [0.08],
                                            branches=4, scale_trunk_gradient=True, seed=2)
  model = CollaborativeLearning(network, 4)
  model.compile(keras.optimizers.SGD(0.05), branched=settings)
  model(tf.zeros((1, 8, 8, 1)))
  model.build_optimizers()
  return model


def test_evaluation_reports_the_loss_and_the_mean_softmax_ensemble():
  settings = BranchedConfig(cl_ilr_temperature=3.0, cl_ilr_hard_weight=0.25)
  model = _model(settings)
  rng = np.random.default_rng(0)
  images = rng.random((16, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, CLASSES, 16)
  logs = model.evaluate(images, labels, batch_size=16, verbose=0, return_dict=True)
  logits = [z.numpy() for z in model(images, training=False)]
  assert len(logits) == 4
  np.testing.assert_allclose(logs["loss"], numpy_cl_ilr_loss(logits, labels, 3.0, 0.25).mean(),
                             rtol=1e-4)
  ensemble = np.mean([_softmax(z) for z in logits], axis=0)
  assert logs["ensemble_top1"] == np.mean(ensemble.argmax(-1) == labels)


def test_a_step_applies_the_rescaled_gradient_to_the_trunk():
  """Plain SGD without momentum: each variable moves by −lr × its gradient, and the
  trunk's gradient is the heads' summed gradient divided by 4 (a second model with
  the same weights and no rescaling gives the unscaled one)."""
  model = _model()
  plain = branched.build_branched_network("small_cnn", (8, 8, 1), CLASSES, [0.5], [0.08],
                                          branches=4, scale_trunk_gradient=False, seed=2)
  rng = np.random.default_rng(4)
  images = rng.random((16, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, CLASSES, 16)
  with tf.GradientTape() as tape:
    total = tf.add_n([tf.reduce_mean(term) for term in cl_ilr_losses(
        plain(images, training=True), labels, 2.0, 0.5)])
  gradients = dict(zip([v.path for v in plain.trainable_variables],
                       tape.gradient(total, plain.trainable_variables)))
  before = {v.path: v.numpy() for v in model.network.trainable_variables}
  model.train_on_batch(images, labels)
  for variable in model.network.trainable_variables:
    factor = 1.0 if variable.path.startswith("branch") else 0.25
    np.testing.assert_allclose(
        variable.numpy(), before[variable.path] - 0.05 * factor * gradients[variable.path],
        rtol=1e-4, atol=1e-6, err_msg=variable.path)
