"""ONE (acn_tf/method/one.py): its loss against a numpy transcription of the paper's
equations, its gradient by hand, and one training step of the model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.config.schema import BranchedConfig
from acn_tf.method.one import OnTheFlyNativeEnsemble, one_losses
from acn_tf.networks import branched

CLASSES = 5


def _softmax(z, temperature=1.0):
  z = np.asarray(z, np.float64) / temperature
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def numpy_one_loss(branch_logits, ensemble_logits, labels, temperature):
  """ONE's overall loss (Lan et al. 2018: the branches' and the teacher's
  cross-entropies and T² times the KL from the teacher to each branch), per example:
  Σ_i CE(z_i, y) + CE(z_e, y) + T² Σ_i Σ_k p_e,k^T log(p_e,k^T / p_i,k^T)."""
  rows = np.arange(len(labels))
  total = -np.log(_softmax(ensemble_logits)[rows, labels])
  teacher = _softmax(ensemble_logits, temperature)
  for z in branch_logits:
    total -= np.log(_softmax(z)[rows, labels])
    student = _softmax(z, temperature)
    total += temperature**2 * np.sum(teacher * np.log(teacher / student), axis=-1)
  return total


def _logits(seed, branches=3, batch=7):
  rng = np.random.default_rng(seed)
  branch = [rng.normal(scale=2.0, size=(batch, CLASSES)).astype(np.float32)
            for _ in range(branches)]
  gate = _softmax(rng.normal(size=(batch, branches)))
  ensemble = sum(gate[:, i:i + 1] * branch[i] for i in range(branches)).astype(np.float32)
  return branch, ensemble, rng.integers(0, CLASSES, batch)


def test_one_loss_matches_the_papers_equations_in_numpy():
  for seed, temperature in ((0, 3.0), (1, 1.0), (2, 4.5)):
    branch, ensemble, labels = _logits(seed)
    terms = one_losses([tf.constant(z) for z in branch], tf.constant(ensemble), labels,
                       temperature)
    assert len(terms) == 4
    np.testing.assert_allclose(tf.add_n(terms).numpy(),
                               numpy_one_loss(branch, ensemble, labels, temperature),
                               rtol=1e-5)


def test_the_teacher_is_a_constant_in_the_distillation_term():
  """By hand: d/dz_i = (p_i − y) + T (p_i^T − p_e^T) for a branch, and
  d/dz_e = p_e − y: the KL terms send nothing to the teacher (the public code
  detaches its soft targets)."""
  branch, ensemble, labels = _logits(3)
  temperature = 3.0
  variables = [tf.Variable(z) for z in branch] + [tf.Variable(ensemble)]
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(tf.add_n(one_losses(variables[:3], variables[3], labels,
                                              temperature)))
  gradients = tape.gradient(total, variables)
  onehot = np.eye(CLASSES)[labels]
  teacher = _softmax(ensemble, temperature)
  for z, gradient in zip(branch, gradients[:3]):
    expected = _softmax(z) - onehot + temperature * (_softmax(z, temperature) - teacher)
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(gradients[3].numpy(), _softmax(ensemble) - onehot,
                             rtol=1e-4, atol=1e-6)


def _model(temperature=3.0):
  network = branched.build_branched_network("small_cnn", (8, 8, 1), CLASSES, [0.5], [0.08],
                                            branches=3, with_gate=True, seed=1)
  model = OnTheFlyNativeEnsemble(network, 3)
  model.compile(keras.optimizers.SGD(0.05), branched=BranchedConfig(one_temperature=temperature))
  model(tf.zeros((1, 8, 8, 1)))
  model.build_optimizers()
  return model


def test_evaluation_reports_the_loss_the_branches_and_the_gated_teacher():
  model = _model(temperature=2.0)
  rng = np.random.default_rng(0)
  images = rng.random((16, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, CLASSES, 16)
  logs = model.evaluate(images, labels, batch_size=16, verbose=0, return_dict=True)
  outputs = [o.numpy() for o in model(images, training=False)]
  expected = numpy_one_loss(outputs[:3], outputs[3], labels, 2.0).mean()
  np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
  for i in range(3):
    assert logs[f"c{i}_top1"] == np.mean(outputs[i].argmax(-1) == labels)
  assert logs["ensemble_top1"] == np.mean(outputs[3].argmax(-1) == labels)


def test_a_training_step_descends_the_loss_and_moves_the_gate():
  model = _model()
  rng = np.random.default_rng(1)
  images = rng.random((32, 8, 8, 1), dtype=np.float32)
  labels = rng.integers(0, CLASSES, 32)
  before = {v.path: v.numpy() for v in model.network.trainable_variables}
  first = model.evaluate(images, labels, batch_size=32, verbose=0, return_dict=True)["loss"]
  for _ in range(5):
    model.train_on_batch(images, labels)
  after = model.evaluate(images, labels, batch_size=32, verbose=0, return_dict=True)["loss"]
  assert after < first
  after_values = {v.path: v.numpy() for v in model.network.trainable_variables}
  moved = {path for path, value in before.items() if not np.allclose(value, after_values[path])}
  assert "gate_linear/kernel" in moved and any(p.startswith("branch2_") for p in moved)


def test_the_rampup_is_the_public_codes_sigmoid():
  """The public code's weight at epoch e of E: exp(−5 (1 − e / E)²), then 1."""
  from acn_tf.method.one import rampup_weight
  for epoch, expected in ((0, np.exp(-5.0)), (40, np.exp(-1.25)), (60, np.exp(-0.3125)),
                          (80, 1.0), (200, 1.0)):
    np.testing.assert_allclose(float(rampup_weight(epoch, 80)), expected, rtol=1e-6)
  assert float(rampup_weight(0, 0)) == 1.0  # No ramp-up: the paper's loss.


def test_a_rampup_weighs_the_distillation_terms_by_the_epoch_of_the_step():
  branch, ensemble, labels = _logits(5)
  weighted = one_losses([tf.constant(z) for z in branch], tf.constant(ensemble), labels,
                        3.0, distillation_weight=0.25)
  rows = np.arange(len(labels))
  ce = lambda z: -np.log(_softmax(z)[rows, labels])
  full = numpy_one_loss(branch, ensemble, labels, 3.0)
  distillation = full - ce(ensemble) - sum(ce(z) for z in branch)
  np.testing.assert_allclose(tf.add_n(weighted).numpy(),
                             full - 0.75 * distillation, rtol=1e-5)
  network = branched.build_branched_network("small_cnn", (8, 8, 1), CLASSES, [0.5], [0.08],
                                            branches=2, with_gate=True, seed=1)
  model = OnTheFlyNativeEnsemble(network, 2)
  model.compile(keras.optimizers.SGD(0.0), branched=BranchedConfig(one_rampup_epochs=4),
                steps_per_epoch=3)
  model(tf.zeros((1, 8, 8, 1)))
  model.build_optimizers()
  for iterations, epoch in ((0, 0), (2, 0), (3, 1), (11, 3), (12, 4), (40, 4)):
    model.optimizer.iterations.assign(iterations)
    np.testing.assert_allclose(float(model.distillation_weight()),
                               np.exp(-5.0 * (1 - epoch / 4) ** 2), rtol=1e-6)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    model.compile(keras.optimizers.SGD(0.1), branched=BranchedConfig(one_rampup_epochs=4))
