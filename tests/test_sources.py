"""Tests of the dataset sources (acn_tf/data/sources.py and the modules of each source)
against references computed here, independently of the library.

Fake datasets are tiny files written by the tests in the official formats (idx,
CIFAR python pickles); every image encodes its own index so that what the readers
return can be checked example by example.
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

from acn_tf import errors
from acn_tf.data import downloads, fashion_mnist, pipeline, tfds_source
from dataset_files import indexed_images, to_numpy, write_fake_fashion_mnist, write_idx

REAL_FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


# ---------------------------------------------------------------------------
# Helpers: the CIFAR row layout, and tfds kept offline.


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

  monkeypatch.setattr(downloads, "check_download_host", lambda name: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


# ---------------------------------------------------------------------------
# idx reader.


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_images_and_labels(tmp_path, compress):
  images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
  labels = np.array([9, 0, 4], np.uint8)
  write_idx(tmp_path / "images", images, 0x803, compress)
  write_idx(tmp_path / "labels", labels, 0x801, compress)
  read_images = fashion_mnist.read_idx(str(tmp_path / "images"))
  read_labels = fashion_mnist.read_idx(str(tmp_path / "labels"))
  assert read_images.shape == (3, 5, 4) and read_images.dtype == np.uint8
  np.testing.assert_array_equal(read_images, images)
  np.testing.assert_array_equal(read_labels, labels)


def test_read_idx_rejects_bad_magic(tmp_path):
  write_idx(tmp_path / "bad.gz", np.zeros((2, 2), np.uint8), 0x00000902, True)
  with pytest.raises(ValueError, match="magic number 0x00000902"):
    fashion_mnist.read_idx(str(tmp_path / "bad.gz"))


def test_read_idx_rejects_truncated_file(tmp_path):
  path = tmp_path / "short"
  with open(path, "wb") as handle:
    handle.write(struct.pack(">IIII", 0x803, 2, 3, 3) + bytes(10))
  with pytest.raises(ValueError, match="truncated"):
    fashion_mnist.read_idx(str(path))


# ---------------------------------------------------------------------------
# Fashion-MNIST sources.


def test_fashion_mnist_loads_idx_files_from_data_dir(tmp_path):
  train_images, train_labels, test_images, test_labels = write_fake_fashion_mnist(
      str(tmp_path), num_train=12, num_test=5, compress_test=False)
  splits = pipeline.load_splits("fashion_mnist", str(tmp_path))
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
  builder = tfds_source.builder_of
  monkeypatch.setattr(tfds_source, "builder_of",
                      lambda name, data_dir: builder(name, data_dir or str(default)))
  return default


def test_fashion_mnist_missing_everywhere_names_every_place(tmp_path, monkeypatch,
                                                           no_tfds_download,
                                                           tfds_default_dir):
  debian_dir = str(tmp_path / "no-debian-package")
  monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", debian_dir)
  with pytest.raises(errors.DataNotFoundError) as raised:
    pipeline.load_splits("fashion_mnist", None)
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
  monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", str(debian_dir))
  started = []
  monkeypatch.setattr(downloads, "download_and_prepare", started.append)
  data_dir = tmp_path / "empty_data_dir"
  data_dir.mkdir()
  with pytest.raises(errors.DataNotFoundError) as raised:
    pipeline.load_splits("fashion_mnist", str(data_dir))
  message = str(raised.value)
  assert f"Could not find the fashion_mnist dataset in --data_dir={data_dir}" in message
  assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
  assert f'data_dir="{data_dir}").download_and_prepare()' in message
  assert str(debian_dir) not in message and started == []
  # Without --data_dir the same Debian copy is found.
  assert str(debian_dir) in pipeline.load_splits("fashion_mnist", None).info.source


@pytest.mark.skipif(not os.path.exists(REAL_FASHION_MNIST),
                    reason=f"{REAL_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian_package(tfds_default_dir):
  # tfds_default_dir keeps tfds away from any prepared copy in ~/tensorflow_datasets.
  splits = pipeline.load_splits("fashion_mnist", None)
  info = splits.info
  assert (info.num_train, info.num_test) == (60000, 10000)
  assert info.image_shape == (28, 28, 1)
  assert fashion_mnist.DEBIAN_FASHION_MNIST_DIR in info.source
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

  splits = pipeline.load_splits("cifar100", str(data_dir))
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
  splits = pipeline.load_splits("cifar10", str(tmp_path))
  assert (splits.info.num_train, splits.info.num_test) == (10, 2)
  train_images, train_labels = to_numpy(splits.train)
  np.testing.assert_array_equal(train_images, images[:10])
  np.testing.assert_array_equal(train_labels, [0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
  test_images, _ = to_numpy(splits.test)
  np.testing.assert_array_equal(test_images, images[10:])


def test_cifar_missing_raises_with_instructions(tmp_path, no_tfds_download):
  with pytest.raises(errors.DataNotFoundError) as raised:
    pipeline.load_splits("cifar100", str(tmp_path))
  message = str(raised.value)
  assert os.path.join(str(tmp_path), "cifar-100-python.tar.gz") in message
  assert os.path.join(str(tmp_path), "cifar-100-python") in message
  assert "download_and_prepare()" in message
  # An explicit data_dir is the only place looked in: no download was tried.
  assert "network disabled in tests" not in message


def test_cifar_missing_without_data_dir_reports_the_download(no_tfds_download,
                                                             tfds_default_dir):
  with pytest.raises(errors.DataNotFoundError) as raised:
    pipeline.load_splits("cifar100", None)
  message = str(raised.value)
  assert "download_and_prepare()" in message and "network disabled in tests" in message


# ---------------------------------------------------------------------------
# digits.


def test_digits_fixed_split():
  splits = pipeline.load_splits("digits", None)
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
  again_images, _ = to_numpy(pipeline.load_splits("digits", None).test)
  np.testing.assert_array_equal(again_images, test_images)


# ---------------------------------------------------------------------------
# tfds downloads.


def test_download_host_check_fails_fast_when_the_host_does_not_resolve(monkeypatch):
  def unresolvable(host, port):
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
  with pytest.raises(ConnectionError, match="www.cs.toronto.edu"):
    downloads.check_download_host("cifar100")
  downloads.check_download_host("digits")  # No download host: nothing to check.


@pytest.mark.skipif(not os.path.exists(REAL_FASHION_MNIST),
                    reason=f"{REAL_FASHION_MNIST} absent (apt-get install dataset-fashion-mnist)")
def test_looking_for_a_tfds_copy_that_is_not_there_does_not_warn(tfds_default_dir, caplog):
  """tfds warns that a version folder has no dataset_info.json when asked whether an
  unprepared dataset is prepared; the lookup then goes on, so the warning is noise."""
  with caplog.at_level(logging.WARNING):
    splits = pipeline.load_splits("fashion_mnist", None, train_examples=10)
  assert splits.info.num_train == 10
  assert fashion_mnist.DEBIAN_FASHION_MNIST_DIR in splits.info.source
  assert "dataset_info.json" not in caplog.text
