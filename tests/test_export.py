"""Export: SavedModels serve the Keras predictions without acn_tf; `.keras` round-trips.

The classifiers are trained for a few steps on the real digits, so their weights
and batch-norm statistics are not the initial ones: an export that used the
wrong statistics (training mode), skipped the /255 or mixed classifiers up
would disagree with Keras on real images.
"""

import os
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.data import pipeline
from acn_tf.networks import backbones, discriminators, generators
from acn_tf.method.adversarial import AdversarialCoDistillation
from acn_tf.run.export import ENSEMBLE_NAME, export_saved_models
from acn_tf.method.codistillation import CoDistillation
from acn_tf.method.noise import NoisyCoDistillation
from conftest import spec_phase_a, subprocess_environment

TRAIN_EXAMPLES = 64
TEST_EXAMPLES = 100
TOLERANCE = 1e-5

# Runs in a fresh interpreter: TensorFlow and numpy only, as a serving client would.
SERVING_CLIENT = """
import os, sys
import numpy as np
import tensorflow as tf
export_dir, output_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
images = tf.constant(np.load(os.path.join(output_dir, "images.npy")))
for name in names:
  serve = tf.saved_model.load(os.path.join(export_dir, name)).signatures["serving_default"]
  for key, value in serve(images=images).items():
    np.save(os.path.join(output_dir, f"{name}_{key}.npy"), value.numpy())
assert "acn_tf" not in sys.modules, "loading an export imported acn_tf"
"""


# -- Fixtures: real digits, a briefly trained model, its export ----------------------


@pytest.fixture(scope="module")
def digits():
  """uint8 train and test images of the real scikit-learn digits, with labels."""
  splits = pipeline.load_splits("digits", None)
  train_images, train_labels = next(splits.train.batch(TRAIN_EXAMPLES).as_numpy_iterator())
  test_images, _ = next(splits.test.batch(TEST_EXAMPLES).as_numpy_iterator())
  mean, variance = pipeline.channel_statistics(splits.train)
  return dict(train_images=train_images, train_labels=train_labels,
              test_images=test_images, info=splits.info, mean=mean, variance=variance)


def _classifiers(digits, seeds=(1, 2)):
  info = digits["info"]
  return [backbones.build_classifier("small_cnn", info.image_shape, info.num_classes,
                                     digits["mean"], digits["variance"],
                                     name=f"c{i}", seed=seed)
          for i, seed in enumerate(seeds)]


def _pixels(images):
  return images.astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def trained_model(digits):
  model = CoDistillation(_classifiers(digits))
  model.compile(keras.optimizers.SGD(0.05))
  model(tf.zeros((1, *digits["info"].image_shape)))
  model.build_optimizers()
  images, labels = _pixels(digits["train_images"]), digits["train_labels"]
  for start in (0, TRAIN_EXAMPLES // 2):
    model.train_on_batch(images[start:start + 32], labels[start:start + 32])
  return model


def _keras_probabilities(model, images):
  return [tf.nn.softmax(logits).numpy() for logits in model(_pixels(images))]


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory):
  return export_saved_models(trained_model, str(tmp_path_factory.mktemp("export")))


@pytest.fixture(scope="module")
def served(exported, digits, tmp_path_factory):
  """Outputs of every export's serving_default, computed in a fresh interpreter."""
  output_dir = tmp_path_factory.mktemp("served")
  np.save(output_dir / "images.npy", digits["test_images"])
  export_dir = os.path.dirname(exported[ENSEMBLE_NAME])
  result = subprocess.run(
      [sys.executable, "-c", SERVING_CLIENT, export_dir, str(output_dir), *exported],
      cwd=output_dir, capture_output=True, text=True, timeout=120,
      env=subprocess_environment())
  assert result.returncode == 0, result.stderr[-3000:]
  return {name: {key: np.load(output_dir / f"{name}_{key}.npy")
                 for key in ("probabilities", "classes")}
          for name in exported}


# -- SavedModel export ------------------------------------------------------------------


def test_export_writes_one_saved_model_per_classifier_and_the_ensemble(exported):
  assert sorted(exported) == ["classifier_0", "classifier_1", ENSEMBLE_NAME]
  for path in exported.values():
    assert os.path.isfile(os.path.join(path, "saved_model.pb")), path


def test_each_classifier_export_serves_its_keras_probabilities(trained_model, digits,
                                                                served):
  expected = _keras_probabilities(trained_model, digits["test_images"])
  # The two classifiers disagree, so serving the wrong one would be caught.
  assert np.abs(expected[0] - expected[1]).max() > 1e-2
  for i, probabilities in enumerate(expected):
    outputs = served[f"classifier_{i}"]
    assert outputs["probabilities"].dtype == np.float32
    assert outputs["probabilities"].shape == (TEST_EXAMPLES, digits["info"].num_classes)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=TOLERANCE)
    assert outputs["classes"].dtype == np.int64
    np.testing.assert_array_equal(outputs["classes"], probabilities.argmax(-1))


def test_ensemble_export_serves_the_mean_of_softmax_probabilities(trained_model, digits,
                                                                  served):
  mean = np.mean(_keras_probabilities(trained_model, digits["test_images"]), axis=0)
  outputs = served[ENSEMBLE_NAME]
  np.testing.assert_allclose(outputs["probabilities"], mean, atol=TOLERANCE)
  np.testing.assert_allclose(outputs["probabilities"].sum(-1), 1.0, atol=TOLERANCE)
  assert outputs["classes"].dtype == np.int64
  np.testing.assert_array_equal(outputs["classes"], mean.argmax(-1))


def _saved_model_cli():
  beside_python = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  return beside_python if os.path.isfile(beside_python) else shutil.which("saved_model_cli")


def test_saved_model_cli_shows_the_serving_signature(exported):
  cli = _saved_model_cli()
  if cli is None:
    pytest.skip("saved_model_cli (installed with tensorflow) is not on this machine.")
  result = subprocess.run([cli, "show", "--dir", exported[ENSEMBLE_NAME], "--all"],
                          capture_output=True, text=True, timeout=120,
                          env=subprocess_environment())
  assert result.returncode == 0, result.stderr[-3000:]
  shown = result.stdout.lower()  # dtypes are printed as DT_UINT8, DT_INT64.
  for expected in ("serving_default", "images", "uint8", "probabilities", "classes",
                   "int64"):
    assert expected in shown, (expected, result.stdout)


def test_existing_export_is_refused_without_overwrite(digits, tmp_path):
  model = CoDistillation(_classifiers(digits))
  model(tf.zeros((1, *digits["info"].image_shape)))
  stale = tmp_path / "classifier_1" / "stale.txt"
  stale.parent.mkdir()
  stale.write_text("an earlier export")
  with pytest.raises(ValueError, match="overwrite=True"):
    export_saved_models(model, str(tmp_path))
  # Refused before writing anything, not halfway through.
  assert sorted(os.listdir(tmp_path)) == ["classifier_1"]
  assert stale.exists()
  paths = export_saved_models(model, str(tmp_path), overwrite=True)
  assert not stale.exists()
  assert all(os.path.isfile(os.path.join(path, "saved_model.pb")) for path in paths.values())


# -- .keras round trip ------------------------------------------------------------------


def _save_and_load(model, path):
  """Saves and loads `model`, failing on any warning the load raises (e.g. Keras'
  complaint that a custom compile() cannot be restored)."""
  model.save(path)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loaded = keras.saving.load_model(path)
  loud = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
  assert not loud, loud
  return loaded


def _assert_same_predictions(model, loaded, images):
  assert len(loaded.classifiers) == len(model.classifiers)
  for original, restored in zip(model(_pixels(images)), loaded(_pixels(images))):
    np.testing.assert_allclose(restored.numpy(), original.numpy(), rtol=0, atol=1e-6)


def _assert_same_weights(network, restored):
  """Compared in order: after loading, Keras names the variables of a layer wrapped
  in SpectralNormalization without the wrapper's prefix, so paths differ."""
  assert len(network.weights) == len(restored.weights)
  for original, loaded in zip(network.weights, restored.weights):
    np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=original.path)


def test_codistillation_round_trips_through_keras_format(trained_model, digits, tmp_path):
  loaded = _save_and_load(trained_model, str(tmp_path / "codistillation.keras"))
  assert type(loaded) is CoDistillation
  _assert_same_predictions(trained_model, loaded, digits["test_images"])
  # compile() is not saved; compiling again makes the loaded model trainable, and
  # loading the file's weights into the built optimizer brings its state back.
  loaded.compile(keras.optimizers.SGD(0.05))
  loaded.build_optimizers()
  loaded.load_weights(str(tmp_path / "codistillation.keras"))
  assert int(loaded.optimizer.iterations) == int(trained_model.optimizer.iterations) == 2
  metrics = loaded.train_on_batch(_pixels(digits["train_images"][:32]),
                                  digits["train_labels"][:32], return_dict=True)
  assert np.isfinite(metrics["loss"])


def test_dml_noise_exports_its_classifiers_and_round_trips(digits, tmp_path):
  """dml_noise's model has no network but its classifiers: they are what it exports."""
  model = NoisyCoDistillation(_classifiers(digits, seeds=(7, 8)))
  model.compile(keras.optimizers.SGD(0.05))
  model(tf.zeros((1, *digits["info"].image_shape)))
  model.build_optimizers()
  model.train_on_batch(_pixels(digits["train_images"][:32]), digits["train_labels"][:32])
  paths = export_saved_models(model, str(tmp_path / "export"))
  assert sorted(paths) == ["classifier_0", "classifier_1", ENSEMBLE_NAME]
  expected = _keras_probabilities(model, digits["test_images"])
  for i, probabilities in enumerate(expected):
    serve = tf.saved_model.load(paths[f"classifier_{i}"]).signatures["serving_default"]
    served = serve(images=tf.constant(digits["test_images"]))["probabilities"].numpy()
    np.testing.assert_allclose(served, probabilities, atol=TOLERANCE)
  loaded = _save_and_load(model, str(tmp_path / "dml_noise.keras"))
  assert type(loaded) is NoisyCoDistillation
  _assert_same_predictions(model, loaded, digits["test_images"])


def _perturb(networks, seed):
  """Moves every variable off its initial value (the generator's output layer
  starts at zero, batch-norm statistics at 0 and 1), so that a variable loaded
  into the wrong place or not at all shows. Cheaper than tracing an ACN step."""
  rng = np.random.default_rng(seed)
  for network in networks:
    for variable in network.weights:
      variable.assign(variable.numpy() + rng.normal(0.0, 0.05, variable.shape))


def test_adversarial_codistillation_round_trips_through_keras_format(digits, tmp_path):
  image_shape = digits["info"].image_shape
  keras.utils.set_random_seed(3)
  generator = generators.build_generator(image_shape, noise_channels=2, filters=8,
                                         residual_blocks=1)
  discriminator = discriminators.build_discriminator(image_shape, filters=8)
  model = AdversarialCoDistillation(_classifiers(digits, seeds=(4, 5)), generator,
                                    discriminator)
  model.compile(keras.optimizers.SGD(0.05),
                generator_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
                discriminator_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
                adversarial=spec_phase_a(noise_channels=2, ras_steps=1, ras_step_size=0.05,
                                         ras_epsilon=0.1))
  model(tf.zeros((1, *image_shape)))
  model.build_optimizers()
  _perturb([*model.classifiers, generator, discriminator], seed=0)
  loaded = _save_and_load(model, str(tmp_path / "acn.keras"))
  assert type(loaded) is AdversarialCoDistillation
  _assert_same_predictions(model, loaded, digits["test_images"])
  _assert_same_weights(model.generator, loaded.generator)
  _assert_same_weights(model.discriminator, loaded.discriminator)
  assert np.abs(model.generator.get_layer("residual_out").get_weights()[0]).max() > 0
  images = _pixels(digits["test_images"][:8])
  noise = np.random.default_rng(0).normal(size=(*images.shape[:-1], 2)).astype(np.float32)
  np.testing.assert_array_equal(loaded.generator([images, noise]).numpy(),
                                model.generator([images, noise]).numpy())
  np.testing.assert_array_equal(loaded.discriminator(images).numpy(),
                                model.discriminator(images).numpy())


def test_adversarial_model_without_discriminator_round_trips(digits, tmp_path):
  generator = generators.build_generator(digits["info"].image_shape, noise_channels=2,
                                         filters=8, residual_blocks=1)
  model = AdversarialCoDistillation(_classifiers(digits, seeds=(6,)), generator)
  model(tf.zeros((1, *digits["info"].image_shape)))
  loaded = _save_and_load(model, str(tmp_path / "acn_no_discriminator.keras"))
  assert loaded.discriminator is None
  _assert_same_predictions(model, loaded, digits["test_images"])
  _assert_same_weights(model.generator, loaded.generator)
