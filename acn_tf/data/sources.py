"""The named datasets (config.DATASETS): where each is found, checked against its
known shape, with its class names; and digits, scikit-learn's bundled copy.

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

The sources, one a module: fashion_mnist.py (idx files), cifar.py (the "python
version" batches), tfds_source.py (tensorflow-datasets, also any of its
image-classification datasets as `tfds:NAME`, with the same lookup), downloads.py
(the probe of download hosts), folders.py (`folder:PATH`, one sub-folder of images
per class, read by Keras' image_dataset_from_directory; a relative PATH is taken
from --data_dir when one is given). Each gives the official train/test splits as
they are stored (raw_splits.py); acn_tf/data/pipeline.py carves validation data
out of them, resizes them and batches them.
"""

import dataclasses
from typing import Optional

import numpy as np

from acn_tf.data import cifar, fashion_mnist, raw_splits


def load_builtin(name: str, data_dir: Optional[str]) -> raw_splits.RawSplits:
  """The named dataset `name` from the first place that has it, checked against its
  known image shape, with its number of classes and its official class names
  (where its files name none)."""
  if name == "digits":
    raw = _load_digits()
  elif name == "fashion_mnist":
    raw = fashion_mnist.load(data_dir)
  else:
    raw = cifar.load(name, data_dir)
  spec = raw_splits.DATASET_SPECS[name]
  raw_splits.check_element_spec(name, raw.train, spec.image_shape, raw.source)
  raw_splits.check_element_spec(name, raw.test, spec.image_shape, raw.source)
  return dataclasses.replace(raw, num_classes=spec.num_classes,
                             class_names=(raw.class_names
                                          or raw_splits.CLASS_NAMES.get(name, ())))


# ---------------------------------------------------------------------------
# digits: scikit-learn's bundled copy, always available.


def _load_digits() -> raw_splits.RawSplits:
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
  return raw_splits.in_memory_splits((train_images, train_labels),
                                    (test_images, test_labels),
                                     "scikit-learn load_digits (fixed stratified 80/20 split, "
                                     "random_state=0)")
