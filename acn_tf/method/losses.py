"""Losses and divergences of docs/METHOD.md, as pure functions of tensors.

Every function returns per-example values (shape [batch]); reducing them to a scalar
is the model's job, because the right reduction depends on the number of replicas
(see `global_mean`).
"""

import math
from typing import Sequence

import tensorflow as tf

# Probabilities given as such (not as logits) are clipped away from zero before
# their logs, so that a confident peer (p -> 0 for some class) gives a finite KL
# rather than inf * 0 = nan. Terms computed from logits take log-softmax instead,
# which is exact: no clip, whose zero gradient would silence the distillation
# term exactly where a classifier is confidently wrong.
_EPSILON = 1e-7
_LOG_HALF = math.log(0.5)


def tempered_probabilities(logits: tf.Tensor, temperature: float) -> tf.Tensor:
  """p^T = softmax(z / T), computed in float32 whatever the logits' dtype."""
  return tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)


def tempered_log_probabilities(logits: tf.Tensor, temperature: float) -> tf.Tensor:
  """log p^T = log_softmax(z / T) in float32: finite and exact for any finite logits."""
  return tf.nn.log_softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)


def _clipped_log(probabilities: tf.Tensor) -> tf.Tensor:
  return tf.math.log(tf.clip_by_value(tf.cast(probabilities, tf.float32), _EPSILON, 1.0))


def kl_divergence_from_logs(target: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
  """KL(target || prediction) per example, for rows of log-probabilities."""
  return tf.reduce_sum(tf.exp(target) * (target - prediction), axis=-1)


def js_divergence_from_logs(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
  """Jensen-Shannon divergence per example, for rows of log-probabilities: the
  mixture's log, log(0.5 p + 0.5 q), is a logsumexp of theirs, so it stays exact
  where p and q are both tiny."""
  log_middle = tf.reduce_logsumexp(tf.stack([first, second]), axis=0) + _LOG_HALF
  return (0.5 * kl_divergence_from_logs(first, log_middle)
          + 0.5 * kl_divergence_from_logs(second, log_middle))



def kl_divergence(target: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
  """KL(target || prediction) per example, for probability rows (clipped at 1e-7)."""
  return kl_divergence_from_logs(_clipped_log(target), _clipped_log(prediction))


def js_divergence(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
  """Jensen-Shannon divergence per example (natural log, bounded by log 2), for
  probability rows (clipped at 1e-7)."""
  return js_divergence_from_logs(_clipped_log(first), _clipped_log(second))


def total_variation_distance(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
  """0.5 * sum_k |a_k - b_k| per example: bounded by 1, and unlike JS or KL its
  gradient does not vanish where the two distributions agree."""
  return 0.5 * tf.reduce_sum(tf.abs(first - second), axis=-1)


_DIVERGENCES = {"js": js_divergence, "total_variation": total_variation_distance}


def _mean_over_pairs(rows, divergence) -> tf.Tensor:
  """mean over pairs i < j of divergence(rows[i], rows[j]); zero with one row."""
  pairs = [divergence(rows[i], rows[j])
           for i in range(len(rows)) for j in range(i + 1, len(rows))]
  if not pairs:
    return tf.zeros(tf.shape(rows[0])[:1], tf.float32)
  return tf.add_n(pairs) / float(len(pairs))


def pairwise_divergence(probabilities, kind: str = "js") -> tf.Tensor:
  """Div(x): mean over pairs i < j of the divergence of p_i and p_j, per example.

  Args:
    probabilities: a list of n >= 2 tensors [batch, classes].
    kind: "js" (default) or "total_variation".
  Returns:
    [batch] tensor. With one classifier there is no pair and the result is zero.
  For the classifiers' own logits `divergence` is exact (no clipping at 1e-7).
  """
  return _mean_over_pairs(list(probabilities), _DIVERGENCES[kind])


def divergence(logits, kind: str = "js", temperature: float = 1.0) -> tf.Tensor:
  """The group's disagreement per example, from its logits: the one definition
  that the generator's loss, the search and every metric use.

  "js" (the spec's) and "total_variation" (the divergence_seeking preset's,
  whose gradient does not vanish where the peers agree) compare the tempered
  probabilities of each pair; JS from log-softmax, exact where a probability is
  below the 1e-7 that `pairwise_divergence` clips at.
  """
  if kind == "js":  # From log-softmax: exact, with no clip.
    return _mean_over_pairs([tempered_log_probabilities(z, temperature) for z in logits],
                            js_divergence_from_logs)
  return pairwise_divergence([tempered_probabilities(z, temperature) for z in logits], kind)


def reported_divergence(logits) -> tf.Tensor:
  """The Div that every metric reports, per example: the spec's mean pairwise JS
  at temperature 1, whatever Phase A optimises, so that Div on real images, on
  x̃0 and on x̃ are one comparable quantity."""
  return divergence(logits, "js", 1.0)


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """CE(z, y) per example, in float32."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def peer_distillation(logits, temperature: float):
  """T^2 * mean_{j != i} KL(sg(p_j^T) || p_i^T) for each classifier i (the DML term).

  Returns a list of n per-example tensors. The stop-gradient on the peer makes the
  sum over i of these terms have, for each classifier's weights, exactly that
  classifier's own gradient, so all classifiers can update in one step. Computed
  from log-softmax, so the gradient to z_i is exactly T (p_i^T - mean_j p_j^T),
  also where p_i^T is below any clip (a confidently wrong classifier).
  """
  log_probabilities = [tempered_log_probabilities(z, temperature) for z in logits]
  targets = [tf.stop_gradient(p) for p in log_probabilities]
  count = len(logits)
  terms = []
  for i in range(count):
    if count == 1:
      terms.append(tf.zeros_like(log_probabilities[i][:, 0]))
      continue
    peers = [kl_divergence_from_logs(targets[j], log_probabilities[i])
             for j in range(count) if j != i]
    terms.append(temperature**2 * tf.add_n(peers) / float(count - 1))
  return terms


def codistillation_losses(logits, labels, temperature: float, kd_weight: float,
                          ce_weight: float = 1.0):
  """Phase B on one batch: ce_weight * CE(z_i, y) + kd_weight * DML term.

  On the real batch ce_weight = 1; on the divergent batch the spec weighs the
  terms as (KL term + adv_ce_weight * CE), i.e. kd_weight = 1, ce_weight =
  adv_ce_weight. Returns a list of n per-example tensors [batch].
  """
  distillation = peer_distillation(logits, temperature)
  return [ce_weight * cross_entropy(labels, z) + kd_weight * kd
          for z, kd in zip(logits, distillation)]


def ensemble_probabilities(logits) -> tf.Tensor:
  """p̄ = mean_i softmax(z_i) (temperature 1)."""
  return ensemble_of([tempered_probabilities(z, 1.0) for z in logits])


def ensemble_of(probabilities) -> tf.Tensor:
  """p̄ from the classifiers' probabilities, for a caller that has them already."""
  return tf.add_n(list(probabilities)) / float(len(probabilities))


def ensemble_cross_entropy(logits, labels) -> tf.Tensor:
  """CE(p̄, y) per example: the generator's keep-the-label term."""
  labels = tf.cast(labels, tf.int32)
  chosen = [tf.gather(tempered_log_probabilities(z, 1.0), labels, axis=-1, batch_dims=1)
            for z in logits]
  # -log mean_i p_i(y) as a logsumexp of the log-probabilities: exact, with no clip.
  return math.log(len(chosen)) - tf.reduce_logsumexp(tf.stack(chosen), axis=0)


def generator_adversarial_loss(fake_logits: tf.Tensor) -> tf.Tensor:
  """Non-saturating GAN loss for the generator: BCE(d(x̃0), real), per example."""
  return tf.nn.softplus(-tf.reshape(tf.cast(fake_logits, tf.float32), [-1]))


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
  """BCE(d(x), real) + BCE(d(x̃0), fake), per example."""
  real = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
  fake = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
  return tf.nn.softplus(-real) + tf.nn.softplus(fake)


def global_mean(values: tf.Tensor, weights: tf.Tensor = None) -> tf.Tensor:
  """This replica's share of the mean over the global batch, for gradients.

  MirroredStrategy sums gradients across replicas, so each replica returns
  sum(w * v) / (sum of w over all replicas): the replicas' shares add up to the
  weighted mean over the global batch, and a step on r replicas equals a step on
  one replica with the same global batch. Outside a strategy this is the plain
  weighted mean. A zero total weight gives zero rather than nan.
  """
  values = tf.cast(values, tf.float32)
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context is not None else 1
  if weights is None:
    # Keras splits a global batch evenly over the replicas: no communication needed.
    global_weight = tf.cast(tf.size(values) * replicas, tf.float32)
    return tf.reduce_sum(values) / global_weight
  weights = tf.cast(weights, tf.float32)
  local_total = tf.reduce_sum(weights * values)
  local_weight = tf.reduce_sum(weights)
  if replicas > 1:
    global_weight = context.all_reduce(tf.distribute.ReduceOp.SUM, local_weight)
  else:
    global_weight = local_weight
  return tf.math.divide_no_nan(local_total, global_weight)


def local_mean(values: tf.Tensor, weights: tf.Tensor = None) -> tf.Tensor:
  """The weighted mean on this replica's examples: the value to report in metrics."""
  values = tf.cast(values, tf.float32)
  if weights is None:
    return tf.reduce_mean(values)
  weights = tf.cast(weights, tf.float32)
  return tf.math.divide_no_nan(tf.reduce_sum(weights * values), tf.reduce_sum(weights))


def label_mask(logits: Sequence[tf.Tensor], labels: tf.Tensor,
               label_restrict: bool = True) -> tf.Tensor:
  """m = 1.0 where argmax p̄ == y (everywhere when label_restrict is off): which
  examples of a divergent batch Phase B trains on."""
  if not label_restrict:
    return tf.ones(tf.shape(labels)[:1], tf.float32)
  predictions = tf.argmax(ensemble_probabilities(logits), axis=-1, output_type=tf.int32)
  return tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32)
