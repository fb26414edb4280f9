"""The co-distillation model: DML pulls peers together; kd_weight 0 is independent."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.method import losses
from acn_tf.config.schema import DistillationConfig
from acn_tf.method.codistillation import CoDistillation, DivergentBatch
from tiny_models import IMAGE_SHAPE, random_batch, small_cnns

NUM_CLASSES = 4


def _batch(size=32):
  return random_batch(size, NUM_CLASSES)


def _model(seeds, kd_weight, temperature=1.0, optimizer=None):
  model = CoDistillation(small_cnns(seeds, NUM_CLASSES))
  optimizer = optimizer or keras.optimizers.SGD(0.05)
  model.compile(optimizer, distillation=DistillationConfig(temperature=temperature,
                                                              kd_weight=kd_weight))
  model(tf.zeros((1, *IMAGE_SHAPE)))
  model.build_optimizers()
  return model


def _peer_kl(model, images, temperature):
  logits = model(images, training=False)
  p = [losses.tempered_probabilities(z, temperature).numpy() for z in logits]
  return [np.mean(losses.kl_divergence(p[1 - i], p[i]).numpy()) for i in range(2)]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dml_step_moves_each_classifier_toward_its_peer(temperature):
  images, labels = _batch()
  independent = _model([1, 2], kd_weight=0.0, temperature=temperature)
  mutual = _model([1, 2], kd_weight=1.0, temperature=temperature)
  mutual.set_weights(independent.get_weights())
  before = _peer_kl(mutual, images, temperature)
  independent.train_on_batch(images, labels)
  mutual.train_on_batch(images, labels)
  after_independent = _peer_kl(independent, images, temperature)
  after_mutual = _peer_kl(mutual, images, temperature)
  for i in range(2):
    # Same start, same batch: the distillation term alone makes the difference.
    assert after_mutual[i] < after_independent[i], (before, after_independent,
                                                    after_mutual)


def test_kd_weight_zero_trains_classifiers_exactly_as_alone():
  images, labels = _batch(64)
  sgd = lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True,
                                     weight_decay=5e-4)
  together = _model([3, 4], kd_weight=0.0, optimizer=sgd())
  alone = [_model([3], kd_weight=0.0, optimizer=sgd()),
           _model([4], kd_weight=0.0, optimizer=sgd())]
  for start in range(0, 64, 16):
    batch = (images[start:start + 16], labels[start:start + 16])
    together.train_on_batch(*batch)
    for model in alone:
      model.train_on_batch(*batch)
  for i in range(2):
    trained_together = together.classifiers[i].get_weights()
    trained_alone = alone[i].classifiers[0].get_weights()
    for a, b in zip(trained_together, trained_alone):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # And training did move them (the comparison above is not between two no-ops).
  fresh = small_cnns((3,), NUM_CLASSES)[0].get_weights()
  assert any(not np.allclose(a, b) for a, b in zip(fresh, alone[0].classifiers[0].get_weights()))


def test_dml_gradient_equals_sum_of_own_losses():
  """One plain-SGD step equals w - lr * d(CE_i + KL_i)/dw_i, computed per classifier."""
  images, labels = _batch(16)
  model = _model([5, 6], kd_weight=1.0, temperature=2.0,
                 optimizer=keras.optimizers.SGD(0.1))
  start = [c.get_weights() for c in model.classifiers]
  peers_logits = [c(images, training=True) for c in model.classifiers]
  expected = []
  for i, classifier in enumerate(model.classifiers):
    peer = tf.nn.softmax(peers_logits[1 - i] / 2.0)
    with tf.GradientTape() as tape:
      own = classifier(images, training=True)
      ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, own))
      log_student = tf.nn.log_softmax(own / 2.0)
      kl = tf.reduce_mean(tf.reduce_sum(peer * (tf.math.log(peer) - log_student), -1))
      loss = ce + 4.0 * kl
    gradients = tape.gradient(loss, classifier.trainable_variables)
    expected.append([v.numpy() - 0.1 * g.numpy()
                     for v, g in zip(classifier.trainable_variables, gradients)])
  for classifier, weights in zip(model.classifiers, start):
    classifier.set_weights(weights)
  model.train_on_batch(images, labels)
  for i, classifier in enumerate(model.classifiers):
    for variable, value in zip(classifier.trainable_variables, expected[i]):
      np.testing.assert_allclose(variable.numpy(), value, rtol=1e-4, atol=1e-6)


def test_evaluate_reports_per_classifier_and_ensemble_metrics():
  images, labels = _batch(40)
  model = _model([7, 8], kd_weight=1.0)
  metrics = model.evaluate(images, labels, batch_size=20, return_dict=True, verbose=0)
  logits = [c(images, training=False).numpy() for c in model.classifiers]
  for i in range(2):
    top1 = np.mean(np.argmax(logits[i], -1) == labels)
    np.testing.assert_allclose(metrics[f"c{i}_top1"], top1, atol=1e-6)
  ensemble = np.mean([tf.nn.softmax(z).numpy() for z in logits], axis=0)
  np.testing.assert_allclose(metrics["ensemble_top1"], np.mean(ensemble.argmax(-1) == labels),
                             atol=1e-6)
  assert metrics["c0_top5"] == 1.0  # 4 classes: top-5 always contains the label.


def _moving_statistics(model):
  """Each batch norm's moving mean and variance, found without acn_tf's help."""
  return [variable.numpy().copy() for classifier in model.classifiers
          for layer in classifier.layers if isinstance(layer, keras.layers.BatchNormalization)
          for variable in (layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("compiled", [False, True])
def test_a_divergent_batch_kept_out_of_batch_norm_statistics_changes_only_them(compiled):
  """divergent_batch_norm_updates off: Phase B on x and x̃ leaves the moving
  statistics where an update on x alone leaves them, and every trained weight
  where the default leaves it (x̃ is still normalised by its own moments). In a
  tf.function too, where only the graph's dependencies order the reads and writes."""
  images, labels = _batch()
  shifted = np.clip(images + 0.3 * np.random.default_rng(1).normal(size=images.shape),
                    0, 1).astype(np.float32)
  divergent = DivergentBatch(tf.constant(shifted))

  def updated(keep_out, with_divergent=True):
    model = CoDistillation(small_cnns([1, 2], NUM_CLASSES))
    model.compile(keras.optimizers.SGD(0.05), distillation=DistillationConfig(
        divergent_batch_norm_updates=not keep_out))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()
    update = tf.function(model.classifier_update) if compiled else model.classifier_update
    update(tf.constant(images), tf.constant(labels), divergent if with_divergent else None)
    return model

  kept_out, default, real_only = updated(True), updated(False), updated(True, False)
  assert len(_moving_statistics(kept_out)) == 8  # small_cnn has two batch norms.
  for a, b, c in zip(_moving_statistics(kept_out), _moving_statistics(real_only),
                     _moving_statistics(default)):
    np.testing.assert_array_equal(a, b)
  assert any(np.abs(a - c).max() > 1e-4 for a, c in
             zip(_moving_statistics(kept_out), _moving_statistics(default)))
  for a, b, c in zip(kept_out.trainable_weights, default.trainable_weights,
                     real_only.trainable_weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
  assert any(np.abs(a.numpy() - c.numpy()).max() > 1e-4 for a, c in
             zip(kept_out.trainable_weights, real_only.trainable_weights))
