"""How a config names its dataset: a registered name, tfds:NAME or folder:PATH,
and the data fields that only some kinds of dataset read."""

import re
from typing import Tuple

from acn_tf.errors import ConfigError

# The datasets known by name; any other dataset is "tfds:NAME" or "folder:PATH".
DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
# An image-classification dataset of tensorflow-datasets, by its tfds name.
TFDS_PREFIX = "tfds:"
# A folder of images with one sub-folder per class (Keras' image_dataset_from_directory).
FOLDER_PREFIX = "folder:"
# The caller's own tf.data pipeline (acn_tf/api.py): nothing for run.py to load.
PYTHON_DATASET = "python"
DATASET_HELP = (f"{', '.join(DATASETS)}, tfds:NAME (an image-classification dataset of "
                "tensorflow-datasets, e.g. tfds:svhn_cropped) or folder:PATH (a folder "
                "with one sub-folder of images per class, e.g. folder:/data/flowers/train)")
# A tfds name: builder name, optional /config, optional :version (as tfds.builder takes it).
_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9]+\.[0-9]+\.[0-9]+)?$")


def parse_dataset(dataset: str) -> Tuple[str, str]:
  """(kind, name): ("builtin", NAME), ("tfds", NAME), ("folder", PATH) or ("python", "").

  Raises ConfigError for anything else, naming the valid forms.
  """
  if dataset in DATASETS:
    return "builtin", dataset
  if dataset == PYTHON_DATASET:
    return "python", ""
  if dataset.startswith(TFDS_PREFIX):
    name = dataset[len(TFDS_PREFIX):].strip()
    if not name:
      raise ConfigError(f"dataset={dataset!r} names no tensorflow-datasets dataset: give "
                        "one after 'tfds:', e.g. dataset=tfds:svhn_cropped.")
    if not _TFDS_NAME.match(name):
      raise ConfigError(
          f"dataset={dataset!r}: {name!r} is not a tensorflow-datasets name (lower-case "
          "snake_case, optionally /CONFIG and :VERSION, e.g. tfds:svhn_cropped, "
          "tfds:cifar10_corrupted/brightness_1 or tfds:mnist:3.0.1).")
    return "tfds", name
  if dataset.startswith(FOLDER_PREFIX):
    path = dataset[len(FOLDER_PREFIX):].strip()
    if not path:
      raise ConfigError(f"dataset={dataset!r} names no folder: give its path after "
                        "'folder:', e.g. dataset=folder:/data/flowers/train (one "
                        "sub-folder of images per class).")
    return "folder", path
  hint = (f" (a tensorflow-datasets dataset is given as tfds:NAME, e.g. tfds:{dataset})"
          if _TFDS_NAME.match(dataset) else "")
  raise ConfigError(f"dataset={dataset!r} is not one of {DATASET_HELP}{hint}.")


def check_data(data) -> None:
  """The dataset's form, and the fields of `data` (a DataConfig) that only some
  kinds of dataset read."""
  kind, _ = parse_dataset(data.dataset)
  if kind != "folder" and (data.test_folder or data.test_fraction):
    field = "test_folder" if data.test_folder else "test_fraction"
    raise ConfigError(f"{field} is for dataset=folder:PATH; dataset={data.dataset} has "
                      f"a test split of its own. Drop {field}.")
  if kind != "tfds" and (data.train_split or data.test_split):
    field = "train_split" if data.train_split else "test_split"
    raise ConfigError(f"{field} is for dataset=tfds:NAME (a tensorflow-datasets split); "
                      f"dataset={data.dataset} has fixed splits. Drop {field}.")
  if kind == "tfds" and (data.train_split or "train") == (data.test_split or "test"):
    raise ConfigError(f"train_split and test_split are both {data.test_split!r}: the test "
                      "split must be held out, e.g. train_split='train[:90%]' and "
                      "test_split='train[90%:]'.")
  if kind == "folder":
    if not data.image_size:
      raise ConfigError(f"dataset={data.dataset} needs image_size: Keras resizes every "
                        "image of a folder to it while reading, e.g. "
                        "--override=image_size=32.")
    if data.test_folder and data.test_fraction:
      raise ConfigError("test_folder and test_fraction both give dataset="
                        f"{data.dataset} a test split; keep one.")
    if not data.test_folder and not data.test_fraction:
      raise ConfigError(
          f"dataset={data.dataset} needs a test split: test_folder=PATH (a second "
          "folder with the same class sub-folders) or test_fraction=0.2 (that share of "
          "the folder, carved with a fixed seed).")
