"""Where each dataset is found and how its files are read: raw uint8 images, int64 labels.

Every named dataset has a loading path that works offline (bundled scikit-learn
data, official files in --data_dir, the Debian Fashion-MNIST package) because the
experiments run on machines without internet. When nothing is found we raise
`DataNotFoundError` naming every place that was searched, and never fall back
to random data: a silently fake dataset would make every result meaningless.

An explicit `data_dir` is the only place looked in: its official files, or
tensorflow-datasets data prepared in it. Nothing is then read from the default
places (the Debian package, ~/tensorflow_datasets) nor downloaded, so a run
always uses the data its command names. A file there that is corrupted,
truncated or of the wrong shape is a `DataFormatError` naming the file.

Besides the named datasets, `tfds:NAME` reads any image-classification dataset of
tensorflow-datasets (image and label from the builder's supervised keys, the
same lookup as the named ones: prepared data in --data_dir only, else prepared
data in tfds' default place, else a download), and `folder:PATH` a folder with
one sub-folder of images per class, read by Keras' image_dataset_from_directory
(a relative PATH is taken from --data_dir when one is given).

Each source gives the official train/test splits as they are stored (`RawSplits`);
acn_tf/data/pipeline.py carves validation data out of them, resizes them and batches them.
"""

import dataclasses
import difflib
import gzip
import os
import pickle
import re
import socket
import tarfile
import urllib.parse
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from acn_tf.errors import ConfigError, DataFormatError, DataNotFoundError

# Where the Debian package `dataset-fashion-mnist` installs the official files.
# A module constant (read at call time) so tests can point it elsewhere.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)

FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# Cap for error strings embedded in DataNotFoundError (tfds errors can be huge).
_MAX_ERROR_CHARS = 300


# DataNotFoundError (no source had the dataset; the message lists every place
# looked in and how to get it) and DataFormatError (a file is there but unusable)
# are defined in acn_tf/errors.py with the project's other error types.


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
  num_classes: int
  image_shape: Tuple[int, int, int]


_SPECS: Dict[str, _DatasetSpec] = {
    "digits": _DatasetSpec(10, (8, 8, 1)),
    "fashion_mnist": _DatasetSpec(10, (28, 28, 1)),
    "cifar10": _DatasetSpec(10, (32, 32, 3)),
    "cifar100": _DatasetSpec(100, (32, 32, 3)),
}

# The official class names (Fashion-MNIST's README, CIFAR-10's batches.meta);
# CIFAR-100's come with its files (meta) or its tfds data.
_CLASS_NAMES: Dict[str, Tuple[str, ...]] = {
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
  num_classes: int = 0  # 0: the named dataset's (_SPECS).


# ---------------------------------------------------------------------------
# The named datasets (config.DATASETS).


def load_builtin(name: str, data_dir: Optional[str]) -> RawSplits:
  """The named dataset `name` from the first place that has it, checked against its
  known image shape, with its number of classes and its official class names
  (where its files name none)."""
  if name == "digits":
    raw = _load_digits()
  elif name == "fashion_mnist":
    raw = _load_fashion_mnist(data_dir)
  else:
    raw = _load_cifar(name, data_dir)
  spec = _SPECS[name]
  _check_element_spec(name, raw.train, spec.image_shape, raw.source)
  _check_element_spec(name, raw.test, spec.image_shape, raw.source)
  return dataclasses.replace(raw, num_classes=spec.num_classes,
                             class_names=raw.class_names or _CLASS_NAMES.get(name, ()))


def _check_element_spec(dataset: str, split: tf.data.Dataset,
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


def _check_arrays(images: np.ndarray, labels: np.ndarray, image_shape: Tuple[int, ...],
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


def _in_memory_splits(train: Tuple[np.ndarray, np.ndarray],
                      test: Tuple[np.ndarray, np.ndarray], source: str) -> RawSplits:
  return RawSplits(train=_from_arrays(*train),
                   test=_from_arrays(*test),
                   num_train=len(train[1]),
                   num_test=len(test[1]),
                   source=source)


def _shorten(error: BaseException) -> str:
  text = f"{type(error).__name__}: {error}"
  return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def _not_found_message(dataset: str, looked: Sequence[str],
                       how_to_get: Sequence[str]) -> str:
  lines = [f"Could not find the {dataset} dataset. Looked in:"]
  lines += [f"  {number}. {place}" for number, place in enumerate(looked, start=1)]
  lines.append("To get the data, any one of:")
  lines += [f"  - {option}" for option in how_to_get]
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# digits: scikit-learn's bundled copy, always available.


def _load_digits() -> RawSplits:
  """The 8x8 digits with a fixed stratified 80/20 split (1437 train / 360 test).

  The dataset has no official test split, so the split is fixed (random_state=0)
  rather than tied to the experiment seed: every run tests on the same images.
  """
  from sklearn import datasets as sklearn_datasets  # Lazy: only digits needs it.
  from sklearn import model_selection

  digits = sklearn_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
  labels = digits.target.astype(np.int64)
  train_images, test_images, train_labels, test_labels = model_selection.train_test_split(
      images, labels, test_size=0.2, random_state=0, stratify=labels)
  return _in_memory_splits((train_images, train_labels), (test_images, test_labels),
                           "scikit-learn load_digits (fixed stratified 80/20 split, "
                           "random_state=0)")


# ---------------------------------------------------------------------------
# Fashion-MNIST: idx files in data_dir, prepared tfds, Debian package, tfds download.


_IDX_FIX = f"replace it with the official file (from {FASHION_MNIST_URL})."


def read_idx(path: str) -> np.ndarray:
  """Reads an idx file (gzip or plain) of unsigned bytes: images (N, H, W) or labels (N,).

  Compression is detected from the content, not the name, so renamed files work.
  A file that cannot be decompressed or parsed raises DataFormatError naming it.
  """
  try:
    with open(path, "rb") as handle:
      content = handle.read()
  except OSError as error:
    raise DataFormatError(f"{path} cannot be read ({error.strerror or error}).") from None
  if content[:2] == b"\x1f\x8b":
    try:
      content = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
      raise DataFormatError(f"{path} is not a readable gzip file ({error}): it is truncated "
                            f"or corrupted; {_IDX_FIX}") from None
  if len(content) < 4:
    raise DataFormatError(f"{path} is too short to be an idx file ({len(content)} bytes); "
                          f"{_IDX_FIX}")
  magic = int.from_bytes(content[:4], "big")
  if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
    raise DataFormatError(
        f"{path} has magic number 0x{magic:08x}, expected 0x{IDX_IMAGES_MAGIC:08x} "
        f"(images) or 0x{IDX_LABELS_MAGIC:08x} (labels): not an idx file of bytes; "
        f"{_IDX_FIX}")
  num_dimensions = content[3]
  header_size = 4 + 4 * num_dimensions
  if len(content) < header_size:
    raise DataFormatError(f"{path}: its header is cut short; the file is truncated; "
                          f"{_IDX_FIX}")
  shape = tuple(int.from_bytes(content[4 + 4 * axis:8 + 4 * axis], "big")
                for axis in range(num_dimensions))
  payload = np.frombuffer(content, dtype=np.uint8, offset=header_size)
  if payload.size != int(np.prod(shape)):
    raise DataFormatError(
        f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes) but "
        f"{payload.size} data bytes follow; the file is truncated; {_IDX_FIX}")
  return payload.reshape(shape)


def _find_idx_files(directory: str) -> Tuple[Optional[Dict[str, str]], str]:
  """Paths of the four Fashion-MNIST files in `directory`, or None and what is missing."""
  found, missing = {}, []
  for role, gz_name in FASHION_MNIST_FILES.items():
    plain_name = gz_name[:-len(".gz")]
    candidates = [os.path.join(directory, name) for name in (gz_name, plain_name)]
    existing = [path for path in candidates if os.path.isfile(path)]
    if existing:
      found[role] = existing[0]
    else:
      missing.append(f"{gz_name} (or {plain_name})")
  if missing:
    return None, f"{directory}: missing {', '.join(missing)}"
  return found, ""


def _read_fashion_idx(paths: Dict[str, str], source: str) -> RawSplits:
  arrays = {role: read_idx(path) for role, path in paths.items()}
  for role, array in arrays.items():
    expected_rank = 3 if role.endswith("images") else 1
    if array.ndim != expected_rank:
      raise DataFormatError(f"{paths[role]} has shape {array.shape}; expected rank "
                            f"{expected_rank} for {role}; {_IDX_FIX}")
  spec = _SPECS["fashion_mnist"]
  for split in ("train", "test"):
    _check_arrays(arrays[f"{split}_images"][..., np.newaxis], arrays[f"{split}_labels"],
                  spec.image_shape, spec.num_classes,
                  f"{paths[f'{split}_images']} and {paths[f'{split}_labels']}",
                  "replace them with the official files (from "
                  f"{FASHION_MNIST_URL}).")
  return _in_memory_splits(
      (arrays["train_images"][..., np.newaxis], arrays["train_labels"]),
      (arrays["test_images"][..., np.newaxis], arrays["test_labels"]), source)


def _prepared_in_data_dir(name: str, data_dir: str, looked: List[str]
                          ) -> Optional[RawSplits]:
  """tensorflow-datasets data already prepared in data_dir (never a download)."""
  try:
    builder = _tfds_builder(name, data_dir)
    if _is_prepared(builder):
      return _tfds_splits(builder)
    looked.append(f"tfds prepared data in {builder.data_dir}: not prepared")
  except Exception as error:  # tfds fails in many ways (imports, files).
    looked.append(f"tfds prepared data in {data_dir}: {_shorten(error)}")
  return None


def _not_in_data_dir_message(dataset: str, data_dir: str, looked: Sequence[str],
                             how_to_get: Sequence[str]) -> str:
  lines = [f"Could not find the {dataset} dataset in --data_dir={data_dir} (an explicit "
           "--data_dir is the only place looked in). Expected there:"]
  lines += [f"  - {place}" for place in looked]
  lines.append("To fix, any one of:")
  lines += [f"  - {option}" for option in how_to_get]
  lines.append("  - leave --data_dir out to look in the default places (docs/DATA.md, "
               "'Where the data comes from')")
  return "\n".join(lines)


def _tfds_download_command(dataset: str, data_dir: str) -> str:
  return ("with internet, run once: python -c 'import tensorflow_datasets as tfds; "
          f"tfds.builder(\"{dataset}\", data_dir=\"{data_dir}\").download_and_prepare()'")


def _load_fashion_mnist(data_dir: Optional[str]) -> RawSplits:
  """With a data_dir, only its files; else the sources in order, offline ones
  before the only online one."""
  looked: List[str] = []
  if data_dir:
    paths, missing = _find_idx_files(data_dir)
    if paths:
      return _read_fashion_idx(paths, f"Fashion-MNIST idx files in {data_dir}")
    looked.append(f"the official idx files: {missing}")
    raw = _prepared_in_data_dir("fashion_mnist", data_dir, looked)
    if raw is not None:
      return raw
    raise DataNotFoundError(_not_in_data_dir_message("fashion_mnist", data_dir, looked, [
        f"put the official files {', '.join(FASHION_MNIST_FILES.values())} (from "
        f"{FASHION_MNIST_URL}, or /usr/share/datasets/fashion-mnist/ after apt-get install "
        f"dataset-fashion-mnist) into {data_dir}",
        _tfds_download_command("fashion_mnist", data_dir)]))
  looked.append("--data_dir: not given, so no idx files were searched there")

  builder = None
  try:
    builder = _tfds_builder("fashion_mnist", data_dir)
    if _is_prepared(builder):
      return _tfds_splits(builder)
    looked.append(f"tfds prepared data in {builder.data_dir}: not prepared")
  except Exception as error:  # tfds fails in many ways (imports, files, network).
    looked.append(f"tfds prepared data (data_dir={data_dir}): {_shorten(error)}")

  debian_dir = DEBIAN_FASHION_MNIST_DIR
  paths, missing = _find_idx_files(debian_dir)
  if paths:
    return _read_fashion_idx(paths, f"Fashion-MNIST idx files in {debian_dir} "
                             "(Debian package dataset-fashion-mnist)")
  looked.append(f"Debian package dataset-fashion-mnist directory {missing}")

  try:
    if builder is None:
      builder = _tfds_builder("fashion_mnist", data_dir)
    _download_and_prepare(builder)
    return _tfds_splits(builder)
  except Exception as error:  # Offline this is a network or import error.
    target = getattr(builder, "data_dir", data_dir)
    looked.append(f"tfds download_and_prepare into {target}: {_shorten(error)}")
  how_to_get = [
      "with internet, run once: python -c 'import tensorflow_datasets as tfds; "
      "tfds.builder(\"fashion_mnist\").download_and_prepare()'",
      f"put the official files {', '.join(FASHION_MNIST_FILES.values())} "
      f"(from {FASHION_MNIST_URL}) into --data_dir",
      f"apt-get install dataset-fashion-mnist (installs them into {debian_dir})",
  ]
  raise DataNotFoundError(_not_found_message("fashion_mnist", looked, how_to_get))


# ---------------------------------------------------------------------------
# CIFAR-10/100: the official "python version" in data_dir, else tfds.


@dataclasses.dataclass(frozen=True)
class _CifarLayout:
  tarball: str
  folder: str
  train_files: Tuple[str, ...]
  test_file: str
  label_key: bytes
  meta_file: str  # The class names: an optional part of a data_dir's copy.
  names_key: bytes


_CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout("cifar-10-python.tar.gz", "cifar-10-batches-py",
                            tuple(f"data_batch_{number}" for number in range(1, 6)),
                            "test_batch", b"labels", "batches.meta", b"label_names"),
    "cifar100": _CifarLayout("cifar-100-python.tar.gz", "cifar-100-python",
                             ("train",), "test", b"fine_labels", "meta",
                             b"fine_label_names"),
}


def _decode_cifar_batch(batch: Dict[bytes, object], label_key: bytes,
                        origin: str) -> Tuple[np.ndarray, np.ndarray]:
  """Rows of 3072 bytes are channel-major (R plane, G plane, B plane): make them HWC."""
  data = np.asarray(batch[b"data"], dtype=np.uint8)
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise DataFormatError(f"{origin}: b'data' has shape {data.shape}, expected (N, 3072); "
                          f"{_CIFAR_FIX}")
  if label_key not in batch:
    raise DataFormatError(f"{origin} has no {label_key!r} labels: is it a batch of the "
                          f"other CIFAR? {_CIFAR_FIX}")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
  return images, labels


_CIFAR_FIX = f"replace it with the official \"python version\" (from {CIFAR_URL})."
# What reading a damaged pickle or tarball raises.
_READ_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, pickle.UnpicklingError,
                ValueError, TypeError, IndexError, AttributeError, ImportError)


def _unpickle(handle, origin: str) -> Dict[bytes, object]:
  # The official files are Python pickles; only files the user put in data_dir
  # (or the official tarball) are ever opened here.
  try:
    batch = pickle.load(handle, encoding="bytes")
  except _READ_ERRORS as error:
    raise DataFormatError(f"{origin} cannot be unpickled ({type(error).__name__}: "
                          f"{str(error)[:200]}): it is truncated or corrupted; "
                          f"{_CIFAR_FIX}") from None
  if not isinstance(batch, dict) or b"data" not in batch:
    raise DataFormatError(f"{origin} is not a CIFAR python batch (no b'data' key); "
                          f"{_CIFAR_FIX}")
  return batch


def _read_cifar_batches(open_member, layout: _CifarLayout, files: Sequence[str],
                        origin: str, dataset: str) -> Tuple[np.ndarray, np.ndarray]:
  parts = []
  for name in files:
    with open_member(name) as handle:
      parts.append(_decode_cifar_batch(_unpickle(handle, f"{origin}/{name}"),
                                       layout.label_key, f"{origin}/{name}"))
  images = np.concatenate([images for images, _ in parts])
  labels = np.concatenate([labels for _, labels in parts])
  spec = _SPECS[dataset]
  _check_arrays(images, labels, spec.image_shape, spec.num_classes,
                f"{origin}/{','.join(files)}", _CIFAR_FIX)
  return images, labels


def _read_cifar_names(handle, layout: _CifarLayout, origin: str,
                      dataset: str) -> Tuple[str, ...]:
  """The class names of the meta file (batches.meta, meta), checked."""
  try:
    meta = pickle.load(handle, encoding="bytes")
    names = tuple(name.decode("utf-8") if isinstance(name, bytes) else str(name)
                  for name in meta[layout.names_key])
  except (*_READ_ERRORS, KeyError, UnicodeDecodeError) as error:
    raise DataFormatError(f"{origin} is not the CIFAR meta file with {layout.names_key!r} "
                          f"({type(error).__name__}: {str(error)[:200]}); "
                          f"{_CIFAR_FIX}") from None
  if len(names) != _SPECS[dataset].num_classes:
    raise DataFormatError(f"{origin} names {len(names)} classes, expected "
                          f"{_SPECS[dataset].num_classes}; {_CIFAR_FIX}")
  return names


def _read_cifar_folder(folder: str, layout: _CifarLayout, dataset: str) -> RawSplits:
  open_member = lambda name: open(os.path.join(folder, name), "rb")
  train = _read_cifar_batches(open_member, layout, layout.train_files, folder, dataset)
  test = _read_cifar_batches(open_member, layout, (layout.test_file,), folder, dataset)
  raw = _in_memory_splits(train, test, f"CIFAR python batches in {folder}")
  meta = os.path.join(folder, layout.meta_file)
  if os.path.isfile(meta):
    with open(meta, "rb") as handle:
      raw = dataclasses.replace(raw, class_names=_read_cifar_names(handle, layout, meta,
                                                                   dataset))
  return raw


def _read_cifar_tarball(path: str, layout: _CifarLayout, dataset: str) -> RawSplits:
  try:
    with tarfile.open(path, "r:*") as archive:

      def open_member(name):
        member = archive.extractfile(f"{layout.folder}/{name}")
        if member is None:
          raise DataFormatError(f"{path}: {layout.folder}/{name} is not a regular file; "
                                f"{_CIFAR_FIX}")
        return member

      try:
        train = _read_cifar_batches(open_member, layout, layout.train_files, path, dataset)
        test = _read_cifar_batches(open_member, layout, (layout.test_file,), path, dataset)
      except KeyError as error:
        raise DataFormatError(f"{path} lacks a member of the official layout: {error} "
                              f"(is it truncated?); {_CIFAR_FIX}") from None
      names: Tuple[str, ...] = ()
      meta = f"{layout.folder}/{layout.meta_file}"
      if meta in archive.getnames():
        names = _read_cifar_names(open_member(layout.meta_file), layout, f"{path}/{meta}",
                                  dataset)
  except DataFormatError:
    raise
  except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
    raise DataFormatError(f"{path} is not a readable tarball ({type(error).__name__}: "
                          f"{str(error)[:200]}): it is truncated or corrupted; "
                          f"{_CIFAR_FIX}") from None
  return dataclasses.replace(_in_memory_splits(train, test, f"CIFAR python tarball {path}"),
                             class_names=names)


def _find_cifar_files(data_dir: str, layout: _CifarLayout, dataset: str
                      ) -> Tuple[Optional[RawSplits], List[str]]:
  """The extracted folder first (no decompression), then the tarball."""
  folder = os.path.join(data_dir, layout.folder)
  if all(os.path.isfile(os.path.join(folder, name))
         for name in layout.train_files + (layout.test_file,)):
    return _read_cifar_folder(folder, layout, dataset), []
  tarball = os.path.join(data_dir, layout.tarball)
  if os.path.isfile(tarball):
    return _read_cifar_tarball(tarball, layout, dataset), []
  files = ", ".join(layout.train_files + (layout.test_file,))
  return None, [f"--data_dir folder {folder}: missing (needs {files})",
                f"--data_dir tarball {tarball}: missing"]


def _load_cifar(dataset: str, data_dir: Optional[str]) -> RawSplits:
  """With a data_dir, only its files (official ones, else tfds data prepared there);
  else tfds (which downloads when online)."""
  layout = _CIFAR_LAYOUTS[dataset]
  looked: List[str] = []
  if data_dir:
    raw, misses = _find_cifar_files(data_dir, layout, dataset)
    if raw is not None:
      return raw
    looked += misses
    raw = _prepared_in_data_dir(dataset, data_dir, looked)
    if raw is not None:
      return raw
    raise DataNotFoundError(_not_in_data_dir_message(dataset, data_dir, looked, [
        f"put {layout.tarball} (the \"python version\" from {CIFAR_URL}) or its "
        f"extracted folder {layout.folder}/ into {data_dir}",
        _tfds_download_command(dataset, data_dir)]))
  looked.append("--data_dir: not given, so no CIFAR python files were searched")
  builder = None
  try:
    builder = _tfds_builder(dataset, data_dir)
    if not _is_prepared(builder):
      _download_and_prepare(builder)
    return _tfds_splits(builder)
  except Exception as error:  # Offline this is a network or import error.
    target = getattr(builder, "data_dir", data_dir)
    looked.append(f"tfds {dataset} (prepared data or download_and_prepare into "
                  f"{target}): {_shorten(error)}")
  how_to_get = [
      "with internet, run once: python -c 'import tensorflow_datasets as tfds; "
      f"tfds.builder(\"{dataset}\").download_and_prepare()'",
      f"put {layout.tarball} (the \"python version\" from {CIFAR_URL}) or its "
      f"extracted folder {layout.folder}/ into --data_dir",
  ]
  raise DataNotFoundError(_not_found_message(dataset, looked, how_to_get))


# ---------------------------------------------------------------------------
# tfds helpers.


def _tfds_builder(name: str, data_dir: Optional[str]):
  # Lazy import: tensorflow_datasets takes seconds to import and the offline
  # sources (digits, idx files, CIFAR files) never need it.
  import tensorflow_datasets as tfds

  return tfds.builder(name, data_dir=data_dir)


def _is_prepared(builder) -> bool:
  """builder.is_prepared() without its warning: where no prepared copy exists, tfds
  warns that a version folder has no dataset_info.json, which is not news when
  the next step is to look elsewhere (or to say where to get the data)."""
  from absl import logging

  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    return builder.is_prepared()
  finally:
    logging.set_verbosity(verbosity)


# The hosts tfds downloads each dataset from. Offline, resolving them fails at
# once, whereas tfds' own download retries take minutes to give up. Other tfds
# datasets: the hosts of the URLs their builder lists (url_infos).
TFDS_DOWNLOAD_HOSTS = {
    "cifar10": "www.cs.toronto.edu",
    "cifar100": "www.cs.toronto.edu",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
}


def _download_hosts(name: str) -> List[str]:
  """TFDS_DOWNLOAD_HOSTS, else the hosts of the tfds builder's checksummed URLs."""
  if name in TFDS_DOWNLOAD_HOSTS:
    return [TFDS_DOWNLOAD_HOSTS[name]]
  if name in _SPECS:  # digits, and any named dataset without a tfds download.
    return []
  try:
    import tensorflow_datasets as tfds
    urls = tfds.builder_cls(name).url_infos or {}
  except Exception:  # Not a tfds builder, or one without a checksums file.
    return []
  return sorted({urllib.parse.urlparse(url).hostname for url in urls} - {None, ""})


def check_download_host(name: str) -> None:
  """Raises ConnectionError quickly when a download host of `name` cannot be resolved."""
  for host in _download_hosts(name):
    try:
      socket.getaddrinfo(host, 443)
    except OSError as error:
      raise ConnectionError(f"cannot resolve {host} (no internet?): {error}") from None


def _download_and_prepare(builder) -> None:
  check_download_host(builder.name)
  builder.download_and_prepare()


def _split_size(split: tf.data.Dataset, builder, split_name: str) -> int:
  """Known cardinality first: under tfds.testing.mock_data the info's split sizes are absent."""
  cardinality = int(split.cardinality())
  if cardinality >= 0:
    return cardinality
  try:
    return int(builder.info.splits[split_name].num_examples)
  except Exception:  # Unknown split metadata: count once.
    return int(split.reduce(np.int64(0), lambda count, _: count + 1))


def _tfds_splits(builder, train_split: str = "train", test_split: str = "test"
                 ) -> RawSplits:
  train = builder.as_dataset(split=train_split, as_supervised=True)
  test = builder.as_dataset(split=test_split, as_supervised=True)
  splits = ("" if (train_split, test_split) == ("train", "test")
            else f", train split {train_split!r}, test split {test_split!r}")
  _, label_key = builder.info.supervised_keys
  label_feature = builder.info.features[label_key]
  return RawSplits(train=train,
                   test=test,
                   num_train=_split_size(train, builder, train_split),
                   num_test=_split_size(test, builder, test_split),
                   source=f"tfds {builder.name} {builder.version} in "
                          f"{builder.data_dir}{splits}",
                   class_names=tuple(getattr(label_feature, "names", None) or ()),
                   num_classes=int(getattr(label_feature, "num_classes", 0) or 0))


# ---------------------------------------------------------------------------
# Any image-classification dataset of tensorflow-datasets: dataset=tfds:NAME.


def _named_tfds_builder(name: str, data_dir: Optional[str]):
  """tfds' builder of `name`; an unknown name is a ConfigError with the closest names."""
  import tensorflow_datasets as tfds
  try:
    return _tfds_builder(name, data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    base = name.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(
        base, tfds.list_builders(with_community_datasets=False), n=3)
    hint = f" Did you mean {', '.join('tfds:' + match for match in close)}?" if close else ""
    raise ConfigError(
        f"dataset=tfds:{name}: tensorflow-datasets {tfds.__version__} has no dataset "
        f"{base!r}.{hint} The catalogue: https://www.tensorflow.org/datasets/catalog "
        "(image classification).") from None
  except Exception as error:  # A bad config or version, unreadable metadata.
    raise ConfigError(f"dataset=tfds:{name}: tensorflow-datasets cannot make its builder "
                      f"({_shorten(error)}). Check the name, /CONFIG and :VERSION against "
                      "https://www.tensorflow.org/datasets/catalog.") from None


def _check_image_classification(builder, name: str) -> None:
  """An image and a class label as the builder's supervised keys, 8-bit images."""
  import tensorflow_datasets as tfds
  info = builder.info
  keys = info.supervised_keys
  wanted = ("acn-tf reads datasets whose supervised keys are an image and a class label "
            "(tfds Image and ClassLabel features), e.g. tfds:mnist, tfds:svhn_cropped, "
            "tfds:tf_flowers")
  if not (isinstance(keys, tuple) and len(keys) == 2
          and all(isinstance(key, str) for key in keys)):
    raise ConfigError(f"dataset=tfds:{name} is not an image-classification dataset: its "
                      f"supervised keys are {keys!r}. {wanted}.")
  image_key, label_key = keys
  image, label = info.features[image_key], info.features[label_key]
  if not isinstance(image, tfds.features.Image) or not isinstance(
      label, tfds.features.ClassLabel):
    raise ConfigError(f"dataset=tfds:{name} is not an image-classification dataset: its "
                      f"supervised keys {image_key!r} and {label_key!r} are a "
                      f"{type(image).__name__} and a {type(label).__name__}. {wanted}.")
  if tf.as_dtype(image.dtype) != tf.uint8:
    raise ConfigError(f"dataset=tfds:{name} has {tf.as_dtype(image.dtype).name} images; "
                      "acn-tf reads 8-bit (uint8) images.")


def load_tfds(name: str, data_dir: Optional[str], train_split: str, test_split: str,
              explicit_splits: bool) -> RawSplits:
  """As the named datasets: with a data_dir only data prepared there; else prepared
  data in tfds' default place, else a download (tfds' own)."""
  builder = _named_tfds_builder(name, data_dir)
  _check_image_classification(builder, name)
  command = _tfds_download_command(name, data_dir) if data_dir else (
      "with internet, run once: python -c 'import tensorflow_datasets as tfds; "
      f"tfds.builder(\"{name}\").download_and_prepare()'")
  if not _is_prepared(builder):
    if data_dir:
      raise DataNotFoundError(_not_in_data_dir_message(
          f"tfds:{name}", data_dir,
          [f"tfds prepared data in {builder.data_dir}: not prepared"], [command]))
    try:
      _download_and_prepare(builder)
    except Exception as error:  # Offline this is a network error.
      raise DataNotFoundError(_not_found_message(
          f"tfds:{name}",
          ["--data_dir: not given",
           f"tfds prepared data in {builder.data_dir}: not prepared",
           f"tfds download_and_prepare into {builder.data_dir}: {_shorten(error)}"],
          [command, "or prepare it elsewhere and give that folder as --data_dir"])) from None
  available = sorted(builder.info.splits.keys())  # Empty under tfds.testing.mock_data.
  if available and not explicit_splits and "test" not in available:
    held_out = [split for split in available if split != "train"]
    raise ConfigError(
        f"dataset=tfds:{name} has no 'test' split (its splits: {', '.join(available)}). "
        "Name the splits to train and test on, e.g. --override=train_split='train[:90%]' "
        "--override=test_split='train[90%:]' (any tfds split expression)"
        + (f", or --override=test_split={held_out[0]}" if held_out else "") + ".")
  for field, split in (("train_split", train_split), ("test_split", test_split)):
    try:
      builder.as_dataset(split=split, as_supervised=True)
    except (ValueError, KeyError, AssertionError) as error:  # Unknown split, bad slice.
      raise ConfigError(
          f"dataset=tfds:{name}: {field}={split!r} is not one of its splits "
          f"({', '.join(available) or 'unknown'}) nor a slice of one ({_shorten(error)}); "
          "e.g. train_split='train[:90%]' and test_split='train[90%:]'.") from None
  return _tfds_splits(builder, train_split, test_split)


# ---------------------------------------------------------------------------
# A folder of images, one sub-folder per class: dataset=folder:PATH.

# The image files Keras' image_dataset_from_directory reads.
FOLDER_IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def resolve_folder(path: str, data_dir: Optional[str]) -> str:
  """A relative folder is taken from --data_dir when one is given, else from the
  working directory."""
  path = os.path.expanduser(path)
  if data_dir and not os.path.isabs(path):
    return os.path.join(data_dir, path)
  return path


# Damaged files named in an error; the rest are counted.
_MAX_NAMED_FILES = 3


def _decode_error(path: str, channels: int) -> str:
  """Why `path` cannot be decoded: TensorFlow's reason, without its op prefix."""
  try:
    tf.image.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
  except tf.errors.OpError as error:
    reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "",
                    error.message.splitlines()[0] if error.message else "")
    return reason.rstrip(". ")[:120] or type(error).__name__
  return "decoded when read alone"  # A failure of the batch, not of this file.


def check_images_decode(paths: Sequence[str], channels: int, field: str) -> None:
  """Decodes every file as Keras' image_dataset_from_directory will (the same
  tf.image.decode_image call), and raises DataFormatError naming the files that
  cannot be.

  Why here, when the folder is first read: otherwise a damaged file stops the
  first pass that reaches it with TensorFlow's error and no file name (the
  training split's statistics; of a test split, perhaps only the evaluation
  after training). Why fail rather than skip it: a skipped file would silently change
  the dataset, and with it which images the fixed-seed test carve-out picks.
  Cost: one parallel tf.data pass that decodes and discards, about 0.4 s for
  2,000 PNGs of 32x32 and 1 s for 2,000 JPEGs of 256x256 on 2 CPU cores; one
  epoch's decoding, once per read.
  """
  indexed = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(paths), dtype=tf.int64), tf.constant(list(paths), tf.string)))

  def decode(index, file):
    image = tf.image.decode_image(tf.io.read_file(file), channels=channels,
                                  expand_animations=False)
    return index, tf.shape(image)  # An output: the decode is not optimised away.

  decoded = indexed.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  readable = {int(index) for index, _ in decoded.as_numpy_iterator()}
  damaged = [file for index, file in enumerate(paths) if index not in readable]
  if not damaged:
    return
  named = "; ".join(f"{file} ({_decode_error(file, channels)})"
                    for file in damaged[:_MAX_NAMED_FILES])
  more = (f" and {len(damaged) - _MAX_NAMED_FILES} more" if len(damaged) > _MAX_NAMED_FILES
          else "")
  raise DataFormatError(
      f"{field}: {len(damaged)} of {len(paths)} image files cannot be decoded: "
      f"{named}{more}. Remove or replace the damaged file"
      f"{'s' if len(damaged) > 1 else ''}.")


def read_folder(path: str, field: str, image_size: int, channels: int
                ) -> Tuple[tf.data.Dataset, int, Tuple[str, ...]]:
  """(uint8 images and int64 labels in Keras' order, their number, the class names).

  Keras lists the class sub-folders in sorted order (label i is the i-th) and
  their files in sorted order; images are decoded, converted to `channels`
  and resized to `image_size` as they are read. Every file is decoded once
  here first (check_images_decode): a damaged one is named before any work.
  """
  layout = (f"expected {path}/CLASS_NAME/IMAGE, one sub-folder per class, images "
            f"{' '.join(FOLDER_IMAGE_FORMATS)}")
  if not os.path.exists(path):
    where = "" if os.path.isabs(path) else f" (in the working directory {os.getcwd()})"
    raise DataNotFoundError(f"{field}: folder {path} does not exist{where}. Give the "
                            f"folder of your images: {layout}; a relative path is taken "
                            "from --data_dir when one is given.")
  if not os.path.isdir(path):
    raise DataNotFoundError(f"{field}: {path} is a file, not a folder; {layout}.")
  import keras  # Lazy: only folders need Keras' reader here.
  try:
    dataset = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int",
        color_mode="grayscale" if channels == 1 else "rgb", batch_size=None,
        image_size=(image_size, image_size), shuffle=False, verbose=False)
  except (ValueError, OSError) as error:
    raise DataFormatError(f"{field}: Keras found no images in the class sub-folders of "
                          f"{path} ({str(error)[:200]}); {layout}.") from None
  class_names = tuple(dataset.class_names)
  check_images_decode(dataset.file_paths, 1 if channels == 1 else 3, field)
  classes = [os.path.relpath(file, path).split(os.sep)[0] for file in dataset.file_paths]
  empty = [name for name in class_names if name not in set(classes)]
  if len(class_names) < 2 or empty:
    problem = (f"only {len(class_names)} class sub-folder ({', '.join(class_names)})"
               if len(class_names) < 2 else
               f"class sub-folders without images: {', '.join(empty)}")
    raise DataFormatError(f"{field}: {path} has {problem}; an image classifier needs two "
                          f"classes or more, each with images; {layout}.")

  def to_uint8(image, label):  # Keras gives float32 pixels in [0, 255].
    return (tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8),
            tf.cast(label, tf.int64))

  dataset = dataset.map(to_uint8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  count = len(classes)
  return dataset.apply(tf.data.experimental.assert_cardinality(count)), count, class_names
