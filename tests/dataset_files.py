"""Fake datasets in the official formats, with content the tests chose, shared by
tests/test_sources.py and tests/test_data.py.

Every image encodes its own index so that splits and shuffles can be checked
example by example.
"""

import gzip
import os
import struct

import numpy as np


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

