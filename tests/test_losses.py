"""Losses against independent numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from acn_tf.method import losses


def _softmax(logits, temperature=1.0):
  scaled = logits / temperature
  scaled = scaled - scaled.max(axis=-1, keepdims=True)
  exponent = np.exp(scaled)
  return exponent / exponent.sum(axis=-1, keepdims=True)


def _kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def _js(p, q):
  m = 0.5 * (p + q)
  return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


@pytest.fixture
def logits():
  rng = np.random.default_rng(0)
  return [rng.normal(scale=2.0, size=(6, 5)).astype(np.float32) for _ in range(3)]


def test_kl_divergence_matches_numpy(logits):
  p, q = _softmax(logits[0]), _softmax(logits[1])
  np.testing.assert_allclose(losses.kl_divergence(p, q).numpy(), _kl(p, q), rtol=1e-5)


def test_kl_of_identical_distributions_is_zero(logits):
  p = _softmax(logits[0])
  np.testing.assert_allclose(losses.kl_divergence(p, p).numpy(), 0.0, atol=1e-6)


def test_js_divergence_matches_numpy_and_is_bounded(logits):
  p, q = _softmax(logits[0], 0.3), _softmax(logits[1], 0.3)
  value = losses.js_divergence(p, q).numpy()
  np.testing.assert_allclose(value, _js(p, q), rtol=1e-5)
  np.testing.assert_allclose(value, losses.js_divergence(q, p).numpy(), rtol=1e-6)
  assert np.all(value <= np.log(2.0) + 1e-6)
  disjoint = losses.js_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])).numpy()
  np.testing.assert_allclose(disjoint, np.log(2.0), rtol=1e-4)


def _total_variation(p, q):
  return 0.5 * np.abs(p - q).sum(axis=-1)


@pytest.mark.parametrize("kind,reference", [("js", _js),
                                             ("total_variation", _total_variation)])
def test_pairwise_divergence_is_mean_over_pairs(logits, kind, reference):
  probabilities = [_softmax(z, 2.0) for z in logits]
  expected = np.mean([reference(probabilities[i], probabilities[j])
                      for i, j in ((0, 1), (0, 2), (1, 2))], axis=0)
  value = losses.pairwise_divergence(probabilities, kind).numpy()
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_total_variation_gradient_does_not_vanish_where_peers_agree():
  """JS's gradient shrinks with the gap between the peers (quadratic growth);
  total variation's stays of the same size: the reason it is an option for Phase A."""
  base = np.array([[1.0, 0.2, -0.5, 0.0]], np.float32)
  direction = np.array([[1.0, -1.0, 0.5, 0.0]], np.float32)

  def gradient_size(kind, gap):
    moved = tf.Variable(base + gap * direction)
    with tf.GradientTape() as tape:
      value = losses.pairwise_divergence(
          [tf.nn.softmax(base), tf.nn.softmax(moved)], kind)
    return float(tf.norm(tape.gradient(value, moved)))

  js_ratio = gradient_size("js", 1e-3) / gradient_size("js", 1e-1)
  tv_ratio = gradient_size("total_variation", 1e-3) / gradient_size("total_variation", 1e-1)
  assert js_ratio < 0.05  # About 1e-3 / 1e-1: linear in the gap.
  assert 0.5 < tv_ratio < 2.0





def test_reported_divergence_is_js_of_softmax_at_temperature_one(logits):
  probabilities = [_softmax(z) for z in logits[:2]]
  np.testing.assert_allclose(
      losses.reported_divergence([tf.constant(z) for z in logits[:2]]).numpy(),
      _js(*probabilities), rtol=1e-5)


def test_pairwise_divergence_of_one_classifier_is_zero(logits):
  value = losses.pairwise_divergence([_softmax(logits[0])]).numpy()
  np.testing.assert_array_equal(value, np.zeros(6))


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_peer_distillation_is_t_squared_mean_kl_to_peers(logits, temperature):
  terms = losses.peer_distillation([tf.constant(z) for z in logits], temperature)
  probabilities = [_softmax(z, temperature) for z in logits]
  for i in range(3):
    expected = temperature**2 * np.mean(
        [_kl(probabilities[j], probabilities[i]) for j in range(3) if j != i], axis=0)
    np.testing.assert_allclose(terms[i].numpy(), expected, rtol=1e-5)


def test_peer_distillation_gradient_reaches_only_the_student(logits):
  tensors = [tf.Variable(z) for z in logits[:2]]
  with tf.GradientTape() as tape:
    term = losses.peer_distillation(tensors, 2.0)[0]
    total = tf.reduce_sum(term)
  student, peer = tape.gradient(total, tensors)
  assert peer is None
  assert np.abs(student.numpy()).sum() > 0


def test_codistillation_losses_add_cross_entropy(logits):
  labels = np.array([0, 1, 2, 3, 4, 0])
  result = losses.codistillation_losses([tf.constant(z) for z in logits[:2]], labels,
                                        temperature=2.0, kd_weight=0.5, ce_weight=3.0)
  p = [_softmax(z) for z in logits[:2]]
  pt = [_softmax(z, 2.0) for z in logits[:2]]
  for i, j in ((0, 1), (1, 0)):
    ce = -np.log(p[i][np.arange(6), labels])
    expected = 3.0 * ce + 0.5 * 4.0 * _kl(pt[j], pt[i])
    np.testing.assert_allclose(result[i].numpy(), expected, rtol=1e-5)


def test_ensemble_cross_entropy_uses_mean_probabilities(logits):
  labels = np.array([4, 3, 2, 1, 0, 0])
  ensemble = np.mean([_softmax(z) for z in logits], axis=0)
  expected = -np.log(ensemble[np.arange(6), labels])
  value = losses.ensemble_cross_entropy([tf.constant(z) for z in logits], labels)
  np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5)


def test_gan_losses_match_binary_cross_entropy():
  real = np.array([[2.0], [-1.0], [0.3]], np.float32)
  fake = np.array([[-0.5], [1.5], [0.0]], np.float32)
  sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
  expected_d = (-np.log(sigmoid(real)) - np.log(1.0 - sigmoid(fake))).ravel()
  np.testing.assert_allclose(losses.discriminator_loss(real, fake).numpy(), expected_d,
                             rtol=1e-5)
  expected_g = -np.log(sigmoid(fake)).ravel()
  np.testing.assert_allclose(losses.generator_adversarial_loss(fake).numpy(), expected_g,
                             rtol=1e-5)


def test_global_mean_without_strategy_is_weighted_mean():
  values = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
  weights = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
  np.testing.assert_allclose(losses.global_mean(values, weights).numpy(), 8.0 / 3.0)
  np.testing.assert_allclose(losses.global_mean(values, np.zeros(4)).numpy(), 0.0)


def test_global_mean_shares_add_up_to_global_mean_on_two_replicas():
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  values = np.arange(8, dtype=np.float32)
  weights = np.array([1, 1, 0, 1, 0, 0, 0, 1], np.float32)

  def replica_share(replica_values, replica_weights):
    return losses.global_mean(replica_values, replica_weights)

  def split(array):
    return lambda context: array[4 * context.replica_id_in_sync_group:
                                 4 * (context.replica_id_in_sync_group + 1)]

  shares = strategy.run(replica_share, args=(
      strategy.experimental_distribute_values_from_function(split(values)),
      strategy.experimental_distribute_values_from_function(split(weights))))
  total = strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None).numpy()
  expected = np.sum(values * weights) / np.sum(weights)
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  # The local share alone is not the mean: the replica-scaling really happened.
  local = [v.numpy() for v in strategy.experimental_local_results(shares)]
  assert not np.isclose(local[0], expected)


# A confidently wrong student: 30 units (times T) between its top logit and the
# teacher's class, so its tempered probability of that class is e^-30 ~ 1e-13, far
# below the 1e-7 a clip would hold it at.
def _confidently_wrong(temperature):
  student = np.array([[30.0, 0.0, 0.0, -5.0], [0.0, 30.0, 2.0, 0.0]]) * temperature
  teacher = np.array([[0.0, 30.0, 0.0, 0.0], [1.0, 0.0, 0.0, 30.0]]) * temperature
  return student.astype(np.float32), teacher.astype(np.float32)


def _log_softmax(logits, temperature=1.0):
  scaled = np.asarray(logits, np.float64) / temperature
  scaled = scaled - scaled.max(axis=-1, keepdims=True)
  return scaled - np.log(np.exp(scaled).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_gradient_is_exact_where_the_student_is_confidently_wrong(temperature):
  """d/dz_i of T^2 KL(p_j^T || p_i^T) is T (p_i^T - p_j^T): -1/T from each log p_i^T,
  times T^2. The clipped logarithm's gradient vanishes below 1e-7, where the student is
  wrong, so it gave about zero here instead of about T per example."""
  student, teacher = _confidently_wrong(temperature)
  student_variable, teacher_variable = tf.Variable(student), tf.Variable(teacher)
  with tf.GradientTape() as tape:
    terms = losses.peer_distillation([student_variable, teacher_variable], temperature)
  gradient = tape.gradient(terms[0], student_variable).numpy()
  assert np.exp(_log_softmax(student, temperature)).min() < 1e-12
  expected = temperature * (_softmax(student, temperature) - _softmax(teacher, temperature))
  np.testing.assert_allclose(gradient, expected, rtol=0, atol=1e-6)
  # The value is exact too: T^2 (log p_j - log p_i) summed under p_j, about 30 T^2,
  # where the clip gave T^2 (-log 1e-7) = 16.1 T^2.
  p_teacher = _softmax(teacher, temperature)
  expected_value = temperature**2 * np.sum(
      p_teacher * (_log_softmax(teacher, temperature) - _log_softmax(student, temperature)),
      axis=-1)
  np.testing.assert_allclose(terms[0].numpy(), expected_value, rtol=1e-6)


def _float64_reference(function, logits):
  """`function` of float64 softmax probabilities with plain logs (no clip needed in
  float64 at e^-30), and its gradient to the first logits, by autodiff."""
  variables = [tf.Variable(np.asarray(z, np.float64)) for z in logits]
  with tf.GradientTape() as tape:
    value = function([tf.nn.softmax(v) for v in variables])
    total = tf.reduce_sum(value)
  return value.numpy(), tape.gradient(total, variables[0]).numpy()


def _naive_js(probabilities):
  first, second = probabilities
  middle = 0.5 * (first + second)
  kl = lambda p, q: tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), axis=-1)
  return 0.5 * kl(first, middle) + 0.5 * kl(second, middle)


def test_js_of_logits_is_exact_for_confident_classifiers():
  student, teacher = _confidently_wrong(1.0)
  kind = "js"
  expected_value, expected_gradient = _float64_reference(_naive_js, [student, teacher])
  variables = [tf.Variable(student), tf.Variable(teacher)]
  with tf.GradientTape() as tape:
    value = losses.divergence(variables, kind, 1.0)
    total = tf.reduce_sum(value)
  gradient = tape.gradient(total, variables[0]).numpy()
  assert value.dtype == tf.float32 and value.shape == (2,)
  np.testing.assert_allclose(value.numpy(), expected_value, rtol=1e-5)
  # JS saturates at log 2 here (its true gradient is ~1e-12).
  np.testing.assert_allclose(gradient, expected_gradient, rtol=0,
                             atol=max(1e-6, 1e-5 * np.abs(expected_gradient).max()))


def test_ensemble_cross_entropy_is_exact_when_every_classifier_is_wrong():
  student, teacher = _confidently_wrong(1.0)
  labels = np.array([2, 0])  # Near e^-30 under both classifiers.

  def naive(probabilities):
    mean = 0.5 * (probabilities[0] + probabilities[1])
    return -tf.math.log(tf.gather(mean, labels, axis=-1, batch_dims=1))

  expected_value, expected_gradient = _float64_reference(naive, [student, teacher])
  variables = [tf.Variable(student), tf.Variable(teacher)]
  with tf.GradientTape() as tape:
    value = losses.ensemble_cross_entropy(variables, labels)
    total = tf.reduce_sum(value)
  gradient = tape.gradient(total, variables[0]).numpy()
  assert np.all(expected_value > 29)  # The clip at 1e-7 said 16.1.
  np.testing.assert_allclose(value.numpy(), expected_value, rtol=1e-6)
  np.testing.assert_allclose(gradient, expected_gradient, rtol=0, atol=1e-6)
