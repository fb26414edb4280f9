"""Fashion-MNIST: the official idx files in data_dir, else tfds data prepared
there; without a data_dir, prepared tfds data, the Debian package's files, then a
tfds download."""

import gzip
import os
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from acn_tf.data import raw_splits, tfds_source
from acn_tf.errors import DataFormatError, DataNotFoundError

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


def _read_fashion_idx(paths: Dict[str, str], source: str) -> raw_splits.RawSplits:
  arrays = {role: read_idx(path) for role, path in paths.items()}
  for role, array in arrays.items():
    expected_rank = 3 if role.endswith("images") else 1
    if array.ndim != expected_rank:
      raise DataFormatError(f"{paths[role]} has shape {array.shape}; expected rank "
                            f"{expected_rank} for {role}; {_IDX_FIX}")
  spec = raw_splits.DATASET_SPECS["fashion_mnist"]
  for split in ("train", "test"):
    raw_splits.check_arrays(arrays[f"{split}_images"][..., np.newaxis], arrays[f"{split}_labels"],
                            spec.image_shape, spec.num_classes,
                            f"{paths[f'{split}_images']} and {paths[f'{split}_labels']}",
                            "replace them with the official files (from "
                            f"{FASHION_MNIST_URL}).")
  return raw_splits.in_memory_splits(
      (arrays["train_images"][..., np.newaxis], arrays["train_labels"]),
      (arrays["test_images"][..., np.newaxis], arrays["test_labels"]), source)


def load(data_dir: Optional[str]) -> raw_splits.RawSplits:
  """With a data_dir, only its files; else the sources in order, offline ones
  before the only online one."""
  looked: List[str] = []
  if data_dir:
    paths, missing = _find_idx_files(data_dir)
    if paths:
      return _read_fashion_idx(paths, f"Fashion-MNIST idx files in {data_dir}")
    looked.append(f"the official idx files: {missing}")
    raw = tfds_source.prepared_in_data_dir("fashion_mnist", data_dir, looked)
    if raw is not None:
      return raw
    raise DataNotFoundError(raw_splits.not_in_data_dir_message(
        "fashion_mnist", data_dir, looked, [
        f"put the official files {', '.join(FASHION_MNIST_FILES.values())} (from "
        f"{FASHION_MNIST_URL}, or /usr/share/datasets/fashion-mnist/ after apt-get install "
        f"dataset-fashion-mnist) into {data_dir}",
        tfds_source.download_command("fashion_mnist", data_dir)]))
  looked.append("--data_dir: not given, so no idx files were searched there")

  builder = None
  try:
    builder = tfds_source.builder_of("fashion_mnist", data_dir)
    if tfds_source.is_prepared(builder):
      return tfds_source.tfds_splits(builder)
    looked.append(f"tfds prepared data in {builder.data_dir}: not prepared")
  except Exception as error:  # tfds fails in many ways (imports, files, network).
    looked.append(f"tfds prepared data (data_dir={data_dir}): {raw_splits.short_error(error)}")

  debian_dir = DEBIAN_FASHION_MNIST_DIR
  paths, missing = _find_idx_files(debian_dir)
  if paths:
    return _read_fashion_idx(paths, f"Fashion-MNIST idx files in {debian_dir} "
                             "(Debian package dataset-fashion-mnist)")
  looked.append(f"Debian package dataset-fashion-mnist directory {missing}")

  raw = tfds_source.prepared_or_downloaded("fashion_mnist", data_dir, looked, builder)
  if raw is not None:
    return raw
  how_to_get = [
      tfds_source.download_command("fashion_mnist"),
      f"put the official files {', '.join(FASHION_MNIST_FILES.values())} "
      f"(from {FASHION_MNIST_URL}) into --data_dir",
      f"apt-get install dataset-fashion-mnist (installs them into {debian_dir})",
  ]
  raise DataNotFoundError(raw_splits.not_found_message("fashion_mnist", looked, how_to_get))
