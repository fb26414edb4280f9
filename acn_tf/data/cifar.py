"""CIFAR-10/100: the official "python version" (extracted folder or tarball) in
data_dir, else tfds data prepared there; without a data_dir, tfds (which
downloads when online)."""

import dataclasses
import os
import pickle
import tarfile
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from acn_tf.data import raw_splits, tfds_source
from acn_tf.errors import DataFormatError, DataNotFoundError

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

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
  spec = raw_splits.DATASET_SPECS[dataset]
  raw_splits.check_arrays(images, labels, spec.image_shape, spec.num_classes,
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
  if len(names) != raw_splits.DATASET_SPECS[dataset].num_classes:
    raise DataFormatError(f"{origin} names {len(names)} classes, expected "
                          f"{raw_splits.DATASET_SPECS[dataset].num_classes}; {_CIFAR_FIX}")
  return names


def _read_cifar_folder(folder: str, layout: _CifarLayout, dataset: str) -> raw_splits.RawSplits:
  open_member = lambda name: open(os.path.join(folder, name), "rb")
  train = _read_cifar_batches(open_member, layout, layout.train_files, folder, dataset)
  test = _read_cifar_batches(open_member, layout, (layout.test_file,), folder, dataset)
  raw = raw_splits.in_memory_splits(train, test, f"CIFAR python batches in {folder}")
  meta = os.path.join(folder, layout.meta_file)
  if os.path.isfile(meta):
    with open(meta, "rb") as handle:
      raw = dataclasses.replace(raw, class_names=_read_cifar_names(handle, layout, meta,
                                                                   dataset))
  return raw


def _read_cifar_tarball(path: str, layout: _CifarLayout, dataset: str) -> raw_splits.RawSplits:
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
  raw = raw_splits.in_memory_splits(train, test, f"CIFAR python tarball {path}")
  return dataclasses.replace(raw, class_names=names)


def _find_cifar_files(data_dir: str, layout: _CifarLayout, dataset: str
                      ) -> Tuple[Optional[raw_splits.RawSplits], List[str]]:
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


def load(dataset: str, data_dir: Optional[str]) -> raw_splits.RawSplits:
  """With a data_dir, only its files (official ones, else tfds data prepared there);
  else tfds (which downloads when online)."""
  layout = _CIFAR_LAYOUTS[dataset]
  looked: List[str] = []
  if data_dir:
    raw, misses = _find_cifar_files(data_dir, layout, dataset)
    if raw is not None:
      return raw
    looked += misses
    raw = tfds_source.prepared_in_data_dir(dataset, data_dir, looked)
    if raw is not None:
      return raw
    raise DataNotFoundError(raw_splits.not_in_data_dir_message(dataset, data_dir, looked, [
        f"put {layout.tarball} (the \"python version\" from {CIFAR_URL}) or its "
        f"extracted folder {layout.folder}/ into {data_dir}",
        tfds_source.download_command(dataset, data_dir)]))
  looked.append("--data_dir: not given, so no CIFAR python files were searched")
  raw = tfds_source.prepared_or_downloaded(dataset, data_dir, looked)
  if raw is not None:
    return raw
  how_to_get = [
      tfds_source.download_command(dataset),
      f"put {layout.tarball} (the \"python version\" from {CIFAR_URL}) or its "
      f"extracted folder {layout.folder}/ into --data_dir",
  ]
  raise DataNotFoundError(raw_splits.not_found_message(dataset, looked, how_to_get))
