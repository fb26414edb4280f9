"""Tests of acn_tf.data against references computed here, independently of the library.

Fake datasets are tiny files written by the tests in the official formats (idx,
CIFAR python pickles); every image encodes its own index so that splits and
shuffles can be checked example by example.
"""

import gzip
import logging
import os
import pickle
import socket
import struct
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from acn_tf import config, data

REAL_FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


# ---------------------------------------------------------------------------
# Helpers: writers of the official formats and fake data with known content.


def write_idx(path, array, magic, compress):
  """Writes an idx file by the published format: big-endian magic, dims, bytes."""
  header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in array.shape)
  content = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
  opener = gzip.open if compress else open
  with opener(path, "wb") as handle:
    handle.write(content)


def indexed_images(count, height, width, channels, seed):
  """Random images whose first two pixels store the example index (count < 65536)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(count, height, width, channels), dtype=np.uint8)
  indices = np.arange(count)
  images[:, 0, 0, 0] = indices % 256
  images[:, 0, 1, 0] = indices // 256
  return images


def index_of(image):
  image = np.asarray(image)
  return int(image[0, 0, 0]) + 256 * int(image[0, 1, 0])


def write_fake_fashion_mnist(directory, num_train, num_test, compress_test=True):
  """Train files gzipped, test files gzipped or plain (both names are accepted)."""
  train_images = indexed_images(num_train, 28, 28, 1, seed=1)[..., 0]
  test_images = indexed_images(num_test, 28, 28, 1, seed=2)[..., 0]
  train_labels = (np.arange(num_train) * 7 % 10).astype(np.uint8)
  test_labels = (np.arange(num_test) * 3 % 10).astype(np.uint8)
  test_suffix = ".gz" if compress_test else ""
  write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"), train_images, 0x803, True)
  write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"), train_labels, 0x801, True)
  write_idx(os.path.join(directory, "t10k-images-idx3-ubyte" + test_suffix), test_images,
            0x803, compress_test)
  write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte" + test_suffix), test_labels,
            0x801, compress_test)
  return train_images, train_labels, test_images, test_labels


def to_numpy(dataset):
  images, labels = [], []
  for image, label in dataset.as_numpy_iterator():
    images.append(image)
    labels.append(label)
  return np.stack(images), np.array(labels)


def cifar_rows(images):
  """HWC images -> official rows: 1024 red, then 1024 green, then 1024 blue bytes."""
  return np.concatenate([images[..., channel].reshape(len(images), -1)
                         for channel in range(3)], axis=1)


def expected_hwc(rows):
  """Independent inverse of the official row layout, one channel plane at a time."""
  images = np.zeros((len(rows), 32, 32, 3), np.uint8)
  for channel in range(3):
    images[..., channel] = rows[:, channel * 1024:(channel + 1) * 1024].reshape(-1, 32, 32)
  return images


@pytest.fixture
def no_tfds_download(monkeypatch):
  """Makes every tfds download fail at once, as it would offline, without any network."""

  def refuse(*args, **kwargs):
    raise OSError("network disabled in tests")

  monkeypatch.setattr(data, "check_download_host", lambda name: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


# ---------------------------------------------------------------------------
# idx reader.


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_images_and_labels(tmp_path, compress):
  images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
  labels = np.array([9, 0, 4], np.uint8)
  write_idx(tmp_path / "images", images, 0x803, compress)
  write_idx(tmp_path / "labels", labels, 0x801, compress)
  read_images = data.read_idx(str(tmp_path / "images"))
  read_labels = data.read_idx(str(tmp_path / "labels"))
  assert read_images.shape == (3, 5, 4) and read_images.dtype == np.uint8
  np.testing.assert_array_equal(read_images, images)
  np.testing.assert_array_equal(read_labels, labels)


def test_read_idx_rejects_bad_magic(tmp_path):
  write_idx(tmp_path / "bad.gz", np.zeros((2, 2), np.uint8), 0x00000902, True)
  with pytest.raises(ValueError, match="magic number 0x00000902"):
    data.read_idx(str(tmp_path / "bad.gz"))


def test_read_idx_rejects_truncated_file(tmp_path):
  path = tmp_path / "short"
  with open(path, "wb") as handle:
    handle.write(struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(10))
  with pytest.raises(ValueError, match="truncated"):
    data.read_idx(str(path))


# ---------------------------------------------------------------------------
# Fashion-MNIST sources.


def test_fashion_mnist_loads_idx_files_from_data_dir(tmp_path):
  train_images, train_labels, test_images, test_labels = write_fake_fashion_mnist(
      str(tmp_path), num_train=12, num_test=5, compress_test=False)
  splits = data.load_splits("fashion_mnist", str(tmp_path))
  info = splits.info
  assert (info.num_train, info.num_validation, info.num_test) == (12, 0, 5)
  assert info.image_shape == (28, 28, 1) and info.num_classes == 10
  assert str(tmp_path) in info.source
  assert splits.validation is None
  image_spec, label_spec = splits.train.element_spec
  assert image_spec.dtype == tf.uint8 and label_spec.dtype == tf.int64
  assert tuple(image_spec.shape) == (28, 28, 1)
  images, labels = to_numpy(splits.train)
  np.testing.assert_array_equal(images[..., 0], train_images)
  np.testing.assert_array_equal(labels, train_labels)
  images, labels = to_numpy(splits.test)
  np.testing.assert_array_equal(images[..., 0], test_images)
  np.testing.assert_array_equal(labels, test_labels)


@pytest.fixture
def tfds_default_dir(tmp_path, monkeypatch):
  """tfds' default data_dir (no --data_dir given) is an empty folder of the test's,
  not ~/tensorflow_datasets, whatever that holds on this machine."""
  default = tmp_path / "tfds_default"
  default.mkdir()
  builder = data._tfds_builder
  monkeypatch.setattr(data, "_tfds_builder",
                      lambda name, data_dir: builder(name, data_dir or str(default)))
  return default


def test_fashion_mnist_missing_everywhere_names_every_place(tmp_path, monkeypatch,
                                                           no_tfds_download,
                                                           tfds_default_dir):
  debian_dir = str(tmp_path / "no-debian-package")
  monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian_dir)
  with pytest.raises(data.DataNotFoundError) as raised:
    data.load_splits("fashion_mnist", None)
  message = str(raised.value)
  assert isinstance(raised.value, FileNotFoundError)
  assert "--data_dir: not given" in message
  assert str(tfds_default_dir) in message
  assert debian_dir in message
  assert "apt-get install dataset-fashion-mnist" in message
  assert "train-images-idx3-ubyte.gz" in message
  assert "download_and_prepare" in message
  assert "network disabled in tests" in message  # The tfds failure is reported, not hidden.


def test_an_explicit_data_dir_is_the_only_place_looked_in(tmp_path, monkeypatch):
  """Valid files in the Debian package's directory, none in --data_dir: an error
  listing what --data_dir should hold; neither the Debian copy nor a download."""
  debian_dir = tmp_path / "debian"
  debian_dir.mkdir()
  write_fake_fashion_mnist(str(debian_dir), num_train=12, num_test=5)
  monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", str(debian_dir))
  downloads = []
  monkeypatch.setattr(data, "_download_and_prepare", downloads.append)
  data_dir = tmp_path / "empty_data_dir"
  data_dir.mkdir()
  with pytest.raises(data.DataNotFoundError) as raised:
    data.load_splits("fashion_mnist", str(data_dir))
  message = str(raised.value)
  assert f"Could not find the fashion_mnist dataset in --data_dir={data_dir}" in message
  assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
  assert f'data_dir="{data_dir}").download_and_prepare()' in message
  assert str(debian_dir) not in message and downloads == []
  # Without --data_dir the same Debian copy is found.
  assert str(debian_dir) in data.load_splits("fashion_mnist", None).info.source


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_data_dir_that_is_not_a_directory_is_an_error(tmp_path, kind):
  path = tmp_path / "data"
  if kind == "file":
    path.write_text("")
  with pytest.raises(data.DataNotFoundError, match="does not exist" if kind == "missing"
                     else "not a directory") as raised:
    data.load_splits("digits", str(path))
  assert f"--data_dir={path}" in str(raised.value)


@pytest.mark.skipif(not os.path.exists(REAL_FASHION_MNIST),
                    reason=f"{REAL_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian_package(tfds_default_dir):
  # tfds_default_dir keeps tfds away from any prepared copy in ~/tensorflow_datasets.
  splits = data.load_splits("fashion_mnist", None)
  info = splits.info
  assert (info.num_train, info.num_test) == (60000, 10000)
  assert info.image_shape == (28, 28, 1)
  assert data.DEBIAN_FASHION_MNIST_DIR in info.source
  assert int(splits.train.cardinality()) == 60000
  with gzip.open(REAL_FASHION_MNIST) as handle:
    first_image = np.frombuffer(handle.read(16 + 784), np.uint8, offset=16).reshape(28, 28)
  image, _ = next(splits.train.as_numpy_iterator())
  assert image.shape == (28, 28, 1)
  np.testing.assert_array_equal(image[..., 0], first_image)
  # The official test split is balanced: 1000 examples of each class.
  test_labels = next(splits.test.map(lambda image, label: label).batch(10000)
                     .as_numpy_iterator())
  np.testing.assert_array_equal(np.bincount(test_labels, minlength=10), [1000] * 10)


# ---------------------------------------------------------------------------
# CIFAR sources.


def test_cifar100_reads_official_python_tarball(tmp_path):
  rng = np.random.default_rng(5)
  train_rows = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
  test_rows = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
  train_fine, test_fine = [99, 0, 57, 3, 12, 42], [7, 98, 1]
  batches = {
      "train": {b"data": train_rows, b"fine_labels": train_fine,
                b"coarse_labels": [19] * 6},
      "test": {b"data": test_rows, b"fine_labels": test_fine, b"coarse_labels": [18] * 3},
  }
  source_dir = tmp_path / "cifar-100-python"
  source_dir.mkdir()
  for name, batch in batches.items():
    with open(source_dir / name, "wb") as handle:
      pickle.dump(batch, handle)
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  with tarfile.open(data_dir / "cifar-100-python.tar.gz", "w:gz") as archive:
    archive.add(source_dir, arcname="cifar-100-python")

  splits = data.load_splits("cifar100", str(data_dir))
  assert splits.info.num_classes == 100 and splits.info.image_shape == (32, 32, 3)
  assert (splits.info.num_train, splits.info.num_test) == (6, 3)
  assert "cifar-100-python.tar.gz" in splits.info.source
  images, labels = to_numpy(splits.train)
  np.testing.assert_array_equal(images, expected_hwc(train_rows))
  np.testing.assert_array_equal(labels, train_fine)
  images, labels = to_numpy(splits.test)
  np.testing.assert_array_equal(images, expected_hwc(test_rows))
  np.testing.assert_array_equal(labels, test_fine)
  # Pixel (h=1, w=2) of the green plane sits at row offset 1024 + 1 * 32 + 2.
  assert images[0, 1, 2, 1] == test_rows[0, 1024 + 34]


def test_cifar10_reads_extracted_folder(tmp_path):
  folder = tmp_path / "cifar-10-batches-py"
  folder.mkdir()
  images = indexed_images(12, 32, 32, 3, seed=8)
  names = [f"data_batch_{number}" for number in range(1, 6)] + ["test_batch"]
  for position, name in enumerate(names):
    chosen = images[2 * position:2 * position + 2]
    with open(folder / name, "wb") as handle:
      pickle.dump({b"data": cifar_rows(chosen), b"labels": [position, 9 - position]}, handle)
  splits = data.load_splits("cifar10", str(tmp_path))
  assert (splits.info.num_train, splits.info.num_test) == (10, 2)
  train_images, train_labels = to_numpy(splits.train)
  np.testing.assert_array_equal(train_images, images[:10])
  np.testing.assert_array_equal(train_labels, [0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
  test_images, _ = to_numpy(splits.test)
  np.testing.assert_array_equal(test_images, images[10:])


def test_cifar_missing_raises_with_instructions(tmp_path, no_tfds_download):
  with pytest.raises(data.DataNotFoundError) as raised:
    data.load_splits("cifar100", str(tmp_path))
  message = str(raised.value)
  assert os.path.join(str(tmp_path), "cifar-100-python.tar.gz") in message
  assert os.path.join(str(tmp_path), "cifar-100-python") in message
  assert "download_and_prepare()" in message
  # An explicit data_dir is the only place looked in: no download was tried.
  assert "network disabled in tests" not in message


def test_cifar_missing_without_data_dir_reports_the_download(no_tfds_download,
                                                             tfds_default_dir):
  with pytest.raises(data.DataNotFoundError) as raised:
    data.load_splits("cifar100", None)
  message = str(raised.value)
  assert "download_and_prepare()" in message and "network disabled in tests" in message


def test_cifar100_pipeline_under_tfds_mock_data(tmp_path, monkeypatch):
  # mock_data stands in for the download; the offline host check would refuse first.
  monkeypatch.setattr(data, "check_download_host", lambda name: None)
  with tfds.testing.mock_data(num_examples=20):
    # No --data_dir: mock_data stands in for tfds' download into its default place.
    splits = data.load_splits("cifar100", None)
    assert "tfds" in splits.info.source
    assert (splits.info.num_train, splits.info.num_test) == (20, 20)

    def first_batch(seed):
      pipeline = data.make_pipeline(splits.train, batch_size=8, training=True,
                                    augmentation="crop_flip", seed=seed)
      return next(pipeline.as_numpy_iterator())

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
    evaluation = data.make_pipeline(splits.test, batch_size=8, training=False)
    assert [len(batch_labels) for _, batch_labels in evaluation.as_numpy_iterator()] == [8, 8, 4]


# ---------------------------------------------------------------------------
# Pipelines.


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
  pipeline = data.make_pipeline(dataset, batch_size=len(images), training=True,
                                augmentation=augmentation, crop_padding=padding, seed=seed)
  outputs, labels = next(pipeline.as_numpy_iterator())
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
  pipeline = data.make_pipeline(dataset, batch_size=16, training=True, seed=4)
  first_epoch = [labels for _, labels in pipeline.as_numpy_iterator()]
  second_epoch = [labels for _, labels in pipeline.as_numpy_iterator()]
  assert sorted(first_epoch[0]) == list(range(16))
  assert not np.array_equal(first_epoch[0], second_epoch[0])
  repeated = data.make_pipeline(dataset, batch_size=16, training=True, seed=4)
  np.testing.assert_array_equal(next(repeated.as_numpy_iterator())[1], first_epoch[0])


def test_evaluation_pipeline_keeps_order_values_and_remainder():
  images, dataset = small_dataset(count=12)
  pipeline = data.make_pipeline(dataset, batch_size=5, training=False,
                                augmentation="crop_flip")
  batches = list(pipeline.as_numpy_iterator())
  assert [len(labels) for _, labels in batches] == [5, 5, 2]
  outputs = np.concatenate([batch_images for batch_images, _ in batches])
  np.testing.assert_allclose(outputs, images.astype(np.float32) / 255.0, rtol=0, atol=1e-7)
  np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]),
                                np.arange(12))
  dropped = data.make_pipeline(dataset, batch_size=5, training=True)
  assert [len(labels) for _, labels in dropped.as_numpy_iterator()] == [5, 5]


def test_make_pipeline_rejects_unknown_augmentation():
  _, dataset = small_dataset()
  with pytest.raises(ValueError, match="crop_flip"):
    data.make_pipeline(dataset, batch_size=4, training=True, augmentation="cutout")


# ---------------------------------------------------------------------------
# digits, validation carve-out, names.


def test_digits_fixed_split():
  splits = data.load_splits("digits", None)
  info = splits.info
  assert (info.num_train, info.num_test, info.num_classes) == (1437, 360, 10)
  assert info.image_shape == (8, 8, 1)
  train_images, train_labels = to_numpy(splits.train)
  test_images, test_labels = to_numpy(splits.test)
  assert train_images.shape == (1437, 8, 8, 1) and train_images.dtype == np.uint8
  assert train_images.min() == 0 and train_images.max() == 255
  # 0..16 scaled by 255/16 and rounded: 16 -> 255, 8 -> 128 (127.5 rounds to even).
  allowed = set(np.round(np.arange(17) * 255.0 / 16.0).astype(int))
  assert set(np.unique(np.concatenate([train_images, test_images]))) <= allowed
  # Stratified: every class has 35 to 37 of the 360 test images.
  counts = np.bincount(test_labels, minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37
  assert set(np.unique(train_labels)) == set(range(10))
  again_images, _ = to_numpy(data.load_splits("digits", None).test)
  np.testing.assert_array_equal(again_images, test_images)


def carve(tmp_path, **kwargs):
  splits = data.load_splits("fashion_mnist", str(tmp_path), **kwargs)
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
    data.load_splits("mnist", None)
  for name in ("digits", "fashion_mnist", "cifar10", "cifar100"):
    assert name in str(raised.value)


def test_dataset_names_match_config():
  assert data.DATASET_NAMES == config.DATASETS
  assert data.AUGMENTATIONS == config.AUGMENTATIONS


# ---------------------------------------------------------------------------
# Normalisation statistics.


def test_channel_statistics_matches_numpy():
  rng = np.random.default_rng(9)
  images = rng.integers(0, 256, size=(30, 5, 4, 3), dtype=np.uint8)
  images[..., 2] //= 4  # Channels with clearly different statistics.
  dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(30, np.int64)))
  mean, variance = data.channel_statistics(dataset)
  scaled = images.astype(np.float64) / 255.0
  np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-10)
  np.testing.assert_allclose(variance, scaled.var(axis=(0, 1, 2)), rtol=1e-8)
  mean_of_first, _ = data.channel_statistics(dataset, max_examples=7)
  np.testing.assert_allclose(mean_of_first, scaled[:7].mean(axis=(0, 1, 2)), rtol=1e-10)


def test_download_host_check_fails_fast_when_the_host_does_not_resolve(monkeypatch):
  def unresolvable(host, port):
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
  with pytest.raises(ConnectionError, match="www.cs.toronto.edu"):
    data.check_download_host("cifar100")
  data.check_download_host("digits")  # No download host: nothing to check.


@pytest.mark.skipif(not os.path.exists(REAL_FASHION_MNIST),
                    reason=f"{REAL_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)")
def test_looking_for_a_tfds_copy_that_is_not_there_does_not_warn(tfds_default_dir, caplog):
  """tfds warns that a version folder has no dataset_info.json when asked whether an
  unprepared dataset is prepared; the lookup then goes on, so the warning is noise."""
  with caplog.at_level(logging.WARNING):
    splits = data.load_splits("fashion_mnist", None, train_examples=10)
  assert splits.info.num_train == 10 and data.DEBIAN_FASHION_MNIST_DIR in splits.info.source
  assert "dataset_info.json" not in caplog.text
