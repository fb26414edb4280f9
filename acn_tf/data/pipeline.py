"""The datasets a run trains on: loaded splits, validation carve-out, input pipelines.

`load_splits` is the entry point: it reads a dataset through its source (a
named dataset: sources.py; `tfds:NAME`: tfds_source.py; `folder:PATH`:
folders.py), resizes it (`image_size`) and turns it grayscale or RGB
(`channels`), and carves validation data out of the training split. An
explicit `data_dir` that does not exist is an error before anything is read.

Splits are unbatched `tf.data.Dataset`s of (uint8 image [H, W, C], int64 label);
`make_pipeline` turns one into batches of float32 images in [0, 1] and int32
labels, with seeded, stateless augmentation so two runs with the same seed see
identical batches. `pixels_to_unit_range` is that scaling to [0, 1], the one
every consumer of pixels uses (the statistics of the Normalization layer, the
exported signature).

Why one module of a little over 400 lines: it holds one concern, the path from a
source's official splits to the batches a model sees, and the library, its
entry points and tests reach it as one (`pipeline.load_splits`, `make_pipeline`,
`DatasetInfo`); the sources, the varied part, are modules of their own.
"""

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from acn_tf.config import schema as config_lib
from acn_tf.data import folders, raw_splits, sources, tfds_source
from acn_tf.errors import ConfigError, DataFormatError, DataNotFoundError

# The test split carved from a folder (test_fraction) and the sample that
# train_examples keeps of a folder use this seed, not the run's: every run of a
# folder tests on the same images, whatever its seed.
FOLDER_SEED = 0

# Shuffling the whole training set gives the best mixing; the cap only bounds
# memory if a much larger dataset is ever added.
_SHUFFLE_BUFFER_LIMIT = 100_000
_UNKNOWN_SIZE_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a log need to know about the loaded data."""

  name: str
  num_classes: int
  image_shape: Tuple[int, int, int]  # (H, W, C)
  num_train: int  # After the train_examples limit and the validation carve-out.
  num_validation: int
  num_test: int
  source: str  # Human-readable: where the data was loaded from.
  # The name of each class, by label; the label as text where the data names none.
  class_names: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DataSplits:
  """Unbatched splits of (uint8 image [H, W, C], int64 label) elements."""

  train: tf.data.Dataset
  validation: Optional[tf.data.Dataset]  # None when validation_fraction == 0.
  test: tf.data.Dataset
  info: DatasetInfo


# ---------------------------------------------------------------------------
# Public entry point.


def load_splits(dataset: str,
                data_dir: Optional[str],
                *,
                train_examples: int = 0,
                validation_fraction: float = 0.0,
                seed: int = 0,
                image_size: int = 0,
                channels: int = 0,
                test_folder: str = "",
                test_fraction: float = 0.0,
                train_split: str = "",
                test_split: str = "") -> DataSplits:
  """Loads `dataset` and carves validation data out of its training split.

  `dataset` is a named dataset, "tfds:NAME" or "folder:PATH" (config.parse_dataset).
  Images are resized to `image_size` (0: kept) and made grayscale or RGB
  (`channels` 1 or 3; 0: kept). A folder's test split is `test_folder` or the
  `test_fraction` of the folder carved with FOLDER_SEED; a tfds dataset's splits
  are `train_split` and `test_split` ("": "train" and "test").
  Validation comes from the training split (a permutation seeded by `seed`),
  never from the test split, so tuning on it leaves the test set untouched.
  `train_examples` > 0 then keeps the first that many remaining training
  examples (in file order; of a folder, whose order is class by class, a sample
  drawn with FOLDER_SEED), for CPU-sized runs.
  """
  kind, name = config_lib.parse_dataset(dataset)
  if kind == "python":
    raise ConfigError(f"dataset={dataset} stands for your own tf.data pipeline (acn_tf.api): "
                      "there is nothing to load. Give a dataset to read: "
                      f"{config_lib.DATASET_HELP}.")
  if not 0.0 <= validation_fraction < 1.0:
    raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
  if train_examples < 0:
    raise ConfigError(f"train_examples must be >= 0 (0: all), got {train_examples}.")
  if image_size < 0 or channels not in config_lib.CHANNELS:
    raise ConfigError(f"image_size={image_size}, channels={channels}: image_size must be "
                      ">= 0 and channels one of 0, 1, 3.")
  check_data_dir(data_dir)
  test_carved = False
  if kind == "builtin":
    raw = sources.load_builtin(name, data_dir)
  elif kind == "tfds":
    raw = tfds_source.load_tfds(name, data_dir, train_split or "train", test_split or "test",
                                explicit_splits=bool(train_split or test_split))
  else:
    raw = _folder_splits(name, data_dir, image_size, channels, test_folder, test_fraction)
    test_carved = not test_folder
  raw = _reshape(raw, dataset, image_size, channels)
  image_shape = tuple(int(size) for size in raw.train.element_spec[0].shape)
  train, validation, num_validation = _carve_validation(
      raw.train, raw.num_train, validation_fraction, seed)
  num_train = raw.num_train - num_validation
  if train_examples > num_train:
    raise ConfigError(
        f"train_examples={train_examples} exceeds the {num_train} training examples of "
        f"{dataset}{' left after validation_fraction' if num_validation else ''}; "
        "lower train_examples (0 takes them all).")
  if 0 < train_examples < num_train:
    if kind == "folder":
      _, train = _split_by_seeded_indices(train, num_train, train_examples, FOLDER_SEED)
    else:
      train = train.take(train_examples)
    num_train = train_examples
  train = train.apply(tf.data.experimental.assert_cardinality(num_train))
  class_names = raw.class_names or tuple(str(label) for label in range(raw.num_classes))
  info = DatasetInfo(name=dataset,
                     num_classes=raw.num_classes,
                     image_shape=image_shape,
                     num_train=num_train,
                     num_validation=num_validation,
                     num_test=raw.num_test,
                     source=raw.source + (f"; test: {raw.num_test} images of it carved "
                                          f"with seed {FOLDER_SEED}" if test_carved else ""),
                     class_names=class_names)
  return DataSplits(train=train, validation=validation, test=raw.test, info=info)


def load_config_splits(config, data_dir: Optional[str]) -> DataSplits:
  """load_splits with every data field of an ExperimentConfig."""
  return load_splits(config.data.dataset, data_dir, train_examples=config.data.train_examples,
                     validation_fraction=config.data.validation_fraction, seed=config.seed,
                     image_size=config.data.image_size, channels=config.data.channels,
                     test_folder=config.data.test_folder, test_fraction=config.data.test_fraction,
                     train_split=config.data.train_split, test_split=config.data.test_split)


def check_data_dir(data_dir: Optional[str]) -> None:
  """An explicit data_dir must be an existing, readable directory."""
  if not data_dir:
    return
  if not os.path.exists(data_dir):
    raise DataNotFoundError(
        f"--data_dir={data_dir} does not exist. Give the directory that holds the "
        "dataset's files, or leave --data_dir out to look in the default places "
        "(docs/DATA.md, 'Where the data comes from').")
  if not os.path.isdir(data_dir):
    raise DataNotFoundError(f"--data_dir={data_dir} is a file, not a directory. Give the "
                            "directory that holds the dataset's files.")
  if not os.access(data_dir, os.R_OK | os.X_OK):
    raise DataNotFoundError(f"--data_dir={data_dir} cannot be read (permission denied); "
                            "check its permissions.")


# ---------------------------------------------------------------------------
# Split carving.


def _validation_size(num_examples: int, validation_fraction: float,
                     field: str = "validation_fraction") -> int:
  """Rounded share of the training split; at least one example when asked for any."""
  if validation_fraction == 0.0:
    return 0
  size = max(1, int(round(num_examples * validation_fraction)))
  if size >= num_examples:
    raise ConfigError(f"{field}={validation_fraction} of {num_examples} "
                      "training examples leaves no training data; lower it.")
  return size


def _carve_validation(train: tf.data.Dataset, num_examples: int,
                      validation_fraction: float, seed: int,
                      field: str = "validation_fraction"
                      ) -> Tuple[tf.data.Dataset, Optional[tf.data.Dataset], int]:
  """Splits `train` into (the rest, a seeded share `validation_fraction`, its size)."""
  num_validation = _validation_size(num_examples, validation_fraction, field)
  if num_validation == 0:
    return train, None, 0
  remaining, validation = _split_by_seeded_indices(train, num_examples, num_validation,
                                                   seed)
  return remaining, validation, num_validation


def _split_by_seeded_indices(dataset: tf.data.Dataset, num_examples: int, count: int,
                             seed: int) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """(the rest, `count` examples chosen by a permutation seeded by `seed`).

  Filtering by index (instead of materialising arrays) works the same for
  in-memory, tfds and folder sources; both parts keep the original order.
  """
  permutation = np.random.default_rng(seed).permutation(num_examples)
  is_chosen = np.zeros(num_examples, dtype=bool)
  is_chosen[permutation[:count]] = True
  mask = tf.constant(is_chosen)
  indexed = dataset.enumerate()

  def select(keep_chosen: bool) -> tf.data.Dataset:
    chosen = indexed.filter(
        lambda index, example: tf.equal(tf.gather(mask, index), keep_chosen))
    return chosen.map(lambda index, example: example)

  chosen = select(True).apply(tf.data.experimental.assert_cardinality(count))
  remaining = select(False).apply(
      tf.data.experimental.assert_cardinality(num_examples - count))
  return remaining, chosen


# ---------------------------------------------------------------------------
# A folder's splits: the folder, and a test folder or a share of the folder.


def _folder_splits(path: str, data_dir: Optional[str], image_size: int, channels: int,
                   test_folder: str, test_fraction: float) -> raw_splits.RawSplits:
  """The folder, and its test split: `test_folder`, else a `test_fraction` of it."""
  if not image_size:
    raise ConfigError(f"dataset=folder:{path} needs image_size: Keras resizes every image "
                      "of a folder to it while reading, e.g. --override=image_size=32.")
  if bool(test_folder) == bool(test_fraction):
    raise ConfigError(f"dataset=folder:{path} needs one test split: test_folder=PATH (a "
                      "second folder with the same class sub-folders) or "
                      "test_fraction=0.2 (that share of the folder, carved with a fixed "
                      "seed), not both.")
  folder = folders.resolve_folder(path, data_dir)
  train, num_train, class_names = folders.read_folder(folder, f"dataset=folder:{path}",
                                                      image_size, channels)
  source = f"image folder {folder} ({len(class_names)} classes)"
  if test_folder:
    test_path = folders.resolve_folder(test_folder, data_dir)
    test, num_test, test_names = folders.read_folder(test_path, f"test_folder={test_folder}",
                                                     image_size, channels)
    if test_names != class_names:
      raise DataFormatError(
          f"test_folder={test_folder}: its class sub-folders ({', '.join(test_names)}) "
          f"are not those of {folder} ({', '.join(class_names)}); the test folder needs "
          "the same classes, one sub-folder each.")
    source += f"; test: image folder {test_path}"
  else:
    train, test, num_test = _carve_validation(train, num_train, test_fraction, FOLDER_SEED,
                                              field="test_fraction")
    num_train -= num_test
  return raw_splits.RawSplits(train=train, test=test, num_train=num_train, num_test=num_test,
                              source=source, class_names=class_names,
                              num_classes=len(class_names))


# ---------------------------------------------------------------------------
# Image size and channels, for every dataset.


def _reshape(raw: raw_splits.RawSplits, dataset: str, image_size: int,
             channels: int) -> raw_splits.RawSplits:
  """Both splits at `image_size` (bilinear with antialiasing, as Keras resizes) and
  with `channels`, still uint8; images of varying size need an image_size."""
  shape = raw.train.element_spec[0].shape
  if shape.rank != 3 or shape[-1] is None:
    raise DataFormatError(f"dataset={dataset} gives images of shape {shape}; expected "
                          "(height, width, channels).")
  height, width, current = shape
  if (height is None or width is None) and not image_size:
    raise ConfigError(f"dataset={dataset} has images of varying size {tuple(shape)}: set "
                      "image_size to resize them all, e.g. --override=image_size=64.")
  resize = bool(image_size) and (height, width) != (image_size, image_size)
  convert = bool(channels) and channels != current
  if convert and current not in (1, 2, 3, 4):
    raise DataFormatError(f"dataset={dataset} has {current}-channel images; channels="
                          f"{channels} converts 1 (grayscale) and 3 (RGB), with or "
                          "without alpha.")
  if not resize and not convert:
    return raw

  def reshape(image, label):
    if convert:
      if current in (2, 4):  # Drop alpha.
        image = image[..., :current - 1]
      if image.shape[-1] != channels:
        image = (tf.image.rgb_to_grayscale(image) if channels == 1
                 else tf.image.grayscale_to_rgb(image))
    if resize:
      image = tf.image.resize(image, (image_size, image_size), method="bilinear",
                              antialias=True)
      image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
    return image, label

  def apply(split):
    return split.map(reshape, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return dataclasses.replace(raw, train=apply(raw.train), test=apply(raw.test))


# ---------------------------------------------------------------------------
# Input pipelines.


def make_pipeline(dataset: tf.data.Dataset,
                  *,
                  batch_size: int,
                  training: bool,
                  augmentation: str = "none",
                  crop_padding: int = 4,
                  seed: int = 0,
                  drop_remainder: Optional[bool] = None,
                  shuffle_buffer: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (float32 images in [0, 1], int32 labels).

  Training: seeded shuffle (reshuffled every epoch), then augmentation: "crop"
  pads `crop_padding` pixels of zeros on each side (the standard CIFAR ResNet
  recipe) and crops a random HxW window; "crop_flip" adds a random horizontal
  flip. Augmentation uses stateless ops with one seed per example drawn from a
  seeded random dataset, so equal seeds give identical batches (also across
  processes) while every epoch still sees new crops. Evaluation: neither.
  `drop_remainder` defaults to `training` (equal-size training steps, every
  evaluation example counted). `shuffle_buffer` defaults to
  `shuffle_buffer_size(dataset)`, which reads the dataset's size and so cannot run
  inside a dataset function.
  """
  if augmentation not in config_lib.AUGMENTATIONS:
    raise ValueError(f"augmentation={augmentation!r} is not one of "
                     f"{', '.join(config_lib.AUGMENTATIONS)}.")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}.")
  if crop_padding < 0:
    raise ValueError(f"crop_padding must be >= 0, got {crop_padding}.")
  if drop_remainder is None:
    drop_remainder = training
  if training:
    buffer = shuffle_buffer if shuffle_buffer is not None else shuffle_buffer_size(dataset)
    dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if augmentation != "none":
      dataset = _augment(dataset, augmentation, crop_padding, seed)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  dataset = dataset.map(_to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def shuffle_buffer_size(dataset: tf.data.Dataset) -> int:
  """The whole dataset, up to a limit (a fixed buffer when its size is unknown)."""
  cardinality = int(dataset.cardinality())
  if cardinality <= 0:  # Unknown or infinite.
    return _UNKNOWN_SIZE_SHUFFLE_BUFFER
  return min(cardinality, _SHUFFLE_BUFFER_LIMIT)


def _augment(dataset: tf.data.Dataset, augmentation: str, crop_padding: int,
             seed: int) -> tf.data.Dataset:
  """Pairs every example with its own stateless seed and augments it."""
  example_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
  example_seeds = example_seeds.batch(2, drop_remainder=True)
  paired = tf.data.Dataset.zip((dataset, example_seeds))
  flip = augmentation == "crop_flip"

  def augment_example(example, example_seed):
    image, label = example
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(example_seed, num=2))
    image = _random_crop(image, crop_padding, crop_seed)
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image, label

  return paired.map(augment_example, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)


def _random_crop(image: tf.Tensor, crop_padding: int, seed: tf.Tensor) -> tf.Tensor:
  """Zero-pads `crop_padding` pixels per side, then crops back to the input size."""
  padded = tf.pad(image, [[crop_padding, crop_padding], [crop_padding, crop_padding],
                          [0, 0]])
  cropped = tf.image.stateless_random_crop(padded, size=tf.shape(image), seed=seed)
  return tf.ensure_shape(cropped, image.shape)


def _to_model_inputs(images: tf.Tensor, labels: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  return pixels_to_unit_range(images), tf.cast(labels, tf.int32)


# ---------------------------------------------------------------------------
# Pixels as the classifiers take them.


def pixels_to_unit_range(images: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
  """8-bit pixel values (0..255, uint8 or any integer type) as floats in [0, 1].

  The one scaling of pixels: the training pipeline, the preview of a run, the
  channel statistics and the exported signature all go through it, so the
  classifiers see the same values in training, normalisation and serving.
  `dtype` float64 is for the statistics, which sum the squares of millions of
  pixels.
  """
  return tf.cast(images, dtype) / 255.0


# ---------------------------------------------------------------------------
# Normalisation statistics.


def channel_statistics(dataset: tf.data.Dataset,
                       max_examples: int = 50000) -> Tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and (population) variance of the [0, 1]-scaled images.

  Takes unbatched elements, either (image, label) or bare images; integer images
  are scaled by `pixels_to_unit_range`, float images are taken as already in
  [0, 1]. One pass over at most `max_examples` examples, accumulated in float64.
  The results (shape (C,)) feed the Normalization layer inside every classifier,
  so they must match what `make_pipeline` feeds the models.
  """
  if isinstance(dataset.element_spec, tuple):
    dataset = dataset.map(lambda image, *rest: image)
  batches = dataset.take(max_examples).batch(1024)
  if dataset.element_spec.dtype.is_integer:
    batches = batches.map(lambda images: pixels_to_unit_range(images, tf.float64))
  total, total_squares, count = None, None, 0
  for batch in batches.as_numpy_iterator():
    pixels = batch.astype(np.float64, copy=False).reshape(-1, batch.shape[-1])
    batch_sum, batch_squares = pixels.sum(axis=0), np.square(pixels).sum(axis=0)
    total = batch_sum if total is None else total + batch_sum
    total_squares = batch_squares if total_squares is None else total_squares + batch_squares
    count += pixels.shape[0]
  if count == 0:
    raise ValueError("channel_statistics got an empty dataset.")
  mean = total / count
  variance = np.maximum(total_squares / count - np.square(mean), 0.0)
  return mean, variance
