"""What every dataset source gives (`RawSplits`: the official train/test splits as
stored, uint8 images and int64 labels), the named datasets' shapes and class names,
and the checks and not-found messages the sources share.

DataNotFoundError (no source had the dataset; the message lists every place
looked in and how to get it) and DataFormatError (a file is there but unusable)
are defined in acn_tf/errors.py with the project's other error types.
"""

import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from acn_tf.errors import DataFormatError

# Cap for error strings embedded in DataNotFoundError (tfds errors can be huge).
_MAX_ERROR_CHARS = 300


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
  num_classes: int
  image_shape: Tuple[int, int, int]


DATASET_SPECS: Dict[str, _DatasetSpec] = {
    "digits": _DatasetSpec(10, (8, 8, 1)),
    "fashion_mnist": _DatasetSpec(10, (28, 28, 1)),
    "cifar10": _DatasetSpec(10, (32, 32, 3)),
    "cifar100": _DatasetSpec(100, (32, 32, 3)),
}

# The official class names (Fashion-MNIST's README, CIFAR-10's batches.meta);
# CIFAR-100's come with its files (meta) or its tfds data.
CLASS_NAMES: Dict[str, Tuple[str, ...]] = {
    "digits": tuple(str(digit) for digit in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"),
}


@dataclasses.dataclass(frozen=True)
class RawSplits:
  """The official train/test splits of one source, before any carve-out."""

  train: tf.data.Dataset
  test: tf.data.Dataset
  num_train: int
  num_test: int
  source: str
  class_names: Tuple[str, ...] = ()  # Empty: the source names no classes.
  num_classes: int = 0  # 0: the named dataset's (DATASET_SPECS).

def check_element_spec(dataset: str, split: tf.data.Dataset,
                       image_shape: Tuple[int, int, int], source: str) -> None:
  """Fails early on wrong files (e.g. another dataset under the expected name)."""
  image_spec, label_spec = split.element_spec
  if not image_spec.shape.is_compatible_with(image_shape) or image_spec.dtype != tf.uint8:
    raise DataFormatError(f"{dataset} from {source}: expected uint8 images of shape "
                          f"{image_shape}, got {image_spec.dtype.name} {image_spec.shape}. "
                          "Are these the files of another dataset?")
  if not label_spec.dtype.is_integer:
    raise DataFormatError(f"{dataset} from {source}: expected integer labels, got "
                          f"{label_spec.dtype.name}.")


def check_arrays(images: np.ndarray, labels: np.ndarray, image_shape: Tuple[int, ...],
                 num_classes: int, origin: str, how_to_fix: str) -> None:
  """Shapes and label range of one split read from files, before anything trains on it."""
  if images.shape[1:] != tuple(image_shape):
    raise DataFormatError(f"{origin}: images of shape {images.shape[1:]}, expected "
                          f"{tuple(image_shape)}; {how_to_fix}")
  if len(images) != len(labels):
    raise DataFormatError(f"{origin}: {len(images)} images but {len(labels)} labels; "
                          f"{how_to_fix}")
  if len(labels) == 0:
    raise DataFormatError(f"{origin}: no examples; {how_to_fix}")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise DataFormatError(f"{origin}: labels range over [{labels.min()}, {labels.max()}], "
                          f"expected 0..{num_classes - 1}; {how_to_fix}")


def _from_arrays(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(
      (np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)))


def in_memory_splits(train: Tuple[np.ndarray, np.ndarray],
                     test: Tuple[np.ndarray, np.ndarray], source: str) -> RawSplits:
  return RawSplits(train=_from_arrays(*train),
                   test=_from_arrays(*test),
                   num_train=len(train[1]),
                   num_test=len(test[1]),
                   source=source)


def short_error(error: BaseException) -> str:
  text = f"{type(error).__name__}: {error}"
  return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def not_found_message(dataset: str, looked: Sequence[str],
                      how_to_get: Sequence[str]) -> str:
  lines = [f"Could not find the {dataset} dataset. Looked in:"]
  lines += [f"  {number}. {place}" for number, place in enumerate(looked, start=1)]
  lines.append("To get the data, any one of:")
  lines += [f"  - {option}" for option in how_to_get]
  return "\n".join(lines)


def not_in_data_dir_message(dataset: str, data_dir: str, looked: Sequence[str],
                            how_to_get: Sequence[str]) -> str:
  lines = [f"Could not find the {dataset} dataset in --data_dir={data_dir} (an explicit "
           "--data_dir is the only place looked in). Expected there:"]
  lines += [f"  - {place}" for place in looked]
  lines.append("To fix, any one of:")
  lines += [f"  - {option}" for option in how_to_get]
  lines.append("  - leave --data_dir out to look in the default places (docs/DATA.md, "
               "'Where the data comes from')")
  return "\n".join(lines)
