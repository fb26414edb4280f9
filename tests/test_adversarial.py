"""The ACN model: each player moves only its own weights; the phases do their job."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.config import presets
from acn_tf.method import losses
from acn_tf.networks import discriminators, generators
from acn_tf.run import builders, visualize
from acn_tf.config.schema import ExperimentConfig
from acn_tf.data.pipeline import DatasetInfo
from acn_tf.method.adversarial import AdversarialCoDistillation
from acn_tf.config.schema import DistillationConfig
from acn_tf.method.codistillation import CoDistillation, DivergentBatch
from acn_tf.method.search import divergence_gradient, group_divergence
from conftest import spec_phase_a
from tiny_models import IMAGE_SHAPE, random_batch, randomise_batch_norms, small_cnns

NUM_CLASSES = 5  # tiny_models' default.


def _acn(gan_weight=1.0, keep_label_weight=1.0, generator_lr=2e-4, wrc_alpha=0.1,
         classifier_lr=0.05, search_steps=1, divergence="js", divergence_weight=1.0,
         label_restrict=True, fold_batch_norm=True, warmup_steps=0):
  keras.utils.set_random_seed(7)
  generator = generators.build_generator(IMAGE_SHAPE, noise_channels=2, filters=8,
                                         residual_blocks=1)
  discriminator = (discriminators.build_discriminator(IMAGE_SHAPE, filters=8)
                   if gan_weight else None)
  model = AdversarialCoDistillation(small_cnns(), generator, discriminator)
  model.compile(
      keras.optimizers.SGD(classifier_lr),
      generator_optimizer=keras.optimizers.Adam(generator_lr, beta_1=0.5),
      discriminator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5) if gan_weight else None,
      distillation=DistillationConfig(),
      adversarial=spec_phase_a(
          wrc_alpha=wrc_alpha, noise_channels=2, gan_weight=gan_weight,
          keep_label_weight=keep_label_weight, divergence_weight=divergence_weight,
          ras_steps=search_steps, ras_step_size=0.05, ras_epsilon=0.1,
          divergence=divergence, ras_label_restrict=label_restrict,
          fold_batch_norm=fold_batch_norm),
      warmup_steps=warmup_steps)
  model(tf.zeros((1, *IMAGE_SHAPE)))
  model.build_optimizers()
  return model


def _snapshot(networks):
  return [v.numpy().copy() for network in networks for v in network.variables]


def _assert_unchanged(networks, snapshot):
  for variable, value in zip([v for n in networks for v in n.variables], snapshot):
    np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


def _assert_changed(networks, snapshot):
  current = [v.numpy() for n in networks for v in n.trainable_variables]
  trainable = _snapshot_trainable(networks, snapshot)
  assert any(not np.array_equal(a, b) for a, b in zip(current, trainable))


def _snapshot_trainable(networks, snapshot):
  index = {id(v): i for i, v in enumerate(v for n in networks for v in n.variables)}
  return [snapshot[index[id(v)]] for n in networks for v in n.trainable_variables]


def test_generator_step_moves_only_the_generator():
  model = _acn()
  images, labels = random_batch()
  others = [*model.classifiers, model.discriminator]
  before_others = _snapshot(others)
  before_generator = _snapshot([model.generator])
  model.generator_update(tf.constant(images), tf.constant(labels))
  _assert_unchanged(others, before_others)
  _assert_changed([model.generator], before_generator)


def test_discriminator_step_moves_only_the_discriminator():
  model = _acn()
  images, _ = random_batch()
  others = [*model.classifiers, model.generator]
  before_others = _snapshot(others)
  before_discriminator = _snapshot([model.discriminator])
  model.discriminator_update(tf.constant(images), tf.constant(np.clip(images + 0.1, 0, 1)))
  _assert_unchanged(others, before_others)
  _assert_changed([model.discriminator], before_discriminator)


def test_classifier_step_leaves_generator_and_discriminator_unchanged():
  model = _acn()
  images, labels = random_batch()
  players = [model.generator, model.discriminator]
  before_players = _snapshot(players)
  before_classifiers = _snapshot(model.classifiers)
  divergent = np.clip(images + 0.05, 0, 1).astype(np.float32)
  model.classifier_update(tf.constant(images), tf.constant(labels),
                          DivergentBatch(tf.constant(divergent)))
  _assert_unchanged(players, before_players)
  _assert_changed(model.classifiers, before_classifiers)


def test_full_step_updates_every_player_and_reports_phase_a_metrics():
  model = _acn()
  images, labels = random_batch()
  before = {name: _snapshot([network]) for name, network in
            (("g", model.generator), ("d", model.discriminator),
             ("c0", model.classifiers[0]), ("c1", model.classifiers[1]))}
  logs = model.train_on_batch(images, labels, return_dict=True)
  for name, network in (("g", model.generator), ("d", model.discriminator),
                        ("c0", model.classifiers[0]), ("c1", model.classifiers[1])):
    _assert_changed([network], before[name])
  for key in ("g_loss", "d_loss", "divergence_x0", "divergence_search", "kept_fraction",
              "d_real_accuracy", "d_fake_accuracy", "c0_top1", "ensemble_top1"):
    assert np.isfinite(logs[key]), key
  assert 0.0 <= logs["kept_fraction"] <= 1.0
  assert model.generator_optimizer.iterations.numpy() == 1
  assert model.discriminator_optimizer.iterations.numpy() == 1
  assert model.optimizer.iterations.numpy() == 1


def test_phase_a_with_folded_batch_norm_computes_what_keras_layers_do():
  """fold_batch_norm on and off: the same generator step and search start (the
  search's x̃ follows from the start gradient's sign)."""
  results = []
  for fold in (True, False):
    model = _acn(fold_batch_norm=fold)
    for seed, classifier in enumerate(model.classifiers):
      randomise_batch_norms(classifier, seed)  # Statistics a fold could get wrong.
    images, labels = (tf.constant(t) for t in random_batch())
    tf.random.set_seed(0)  # The same noise for both.
    start = model.generator_update(images, labels)
    results.append([start.images, start.start_gradient, *start.logits,
                    *model.generator.trainable_variables])
  assert results[0][1].numpy().any()
  for folded, unfolded in zip(*results):
    folded, unfolded = np.asarray(folded), np.asarray(unfolded)
    np.testing.assert_allclose(folded, unfolded, atol=1e-5 * np.abs(unfolded).max())


def test_the_acn_model_holds_each_variable_once():
  """The folded networks share the classifiers' variables and are not tracked:
  weights, checkpoints and saved files are those of the networks."""
  model = _acn()
  networks = [*model.classifiers, model.generator, model.discriminator]
  assert sorted(v.path for v in model.weights) == sorted(
      v.path for network in networks for v in network.weights)


def test_generator_update_hands_the_search_its_start_gradient_and_logits():
  model = _acn()
  images, labels = random_batch()
  generated = model.generator_update(tf.constant(images), tf.constant(labels))
  # The classifiers did not move, so a separate pass at x̃0 is the reference.
  expected = divergence_gradient(model.phase_a_classifiers(), generated.images,
                                 model.adversarial)
  # The gradient of the batch mean of D: the sum's over the batch size.
  np.testing.assert_allclose(generated.start_gradient.numpy() * len(images),
                             expected.numpy(), rtol=1e-5, atol=1e-9)
  assert np.abs(expected.numpy()).max() > 0
  for logits, classifier in zip(generated.logits, model.phase_a_classifiers()):
    np.testing.assert_allclose(logits.numpy(),
                               classifier(generated.images, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)
  assert _acn(search_steps=0).generator_update(
      tf.constant(images), tf.constant(labels)).start_gradient is None


def _traced_generator_gradients(model, images, labels, noise):
  """The generator update's tape, and g's gradients as one plain backward pass
  of the (scaled) batch loss computes them: the reference."""
  variables = model.generator.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    start = model.generate(images, training=True, noise=noise)
    terms = model.generator_loss_terms(start, labels)
    optimizer = model.generator_optimizer
    scaled_loss = optimizer.scale_loss(
        losses.global_mean(terms.total(model.adversarial.divergence_weight)))
    scaled_divergence = optimizer.scale_loss(losses.global_mean(terms.divergence))
  reference = tape.gradient(scaled_loss, variables)
  return tape, scaled_loss, scaled_divergence, terms, variables, start, reference


def _assembled_and_backpropagated(model):
  """The generator's gradients as `generator_gradients` assembles them and as plain
  back-propagation computes them, on one random batch with g nudged off zero (its
  gradient reaches its inner layers only then)."""
  for variable in model.generator.trainable_variables:
    variable.assign(variable + 0.05 * tf.random.stateless_normal(variable.shape, (3, 4)))
  images, labels = random_batch()
  noise = tf.random.stateless_normal((len(images), *IMAGE_SHAPE[:2], 2), (1, 2))
  tape, scaled_loss, scaled_divergence, terms, variables, start, reference = (
      _traced_generator_gradients(model, tf.constant(images), tf.constant(labels), noise))
  gradients, start_gradient = model.generator_gradients(
      tape, scaled_loss, scaled_divergence, terms, variables, start)
  return images, variables, start, reference, gradients, start_gradient


@pytest.mark.parametrize("keep_label_weight,gan_weight,loss_scale,divergence_weight",
                         [(1.0, 1.0, False, 3.0), (0.0, 1.0, False, 3.0),
                          (0.0, 0.0, False, 3.0), (0.3, 0.0, False, 3.0),
                          (0.0, 1.0, True, 3.0), (1.0, 1.0, False, 0.0)])
def test_generator_gradients_assembled_at_the_start_equal_plain_backpropagation(
    keep_label_weight, gan_weight, loss_scale, divergence_weight):
  model = _acn(keep_label_weight=keep_label_weight, gan_weight=gan_weight,
               divergence_weight=divergence_weight)
  if loss_scale:
    model.generator_optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.Adam(2e-4), initial_scale=1024.0)
    model.generator_optimizer.build(model.generator.trainable_variables)
  images, variables, start, reference, gradients, start_gradient = (
      _assembled_and_backpropagated(model))
  assert sum(float(tf.reduce_sum(tf.abs(g))) for g in reference) > 0
  for got, expected, variable in zip(gradients, reference, variables):
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4,
                               atol=1e-6 * np.abs(expected.numpy()).max(),
                               err_msg=variable.path)
  # The search's gradient: dΣD/dx̃0 over the batch size, times the loss scale.
  expected_start = divergence_gradient(model.classifiers, start, model.adversarial)
  factor = (1024.0 if loss_scale else 1.0) / len(images)
  np.testing.assert_allclose(start_gradient.numpy(), factor * expected_start.numpy(),
                             rtol=1e-4, atol=1e-6 * factor * np.abs(expected_start).max())


def test_without_a_search_step_the_generator_gradients_are_the_same_and_no_start_is_handed():
  """K = 0 (the no-RAS ablation) takes the one code path: g's gradients as plain
  back-propagation computes them, and no gradient for a search that takes no step."""
  model = _acn(search_steps=0)
  _, _, _, reference, gradients, start_gradient = _assembled_and_backpropagated(model)
  assert start_gradient is None
  for got, expected in zip(gradients, reference):
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4,
                               atol=1e-6 * np.abs(expected.numpy()).max())


@pytest.mark.parametrize("divergence", ["total_variation"])
def test_generator_loss_weighs_the_chosen_divergence(divergence):
  model = _acn(divergence=divergence, divergence_weight=3.0)
  images, labels = random_batch()
  per_example, divergence_value, logits = model.generator_loss(tf.constant(images),
                                                               tf.constant(labels))
  z = [c(images, training=False).numpy() for c in model.classifiers]
  p = [np.exp(v) / np.exp(v).sum(-1, keepdims=True) for v in z]
  expected_divergence = 0.5 * np.abs(p[0] - p[1]).sum(-1)
  np.testing.assert_allclose(divergence_value.numpy(), expected_divergence, rtol=1e-4,
                             atol=1e-6)
  ensemble = (np.exp(z[0]) / np.exp(z[0]).sum(-1, keepdims=True) +
              np.exp(z[1]) / np.exp(z[1]).sum(-1, keepdims=True)) / 2
  label_ce = -np.log(ensemble[np.arange(len(labels)), labels])
  d_logits = model.discriminator(images, training=False).numpy()[:, 0]
  gan = np.log1p(np.exp(-d_logits))
  np.testing.assert_allclose(per_example.numpy(), -3.0 * expected_divergence + label_ce + gan,
                             rtol=1e-4, atol=1e-5)


def test_metrics_report_the_specs_js_whatever_phase_a_maximises():
  model = _acn(divergence="total_variation")
  images, labels = random_batch()
  generated = model.generator_update(tf.constant(images), tf.constant(labels))
  expected = losses.reported_divergence(generated.logits).numpy().mean()
  assert model.generated_divergence.result().numpy() == pytest.approx(expected, rel=1e-5)
  # Total variation is of another size: the metric is not it.
  assert not np.isclose(expected, losses.divergence(generated.logits, "total_variation")
                        .numpy().mean())


def test_mask_from_the_update_is_the_training_mode_ensemble_prediction():
  updated, reference = _acn(), _acn()
  images, labels = random_batch(64)
  divergent = np.clip(images + 0.05, 0, 1).astype(np.float32)
  # Training mode: the logits of the update's own forward pass (batch statistics).
  logits = [c(divergent, training=True) for c in reference.classifiers]
  labels = np.argmax(np.mean([tf.nn.softmax(z).numpy() for z in logits], 0), -1)
  labels[::3] = (labels[::3] + 1) % NUM_CLASSES
  expected_mask = (labels == np.argmax(
      np.mean([tf.nn.softmax(z).numpy() for z in logits], 0), -1)).astype(np.float32)
  assert 0 < expected_mask.sum() < 64
  labels = tf.constant(labels)
  # No logits from the search: the update makes m from its own forward pass.
  updated.classifier_update(tf.constant(images), labels,
                            DivergentBatch(tf.constant(divergent)))
  # The reference is handed those training-mode logits, hence m = expected_mask.
  reference.classifier_update(tf.constant(images), labels,
                              DivergentBatch(tf.constant(divergent), logits))
  assert float(updated.kept_fraction.result()) == pytest.approx(expected_mask.mean())
  for a, b in zip(updated.classifier_variables, reference.classifier_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("steps", [0, 2])
def test_full_step_with_the_mask_from_the_update(steps):
  model = _acn(search_steps=steps)
  images, labels = random_batch()
  logs = model.train_on_batch(images, labels, return_dict=True)
  assert 0.0 <= logs["kept_fraction"] <= 1.0
  assert np.isfinite(logs["divergence_search"]) and logs["divergence_search"] > 0
  assert model.optimizer.iterations.numpy() == 1


def test_generator_steps_raise_divergence_of_generated_examples():
  model = _acn(gan_weight=0.0, keep_label_weight=0.0, generator_lr=1e-2, wrc_alpha=0.3)
  images, labels = random_batch(64)
  settings = model.adversarial

  def generated_divergence():
    tf.random.set_seed(0)
    start = model.generate(tf.constant(images), training=True)
    return float(tf.reduce_mean(group_divergence(model.classifiers, start, settings)[0]))

  before = generated_divergence()
  for _ in range(15):
    model.generator_update(tf.constant(images), tf.constant(labels))
  after = generated_divergence()
  assert after > 1.5 * before, (before, after)


def test_divergence_seeking_generator_raises_div_where_the_spec_s_does_not():
  """The preset `divergence_seeking` (total variation at temperature 1, Adam 2e-3,
  divergence weight 5, label weight 0.1) makes x̃0 more divergent than x against
  classifiers that fit the batch; with the defaults, the spec's Phase A (JS, rate
  2e-4, weights 1), the same steps leave Div(x̃0) at Div(x). Each update runs as a
  tf.function, as in training (eager updates took 5 times as long). Measured with
  the preset's Phase A at the budget 0.1: Div(x̃0) / Div(x) about 2.4 against 1.09
  after 100 steps (1.35 and 1.10 after 50: too few)."""
  images, labels = (tf.constant(array) for array in random_batch(64))
  noise = tf.constant(np.random.default_rng(3).normal(size=(64, 8, 8, 4)), tf.float32)

  def ratio_after_steps(**overrides):
    config = ExperimentConfig.from_fields(name="test", dataset="digits", method="acn").replace(
        **overrides)
    info = DatasetInfo("test", NUM_CLASSES, IMAGE_SHAPE, 64, 0, 64, "test")
    model = builders.build_adversarial_model(config, info, small_cnns())
    model.compile(keras.optimizers.SGD(0.05), adversarial=config.adversarial,
                **builders.phase_a_optimizers(config, with_discriminator=True))
    model(tf.zeros((1, *IMAGE_SHAPE)))
    model.build_optimizers()

    @tf.function
    def classifier_step():
      model.classifier_update(images, labels)

    @tf.function
    def phase_a_step():
      model.generator_update(images, labels)
      model.discriminator_update(images, model.generate(images))

    for _ in range(30):  # Classifiers that fit the batch agree on it, as trained ones do.
      classifier_step()
    real = float(tf.reduce_mean(losses.reported_divergence(model(images))))
    for _ in range(100):
      phase_a_step()
    generated = model.generate(images, noise=noise)
    return float(tf.reduce_mean(losses.reported_divergence(model(generated)))) / real

  assert ratio_after_steps(**presets.get_preset("divergence_seeking")) > 1.5
  assert ratio_after_steps() < 1.1


def test_classifier_steps_lower_disagreement_on_fixed_divergent_examples():
  model = _acn(classifier_lr=0.01, label_restrict=False)  # Every x̃ kept.
  images, labels = random_batch(64)
  divergent = np.clip(images + np.random.default_rng(1).normal(scale=0.1, size=images.shape),
                      0, 1).astype(np.float32)

  def disagreement():
    # Batch statistics (training=True): after ten steps the moving averages of
    # batch norm still lag, and the test is about the weights, not about them.
    probabilities = [tf.nn.softmax(c(divergent, training=True)) for c in model.classifiers]
    return float(tf.reduce_mean(losses.pairwise_divergence(probabilities)))

  before = disagreement()
  for _ in range(10):
    model.classifier_update(tf.constant(images), tf.constant(labels),
                            DivergentBatch(tf.constant(divergent)))
  assert disagreement() < 0.5 * before


def test_warmup_step_equals_dml_and_leaves_gan_untouched():
  acn = _acn(warmup_steps=1)
  dml = CoDistillation(small_cnns())
  dml.compile(keras.optimizers.SGD(0.05), distillation=DistillationConfig())
  dml(tf.zeros((1, *IMAGE_SHAPE)))
  dml.build_optimizers()
  for source, target in zip(acn.classifiers, dml.classifiers):
    target.set_weights(source.get_weights())
  players = [acn.generator, acn.discriminator]
  before_players = _snapshot(players)
  images, labels = random_batch()
  logs = acn.train_on_batch(images, labels, return_dict=True)
  dml.train_on_batch(images, labels)
  # Phase A did not run: its metrics have no value yet (NaN, not a measured 0).
  for name in ("g_loss", "d_loss", "divergence_x0", "divergence_search", "kept_fraction"):
    assert np.isnan(logs[name]), name
  assert np.isfinite(logs["loss"]) and np.isfinite(logs["ensemble_top1"])
  for a, b in zip(acn.classifiers, dml.classifiers):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
  _assert_unchanged(players, before_players)
  assert acn.generator_optimizer.iterations.numpy() == 0


def test_a_plain_fit_runs_the_warm_up_then_phase_a():
  """No callback of the project's: the model switches at `warmup_steps` steps."""
  model = _acn(warmup_steps=2)
  images, labels = random_batch(64)
  seen = []

  class Record(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      seen.append(int(model.generator_optimizer.iterations.numpy()))

  history = model.fit(images, labels, batch_size=32, epochs=3, verbose=0,
                      callbacks=[Record()]).history
  assert seen == [0, 2, 4]
  # Epoch logs (read from the metrics): no Phase A value in the warm-up epoch.
  assert np.isnan(history["g_loss"][0]) and np.isnan(history["kept_fraction"][0])
  assert np.all(np.isfinite(history["g_loss"][1:])) and np.all(np.isfinite(history["loss"]))


@pytest.mark.parametrize("restored_step, phase_a_steps", [(0, 0), (1, 1), (2, 2), (5, 2)])
def test_the_phase_follows_the_restored_step_count(restored_step, phase_a_steps):
  """A model restored mid-warm-up (or after it) continues in its phase, step by step."""
  model = _acn(warmup_steps=2)
  model.optimizer.iterations.assign(restored_step)
  images, labels = random_batch()
  model.train_on_batch(images, labels)
  model.train_on_batch(images, labels)
  assert int(model.generator_optimizer.iterations.numpy()) == phase_a_steps
  assert model.adversarial_phase_active == (restored_step + 1 >= 2)


def test_no_gan_ablation_has_no_discriminator():
  model = _acn(gan_weight=0.0)
  assert model.discriminator is None
  images, labels = random_batch()
  logs = model.train_on_batch(images, labels, return_dict=True)
  assert np.isfinite(logs["g_loss"])
  with pytest.raises(ValueError, match="discriminator_optimizer"):
    model.compile(keras.optimizers.SGD(0.1), keras.optimizers.Adam(),
                  discriminator_optimizer=keras.optimizers.Adam())


def test_divergent_examples_picture_matches_the_classifiers():
  model = _acn(search_steps=2)
  images, labels = random_batch(8)
  examples = visualize.divergent_examples(model, images, labels)
  assert np.abs(examples.searched - examples.generated).max() > 0
  assert np.abs(examples.searched - images).max() <= 0.1 + 1e-6
  for row, batch in zip(examples.predictions,
                        (images, examples.generated, examples.searched)):
    expected = [c(batch, training=False).numpy() for c in model.classifiers]
    np.testing.assert_array_equal(row, np.argmax(expected, -1))
  # The picture's mask is the inference-mode one (training's comes from Phase B).
  ensemble = np.mean([tf.nn.softmax(c(examples.searched, training=False)).numpy()
                      for c in model.classifiers], axis=0)
  np.testing.assert_array_equal(examples.keep_mask, ensemble.argmax(-1) == labels)


def _softmax(z, temperature=1.0):
  e = np.exp((z - z.max(-1, keepdims=True)) / temperature)
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("adv_weight, kd_weight, ce_weight", [
    (1.0, 1.0, 1.0), (0.5, 0.0, 1.0), (2.0, 1.0, 0.0), (1.0, 0.3, 0.7)])
def test_divergent_batch_loss_matches_numpy(adv_weight, kd_weight, ce_weight):
  """adv_weight Σ_i Σ_b m_b (adv_kd_weight T² mean_{j≠i} KL(q_j‖p_i) + adv_ce_weight CE_i)
  divided by B, written out in numpy; q_j is peer j's prediction on x̃."""
  model = _acn()
  model.distillation = DistillationConfig(
      temperature=2.0, adv_weight=adv_weight, adv_kd_weight=kd_weight,
      adv_ce_weight=ce_weight)
  rng = np.random.default_rng(5)
  logits = [rng.normal(scale=2.0, size=(16, NUM_CLASSES)).astype(np.float32)
            for _ in range(3)]
  labels = rng.integers(0, NUM_CLASSES, 16)
  mask = (rng.random(16) < 0.6).astype(np.float32)
  computed = model.divergent_batch_loss([tf.constant(z) for z in logits],
                                        tf.constant(labels), tf.constant(mask))
  soft = [_softmax(z, 2.0) for z in logits]
  peers = soft
  total = 0.0
  for i, z in enumerate(logits):
    kl = np.mean([np.sum(peers[j] * np.log(peers[j] / soft[i]), -1)
                  for j in range(3) if j != i], axis=0)
    ce = -np.log(_softmax(z)[np.arange(16), labels])
    per_example = kd_weight * 4.0 * kl + ce_weight * ce
    total += np.sum(mask * per_example) / 16
  np.testing.assert_allclose(float(computed), adv_weight * total, rtol=1e-5)
