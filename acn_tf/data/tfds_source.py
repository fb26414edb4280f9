"""tensorflow-datasets as a source: its builders and prepared data (the named
datasets' fallback), and any image-classification dataset of its catalogue
(dataset=tfds:NAME).

With a data_dir only data prepared there is read; else prepared data in tfds'
default place, else a download (downloads.py probes the hosts first).
"""

import difflib
from typing import List, Optional

import numpy as np
import tensorflow as tf

from acn_tf.data import downloads, raw_splits
from acn_tf.errors import ConfigError, DataNotFoundError


def builder_of(name: str, data_dir: Optional[str]):
  """tfds' builder of `name` (data_dir None: tfds' default place)."""
  # Lazy import: tensorflow_datasets takes seconds to import and the offline
  # sources (digits, idx files, CIFAR files) never need it.
  import tensorflow_datasets as tfds

  return tfds.builder(name, data_dir=data_dir)


def is_prepared(builder) -> bool:
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


def _split_size(split: tf.data.Dataset, builder, split_name: str) -> int:
  """Known cardinality first: under tfds.testing.mock_data the info's split sizes are absent."""
  cardinality = int(split.cardinality())
  if cardinality >= 0:
    return cardinality
  try:
    return int(builder.info.splits[split_name].num_examples)
  except Exception:  # Unknown split metadata: count once.
    return int(split.reduce(np.int64(0), lambda count, _: count + 1))


def tfds_splits(builder, train_split: str = "train", test_split: str = "test"
                ) -> raw_splits.RawSplits:
  """The prepared data of `builder` as (image, label) splits, with its class names."""
  train = builder.as_dataset(split=train_split, as_supervised=True)
  test = builder.as_dataset(split=test_split, as_supervised=True)
  splits = ("" if (train_split, test_split) == ("train", "test")
            else f", train split {train_split!r}, test split {test_split!r}")
  _, label_key = builder.info.supervised_keys
  label_feature = builder.info.features[label_key]
  return raw_splits.RawSplits(train=train,
                              test=test,
                              num_train=_split_size(train, builder, train_split),
                              num_test=_split_size(test, builder, test_split),
                              source=f"tfds {builder.name} {builder.version} in "
                                     f"{builder.data_dir}{splits}",
                              class_names=tuple(getattr(label_feature, "names", None) or ()),
                              num_classes=int(getattr(label_feature, "num_classes", 0) or 0))


def prepared_in_data_dir(name: str, data_dir: str, looked: List[str]
                         ) -> Optional[raw_splits.RawSplits]:
  """tensorflow-datasets data already prepared in data_dir (never a download)."""
  try:
    builder = builder_of(name, data_dir)
    if is_prepared(builder):
      return tfds_splits(builder)
    looked.append(f"tfds prepared data in {builder.data_dir}: not prepared")
  except Exception as error:  # tfds fails in many ways (imports, files).
    looked.append(f"tfds prepared data in {data_dir}: {raw_splits.short_error(error)}")
  return None


def prepared_or_downloaded(name: str, data_dir: Optional[str], looked: List[str],
                           builder=None) -> Optional[raw_splits.RawSplits]:
  """The named datasets' last source, the only online one: tfds' prepared data,
  else its own download into its place; None, with the reason in `looked`, when
  neither gives data (offline, a network or import error)."""
  try:
    if builder is None:
      builder = builder_of(name, data_dir)
    if not is_prepared(builder):
      downloads.download_and_prepare(builder)
    return tfds_splits(builder)
  except Exception as error:  # tfds fails in many ways (imports, files, network).
    target = getattr(builder, "data_dir", data_dir)
    looked.append(f"tfds {name} (prepared data or download_and_prepare into {target}): "
                  f"{raw_splits.short_error(error)}")
    return None


def download_command(dataset: str, data_dir: Optional[str] = None) -> str:
  """The command that prepares `dataset` in `data_dir` (None: tfds' default
  place), for a not-found message."""
  where = f", data_dir=\"{data_dir}\"" if data_dir else ""
  return ("with internet, run once: python -c 'import tensorflow_datasets as tfds; "
          f"tfds.builder(\"{dataset}\"{where}).download_and_prepare()'")


# ---------------------------------------------------------------------------
# Any image-classification dataset of tensorflow-datasets: dataset=tfds:NAME.


def _named_tfds_builder(name: str, data_dir: Optional[str]):
  """tfds' builder of `name`; an unknown name is a ConfigError with the closest names."""
  import tensorflow_datasets as tfds
  try:
    return builder_of(name, data_dir)
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
                      f"({raw_splits.short_error(error)}). Check the name, /CONFIG and "
                      ":VERSION against https://www.tensorflow.org/datasets/catalog.") from None


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
              explicit_splits: bool) -> raw_splits.RawSplits:
  """As the named datasets: with a data_dir only data prepared there; else prepared
  data in tfds' default place, else a download (tfds' own)."""
  builder = _named_tfds_builder(name, data_dir)
  _check_image_classification(builder, name)
  command = download_command(name, data_dir)
  if not is_prepared(builder):
    if data_dir:
      raise DataNotFoundError(raw_splits.not_in_data_dir_message(
          f"tfds:{name}", data_dir,
          [f"tfds prepared data in {builder.data_dir}: not prepared"], [command]))
    try:
      downloads.download_and_prepare(builder)
    except Exception as error:  # Offline this is a network error.
      raise DataNotFoundError(raw_splits.not_found_message(
          f"tfds:{name}",
          ["--data_dir: not given",
           f"tfds prepared data in {builder.data_dir}: not prepared",
           f"tfds download_and_prepare into {builder.data_dir}: "
           f"{raw_splits.short_error(error)}"],
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
          f"({', '.join(available) or 'unknown'}) nor a slice of one "
          f"({raw_splits.short_error(error)}); "
          "e.g. train_split='train[:90%]' and test_split='train[90%:]'.") from None
  return tfds_splits(builder, train_split, test_split)
