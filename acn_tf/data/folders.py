"""A folder of images, one sub-folder per class (dataset=folder:PATH), read by
Keras' image_dataset_from_directory, every file checked to decode first."""

import os
import re
from typing import Optional, Sequence, Tuple

import tensorflow as tf

from acn_tf.errors import DataFormatError, DataNotFoundError

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
  Cost: one parallel tf.data pass that decodes and discards: one epoch's
  decoding, once per read (docs/DATA.md gives a timing).
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
