"""dml_noise: DML plus Phase B's divergent-batch terms on a noisy copy of the batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import api
from acn_tf.config.schema import DistillationConfig, ExperimentConfig
from acn_tf.data.pipeline import DatasetInfo
from acn_tf.method.codistillation import CoDistillation
from acn_tf.method.noise import NoisyCoDistillation
from acn_tf.run import builders
from tiny_models import IMAGE_SHAPE, dense_classifier, random_batch, small_cnns

NUM_CLASSES = 5  # tiny_models' default.


def _noisy(learning_rate=0.05, label_restrict=True, **distillation):
  model = NoisyCoDistillation(small_cnns())
  model.compile(keras.optimizers.SGD(learning_rate),
                distillation=DistillationConfig(**distillation),
                label_restrict=label_restrict)
  model(tf.zeros((1, *IMAGE_SHAPE)))
  model.build_optimizers()
  return model


class _FixedSigns:
  """noise_signs that returns given signs, so that a test knows the noisy batch."""

  def __init__(self, signs):
    self.signs = tf.constant(signs, tf.float32)

  def __call__(self, images):
    return self.signs


def test_noisy_batch_moves_each_pixel_by_the_noise_with_a_fresh_random_sign():
  model = _noisy(input_noise=0.1)
  images, _ = random_batch(64)
  noisy = model.noisy_batch(tf.constant(images)).numpy()
  up, down = np.clip(images + 0.1, 0, 1), np.clip(images - 0.1, 0, 1)
  # Every pixel is x + 0.1 or x - 0.1, clipped to [0, 1]...
  assert np.all(np.isclose(noisy, up, atol=1e-6) | np.isclose(noisy, down, atol=1e-6))
  # ...and where no clip acts, each sign is a fair coin (about 3,300 pixels: outside
  # 0.45-0.55 with a chance of about 1e-8; seeded).
  inside = (images >= 0.1) & (images <= 0.9)
  np.testing.assert_allclose(np.abs(noisy - images)[inside], 0.1, atol=1e-6)
  assert 0.45 < np.mean(noisy[inside] > images[inside]) < 0.55
  # Fresh at every call, also inside a compiled function as in training.
  compiled = tf.function(model.noisy_batch)
  first, second = compiled(tf.constant(images)).numpy(), compiled(tf.constant(images)).numpy()
  assert np.mean(np.sign(first - images) != np.sign(second - images)) > 0.4


def test_training_steps_draw_new_noise():
  """At learning rate 0 the weights stay, so two steps on one batch report the same
  Div at the noisy batch only if they drew the same noise."""
  model = _noisy(learning_rate=0.0, input_noise=0.2)
  images, labels = random_batch(32)
  first = model.train_on_batch(images, labels, return_dict=True)
  second = model.train_on_batch(images, labels, return_dict=True)
  assert first["loss"] == pytest.approx(second["loss"], rel=1e-6)  # Same real batch.
  assert first["divergence_noisy"] != pytest.approx(second["divergence_noisy"], rel=1e-3)


def _softmax(logits, temperature=1.0):
  return tf.nn.softmax(logits / temperature)


def _terms_by_hand(logits, labels, temperature, kd_weight, ce_weight):
  """Per classifier, per example: ce_weight CE + kd_weight T² mean_{j≠i} KL(sg q_j ‖ p_i),
  written with TensorFlow's ops, not acn_tf.method.losses."""
  soft = [_softmax(z, temperature) for z in logits]
  terms = []
  for i, z in enumerate(logits):
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=z)
    kl = tf.add_n([tf.reduce_sum(tf.stop_gradient(soft[j]) * (
        tf.math.log(tf.stop_gradient(soft[j])) - tf.math.log(soft[i])), -1)
                   for j in range(len(logits)) if j != i]) / (len(logits) - 1)
    terms.append(ce_weight * ce + kd_weight * temperature**2 * kl)
  return terms


@pytest.mark.parametrize("label_restrict", [True, False])
def test_a_step_is_sgd_on_the_dml_loss_plus_the_divergent_batch_loss(label_restrict):
  """One train step = one SGD step on Σ_i [mean_b (CE + κ T² KL) on x
  + λ_adv Σ_b m_b (λ_kd T² KL + λ_ce CE) on x̃ / B], x̃ = clip01(x + s · noise),
  with m from the training-mode ensemble at x̃; assembled here by hand."""
  settings = dict(temperature=2.0, kd_weight=0.8, adv_weight=0.7, adv_kd_weight=0.5,
                  adv_ce_weight=1.3, input_noise=0.15)
  model = _noisy(learning_rate=0.1, label_restrict=label_restrict, **settings)
  reference = small_cnns()
  for source, target in zip(model.classifiers, reference):
    target.set_weights(source.get_weights())
  rng = np.random.default_rng(8)
  images = rng.random((64, *IMAGE_SHAPE), dtype=np.float32)
  signs = rng.choice([-1.0, 1.0], images.shape).astype(np.float32)
  noisy = np.clip(images + 0.15 * signs, 0, 1).astype(np.float32)
  # Labels the ensemble gets right on x̃ for two examples in three: the mask matters.
  ensemble = np.mean([_softmax(c(noisy, training=True)).numpy() for c in reference], 0)
  labels = ensemble.argmax(-1)
  labels[::3] = (labels[::3] + 1) % NUM_CLASSES
  mask = (ensemble.argmax(-1) == labels).astype(np.float32)
  if not label_restrict:
    mask = np.ones_like(mask)
  assert label_restrict is False or 0 < mask.sum() < 64

  variables = [v for c in reference for v in c.trainable_variables]
  with tf.GradientTape() as tape:
    real = _terms_by_hand([c(images, training=True) for c in reference], labels, 2.0, 0.8, 1.0)
    divergent = _terms_by_hand([c(noisy, training=True) for c in reference], labels, 2.0,
                               0.5, 1.3)
    total = (tf.add_n([tf.reduce_mean(term) for term in real]) +
             0.7 * tf.add_n([tf.reduce_sum(mask * term) / 64.0 for term in divergent]))
  expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(variables,
                                                         tape.gradient(total, variables))]

  model.noise_signs = _FixedSigns(signs)
  logs = model.train_on_batch(images, labels, return_dict=True)
  for variable, value in zip(model.classifier_variables, expected):
    np.testing.assert_allclose(variable.numpy(), value, rtol=1e-4, atol=1e-6,
                               err_msg=variable.path)
  assert logs["kept_fraction"] == pytest.approx(mask.mean())


def test_without_noise_or_its_weight_a_step_is_a_dml_step():
  noisy = _noisy(input_noise=0.0, adv_weight=0.0)
  dml = CoDistillation(small_cnns())
  dml.compile(keras.optimizers.SGD(0.05), distillation=DistillationConfig())
  dml(tf.zeros((1, *IMAGE_SHAPE)))
  dml.build_optimizers()
  images, labels = random_batch()
  before = [v.numpy() for v in dml.classifier_variables]
  noisy.train_on_batch(images, labels)
  dml.train_on_batch(images, labels)
  moved = 0
  for a, b, start in zip(noisy.classifier_variables, dml.classifier_variables, before):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    moved += not np.allclose(b.numpy(), start)
  assert moved > 4


def test_the_builders_and_the_api_give_dml_noise_its_settings():
  config = ExperimentConfig.from_fields(
      name="test", dataset="digits", method="dml_noise", architectures=("small_cnn",) * 2,
      input_noise=0.05, adv_weight=0.5, ras_label_restrict=False).validate()
  info = DatasetInfo("test", NUM_CLASSES, IMAGE_SHAPE, 64, 0, 64, "test")
  model = builders.build_model(config, info, [0.5], [0.08], steps=2)
  assert type(model) is NoisyCoDistillation and model.label_restrict is False
  assert model.distillation.input_noise == 0.05 and model.distillation.adv_weight == 0.5
  logs = model.train_on_batch(*random_batch(32), return_dict=True)
  assert logs["kept_fraction"] == 1.0 and np.isfinite(logs["divergence_noisy"])

  model = api.build_model([dense_classifier(0), dense_classifier(1)],
                          api.config(method="dml_noise", input_noise=0.2), steps_per_epoch=5)
  assert type(model) is NoisyCoDistillation and model.label_restrict is True
  assert model.distillation.input_noise == 0.2
  images = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype(np.float32)
  logs = model.train_on_batch(images, np.array([0, 1, 2, 0]), return_dict=True)
  assert 0.0 <= logs["kept_fraction"] <= 1.0 and np.isfinite(logs["loss"])
