"""Tests of acn_tf.data.pipeline against references computed here, independently of the library:
the data_dir check, validation carve-out, input pipelines, pixel scaling and the
channel statistics.

Fake datasets are tiny files written by the tests in the official formats
(tests/dataset_files.py); every image encodes its own index so that splits and
shuffles can be checked example by example.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from acn_tf import errors
from acn_tf.config.schema import ExperimentConfig
from acn_tf.data import downloads, pipeline
from acn_tf.run import training
from dataset_files import index_of, indexed_images, to_numpy, write_fake_fashion_mnist


# ---------------------------------------------------------------------------
# The data_dir check.


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_data_dir_that_is_not_a_directory_is_an_error(tmp_path, kind):
  path = tmp_path / "data"
  if kind == "file":
    path.write_text("")
  with pytest.raises(errors.DataNotFoundError, match="does not exist" if kind == "missing"
                     else "not a directory") as raised:
    pipeline.load_splits("digits", str(path))
  assert f"--data_dir={path}" in str(raised.value)


# ---------------------------------------------------------------------------
# Pipelines.


def test_cifar100_pipeline_under_tfds_mock_data(tmp_path, monkeypatch):
  # mock_data stands in for the download; the offline host check would refuse first.
  monkeypatch.setattr(downloads, "check_download_host", lambda name: None)
  with tfds.testing.mock_data(num_examples=20):
    # No --data_dir: mock_data stands in for tfds' download into its default place.
    splits = pipeline.load_splits("cifar100", None)
    assert "tfds" in splits.info.source
    assert (splits.info.num_train, splits.info.num_test) == (20, 20)

    def first_batch(seed):
      batched = pipeline.make_pipeline(splits.train, batch_size=8, training=True,
                                       augmentation="crop_flip", seed=seed)
      return next(batched.as_numpy_iterator())

    images, labels = first_batch(seed=1)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (8,) and labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    assert np.all((labels >= 0) & (labels < 100))
    same_images, same_labels = first_batch(seed=1)
    np.testing.assert_array_equal(images, same_images)
    np.testing.assert_array_equal(labels, same_labels)
    other_images, _ = first_batch(seed=2)
    assert not np.array_equal(images, other_images)
    evaluation = pipeline.make_pipeline(splits.test, batch_size=8, training=False)
    assert [len(batch_labels) for _, batch_labels in evaluation.as_numpy_iterator()] == [8, 8, 4]


def small_dataset(count=16, height=6, width=6, channels=2):
  images = indexed_images(count, height, width, channels, seed=11)
  labels = np.arange(count, dtype=np.int64)
  return images, tf.data.Dataset.from_tensor_slices((images, labels))


def window_offsets(padded, target):
  """All (top, left) offsets where `target` equals a window of `padded`."""
  height, width = target.shape[:2]
  return [(top, left)
          for top in range(padded.shape[0] - height + 1)
          for left in range(padded.shape[1] - width + 1)
          if np.array_equal(padded[top:top + height, left:left + width], target)]


def augmented_examples(augmentation, padding, seed=3):
  images, dataset = small_dataset()
  batched = pipeline.make_pipeline(dataset, batch_size=len(images), training=True,
                                   augmentation=augmentation, crop_padding=padding, seed=seed)
  outputs, labels = next(batched.as_numpy_iterator())
  # Exact: every output pixel is k / 255 for an integer k.
  return images, np.round(outputs * 255.0).astype(np.uint8), labels


def test_crop_is_a_window_of_the_zero_padded_input():
  padding = 2
  images, outputs, labels = augmented_examples("crop", padding)
  offsets = []
  for output, label in zip(outputs, labels):
    padded = np.pad(images[label], ((padding, padding), (padding, padding), (0, 0)))
    matches = window_offsets(padded, output)
    assert matches, f"example {label} is no window of its zero-padded input"
    offsets.append(matches[0])
  assert any(offset != (padding, padding) for offset in offsets), "no example was shifted"


def test_crop_flip_is_a_window_or_its_mirror():
  padding = 1
  images, outputs, labels = augmented_examples("crop_flip", padding)
  flipped_count = 0
  for output, label in zip(outputs, labels):
    padded = np.pad(images[label], ((padding, padding), (padding, padding), (0, 0)))
    straight = window_offsets(padded, output)
    mirrored = window_offsets(padded, output[:, ::-1])
    assert straight or mirrored, f"example {label} is no (mirrored) padded window"
    flipped_count += bool(mirrored) and not straight
  assert 0 < flipped_count < len(labels)


def test_training_pipeline_is_seeded_and_reshuffles_every_epoch():
  _, dataset = small_dataset()
  batched = pipeline.make_pipeline(dataset, batch_size=16, training=True, seed=4)
  first_epoch = [labels for _, labels in batched.as_numpy_iterator()]
  second_epoch = [labels for _, labels in batched.as_numpy_iterator()]
  assert sorted(first_epoch[0]) == list(range(16))
  assert not np.array_equal(first_epoch[0], second_epoch[0])
  repeated = pipeline.make_pipeline(dataset, batch_size=16, training=True, seed=4)
  np.testing.assert_array_equal(next(repeated.as_numpy_iterator())[1], first_epoch[0])


@pytest.mark.parametrize("steps_per_epoch", [0, 3])  # 0: the whole split, 5 batches.
def test_the_training_stream_resumed_after_an_epoch_reads_what_an_uninterrupted_run_reads(
    tmp_path, steps_per_epoch):
  """The stream a run trains on is the batched split passed over again and again,
  each pass as a new iterator of it reads it (what Keras does each epoch with a
  finite dataset), and the stream started after epoch 2 is the uninterrupted
  stream from epoch 3 on: order, crops and flips alike; whatever iterators were
  opened on either before."""
  write_fake_fashion_mnist(str(tmp_path), 40, 10)
  splits = pipeline.load_splits("fashion_mnist", str(tmp_path))
  config = ExperimentConfig.from_fields(name="stream", dataset="fashion_mnist", batch_size=8,
                                        augmentation="crop_flip", crop_padding=1, seed=3,
                                        steps_per_epoch=steps_per_epoch)
  steps, epochs = steps_per_epoch or 5, 4
  passes = pipeline.make_pipeline(splits.train, batch_size=8, training=True,
                                  augmentation="crop_flip", crop_padding=1, seed=3)
  expected = [batch for _ in range(epochs) for batch in passes.as_numpy_iterator()]
  stream = training.training_pipeline(config, splits)
  next(iter(stream))  # An iterator of its own first, as Keras opens under a strategy.
  stream = list(stream.take(epochs * steps).as_numpy_iterator())
  resumed = training.training_pipeline(config, splits, start_epoch=2)
  next(iter(resumed))
  resumed = list(resumed.take((epochs - 2) * steps).as_numpy_iterator())
  assert (len(stream), len(resumed)) == (epochs * steps, (epochs - 2) * steps)
  for (images, labels), (expected_images, expected_labels) in zip(
      stream + resumed, expected[:epochs * steps] + expected[2 * steps:epochs * steps]):
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
  assert not np.array_equal(expected[0][1], expected[5][1])  # The passes differ.


def test_evaluation_pipeline_keeps_order_values_and_remainder():
  images, dataset = small_dataset(count=12)
  batched = pipeline.make_pipeline(dataset, batch_size=5, training=False,
                                   augmentation="crop_flip")
  batches = list(batched.as_numpy_iterator())
  assert [len(labels) for _, labels in batches] == [5, 5, 2]
  outputs = np.concatenate([batch_images for batch_images, _ in batches])
  np.testing.assert_allclose(outputs, images.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
  np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]),
                                np.arange(12))
  dropped = pipeline.make_pipeline(dataset, batch_size=5, training=True)
  assert [len(labels) for _, labels in dropped.as_numpy_iterator()] == [5, 5]


def test_make_pipeline_rejects_unknown_augmentation():
  _, dataset = small_dataset()
  with pytest.raises(ValueError, match="crop_flip"):
    pipeline.make_pipeline(dataset, batch_size=4, training=True, augmentation="cutout")

# ---------------------------------------------------------------------------
# Validation carve-out, names.


def carve(tmp_path, **kwargs):
  splits = pipeline.load_splits("fashion_mnist", str(tmp_path), **kwargs)
  train_ids = [index_of(image) for image, _ in splits.train.as_numpy_iterator()]
  validation_ids = ([index_of(image) for image, _ in splits.validation.as_numpy_iterator()]
                    if splits.validation is not None else [])
  return splits, train_ids, validation_ids


def test_validation_is_carved_from_train_deterministically(tmp_path):
  _, _, test_images, test_labels = write_fake_fashion_mnist(str(tmp_path), 50, 10)
  splits, train_ids, validation_ids = carve(tmp_path, validation_fraction=0.2, seed=1)
  assert (splits.info.num_train, splits.info.num_validation, splits.info.num_test) == (40, 10, 10)
  assert len(train_ids) == 40 and len(validation_ids) == 10
  assert not set(train_ids) & set(validation_ids)
  assert sorted(train_ids + validation_ids) == list(range(50))
  assert int(splits.train.cardinality()) == 40
  assert int(splits.validation.cardinality()) == 10
  images, labels = to_numpy(splits.test)
  np.testing.assert_array_equal(images[..., 0], test_images)
  np.testing.assert_array_equal(labels, test_labels)

  _, _, same_validation = carve(tmp_path, validation_fraction=0.2, seed=1)
  _, _, other_validation = carve(tmp_path, validation_fraction=0.2, seed=2)
  assert same_validation == validation_ids
  assert sorted(other_validation) != sorted(validation_ids)


def test_train_examples_limit_applies_after_carve_out(tmp_path):
  write_fake_fashion_mnist(str(tmp_path), 50, 10)
  _, all_train_ids, validation_ids = carve(tmp_path, validation_fraction=0.2, seed=1)
  splits, train_ids, limited_validation = carve(tmp_path, validation_fraction=0.2, seed=1,
                                                train_examples=15)
  assert (splits.info.num_train, splits.info.num_validation) == (15, 10)
  assert train_ids == all_train_ids[:15]
  assert limited_validation == validation_ids
  no_validation, _, _ = carve(tmp_path, validation_fraction=0.0)
  assert no_validation.validation is None and no_validation.info.num_validation == 0


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError) as raised:
    pipeline.load_splits("mnist", None)
  for name in ("digits", "fashion_mnist", "cifar10", "cifar100"):
    assert name in str(raised.value)


# ---------------------------------------------------------------------------
# Pixel scaling and normalisation statistics.


def test_pixels_to_unit_range_divides_every_byte_by_255():
  pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
  scaled = pipeline.pixels_to_unit_range(tf.constant(pixels))
  assert scaled.dtype == tf.float32
  np.testing.assert_array_equal(scaled.numpy(), pixels.astype(np.float32) / np.float32(255.0))
  assert scaled.numpy().min() == 0.0 and scaled.numpy().max() == 1.0
  in_float64 = pipeline.pixels_to_unit_range(tf.constant(pixels), tf.float64)
  np.testing.assert_array_equal(in_float64.numpy(), pixels.astype(np.float64) / 255.0)


def test_channel_statistics_matches_numpy():
  rng = np.random.default_rng(9)
  images = rng.integers(0, 256, size=(30, 5, 4, 3), dtype=np.uint8)
  images[..., 2] //= 4  # Channels with clearly different statistics.
  dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(30, np.int64)))
  mean, variance = pipeline.channel_statistics(dataset)
  scaled = images.astype(np.float64) / 255.0
  np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-10)
  np.testing.assert_allclose(variance, scaled.var(axis=(0, 1, 2)), rtol=1e-8)
  mean_of_first, _ = pipeline.channel_statistics(dataset, max_examples=7)
  np.testing.assert_allclose(mean_of_first, scaled[:7].mean(axis=(0, 1, 2)), rtol=1e-10)


def test_channel_statistics_takes_float_images_as_already_in_unit_range():
  images = np.random.default_rng(10).uniform(size=(9, 3, 3, 2)).astype(np.float32)
  mean, variance = pipeline.channel_statistics(tf.data.Dataset.from_tensor_slices(images))
  pixels = images.astype(np.float64)
  np.testing.assert_allclose(mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-10)
  np.testing.assert_allclose(variance, pixels.var(axis=(0, 1, 2)), rtol=1e-8)
