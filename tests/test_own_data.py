"""Your own data: a folder of images, any tfds image-classification dataset, resizing
and channels, experiments defined by a JSON file, class names through the export.

Every folder and tfds dataset here is written by the test, with pixel values the
test chose, so what the loaders return is checked against what was written.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from acn_tf import errors
from acn_tf.config import command_line, schema as config_lib, registry
from acn_tf.data import downloads, pipeline
from acn_tf.networks import backbones, discriminators
from acn_tf.run import builders, training
from conftest import early_runs, subprocess_environment, write_json
from tiny_models import dense_classifier

# ITU-R BT.601 luma, the weights of grayscale conversion.
LUMA = np.array([0.2989, 0.5870, 0.1140])


# -- Helpers ---------------------------------------------------------------------------


def write_png(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def constant_images(count, height, width, channels, first_value):
  """Image i is one colour: value (first_value + 10 i) in channel 0, and (for RGB)
  fixed other channels, so that resizing must keep it exactly."""
  images = np.zeros((count, height, width, channels), np.uint8)
  for index in range(count):
    images[index, ..., 0] = first_value + 10 * index
    if channels == 3:
      images[index, ..., 1] = 200 - 10 * index
      images[index, ..., 2] = 30
  return images


def write_folder(root, classes, height, width, channels, first_value=5):
  """{class: count} images per class sub-folder; returns {class: images written}."""
  written = {}
  for offset, (name, count) in enumerate(sorted(classes.items())):
    images = constant_images(count, height, width, channels, first_value + offset)
    for index, image in enumerate(images):
      write_png(os.path.join(root, name, f"image{index:02d}.png"), image)
    written[name] = images
  return written


def examples(dataset):
  return [(image, int(label)) for image, label in dataset.as_numpy_iterator()]


def key(image):
  """An image's identity: its colour."""
  return tuple(int(value) for value in image[0, 0])


# -- Folders ----------------------------------------------------------------------------


def test_folder_with_a_test_folder_reads_every_image_with_its_class(tmp_path):
  classes = {"emu": 2, "cat": 3, "dog": 4}  # Keras labels them in sorted order.
  train = write_folder(str(tmp_path / "train"), classes, 6, 6, 3)
  test = write_folder(str(tmp_path / "test"), {"cat": 1, "dog": 1, "emu": 2}, 6, 6, 3,
                      first_value=100)
  splits = pipeline.load_splits("folder:train", str(tmp_path), image_size=6,
                                test_folder="test")
  info = splits.info
  assert info.class_names == ("cat", "dog", "emu") and info.num_classes == 3
  assert info.image_shape == (6, 6, 3)
  assert (info.num_train, info.num_test) == (9, 4)
  assert os.path.join(str(tmp_path), "train") in info.source
  image_spec, label_spec = splits.train.element_spec
  assert image_spec.dtype == tf.uint8 and label_spec.dtype == tf.int64
  for split, written in ((splits.train, train), (splits.test, test)):
    got = examples(split)
    expected = {key(image): label for label, name in enumerate(sorted(written))
                for image in written[name]}
    assert {key(image): label for image, label in got} == expected
    for image, _ in got:  # Unresized images keep every pixel.
      assert np.all(image == image[0, 0])


def test_folder_carves_a_fixed_test_split_and_resizes_grayscale(tmp_path):
  write_folder(str(tmp_path / "digits"), {"a": 6, "b": 6}, 10, 10, 1)
  folder = f"folder:{tmp_path / 'digits'}"

  def load(seed, **kwargs):
    return pipeline.load_splits(folder, None, image_size=5, channels=1, test_fraction=0.25,
                                seed=seed, **kwargs)

  splits = load(seed=0)
  assert splits.info.image_shape == (5, 5, 1)
  assert (splits.info.num_train, splits.info.num_test) == (9, 3)
  train, test = examples(splits.train), examples(splits.test)
  for image, _ in train + test:  # A one-colour image stays that colour at 5x5.
    assert image.shape == (5, 5, 1) and np.all(image == image[0, 0])
  train_keys, test_keys = {key(i) for i, _ in train}, {key(i) for i, _ in test}
  assert len(train_keys) == 9 and len(test_keys) == 3 and not train_keys & test_keys
  # The test split does not depend on the run's seed; validation does.
  other = load(seed=7, validation_fraction=0.25)
  assert {key(i) for i, _ in examples(other.test)} == test_keys
  assert other.info.num_validation == 2 and other.info.num_train == 7
  assert not {key(i) for i, _ in examples(other.validation)} & test_keys


def test_folder_reads_rgb_as_grayscale_and_grayscale_as_rgb(tmp_path):
  written = write_folder(str(tmp_path / "colour"), {"x": 2, "y": 2}, 4, 4, 3)
  splits = pipeline.load_splits(f"folder:{tmp_path / 'colour'}", None, image_size=4,
                                channels=1, test_fraction=0.5)
  expected = {label: sorted(np.round(images[:, 0, 0] @ LUMA).astype(int))
              for label, images in enumerate(written[name] for name in ("x", "y"))}
  got = {0: [], 1: []}
  for image, label in examples(splits.train) + examples(splits.test):
    assert image.shape == (4, 4, 1)
    got[label].append(int(image[0, 0, 0]))
  for label in (0, 1):
    np.testing.assert_allclose(sorted(got[label]), expected[label], atol=1)
  write_folder(str(tmp_path / "gray"), {"x": 1, "y": 1}, 4, 4, 1)
  rgb = pipeline.load_splits(f"folder:{tmp_path / 'gray'}", None, image_size=4,
                             test_fraction=0.5)  # channels=0: a folder is read as RGB.
  image, _ = next(rgb.train.as_numpy_iterator())
  assert image.shape == (4, 4, 3) and image[0, 0, 0] == image[0, 0, 1] == image[0, 0, 2]


def test_train_examples_of_a_folder_is_a_sample_of_every_class(tmp_path):
  # Keras lists a folder class by class: the first 6 would all be of class "a".
  write_folder(str(tmp_path / "f"), {"a": 8, "b": 8}, 4, 4, 1)
  splits = pipeline.load_splits(f"folder:{tmp_path / 'f'}", None, image_size=4,
                                test_fraction=0.25, train_examples=6)
  labels = [label for _, label in examples(splits.train)]
  assert len(labels) == 6 and set(labels) == {0, 1}
  again = pipeline.load_splits(f"folder:{tmp_path / 'f'}", None, image_size=4,
                               test_fraction=0.25, train_examples=6, seed=3)
  assert [key(i) for i, _ in examples(again.train)] == [key(i) for i, _ in
                                                       examples(splits.train)]


def test_folder_errors_name_the_folder_and_the_fix(tmp_path):
  missing = tmp_path / "missing"
  with pytest.raises(errors.DataNotFoundError, match="does not exist") as raised:
    pipeline.load_splits(f"folder:{missing}", None, image_size=4, test_fraction=0.5)
  assert str(missing) in str(raised.value)
  write_folder(str(tmp_path / "one"), {"only": 3}, 4, 4, 1)
  with pytest.raises(errors.DataFormatError, match="only 1 class sub-folder"):
    pipeline.load_splits(f"folder:{tmp_path / 'one'}", None, image_size=4, test_fraction=0.5)
  write_folder(str(tmp_path / "gap"), {"a": 2, "b": 2}, 4, 4, 1)
  os.makedirs(tmp_path / "gap" / "c")
  with pytest.raises(errors.DataFormatError, match="without images: c"):
    pipeline.load_splits(f"folder:{tmp_path / 'gap'}", None, image_size=4, test_fraction=0.5)
  (tmp_path / "flat").mkdir()
  write_png(str(tmp_path / "flat" / "loose.png"), np.zeros((4, 4, 1)))
  with pytest.raises(errors.DataFormatError, match="no images in the class sub-folders"):
    pipeline.load_splits(f"folder:{tmp_path / 'flat'}", None, image_size=4, test_fraction=0.5)
  write_folder(str(tmp_path / "ab"), {"a": 2, "b": 2}, 4, 4, 1)
  write_folder(str(tmp_path / "test"), {"a": 1, "z": 1}, 4, 4, 1)
  with pytest.raises(errors.DataFormatError, match=r"\(a, z\) are not those of .*\(a, b\)"):
    pipeline.load_splits(f"folder:{tmp_path / 'ab'}", None, image_size=4,
                         test_folder=str(tmp_path / "test"))
  corrupt = tmp_path / "corrupt"
  write_folder(str(corrupt), {"a": 2, "b": 2}, 4, 4, 1)
  (corrupt / "b" / "image01.png").write_bytes(b"not a png")
  config = config_lib.ExperimentConfig.from_fields(name="c", dataset=f"folder:{corrupt}", image_size=4,
                                       test_fraction=0.25, architectures=("small_cnn",),
                                       method="independent", epochs=1, batch_size=2)
  with pytest.raises(errors.DataFormatError, match="1 of 4 image files cannot be decoded: "
                     + re.escape(str(corrupt / "b" / "image01.png"))):
    training.train(config, str(tmp_path / "run"), verbose=0)
  assert not (tmp_path / "run").exists()  # Found before anything was written.


def test_a_damaged_image_is_named_when_the_folder_is_read(tmp_path):
  """Among good PNGs, a truncated one, garbage, an empty file: each is named
  by its path (and only they are) before anything decodes the splits."""
  train, test = tmp_path / "train", tmp_path / "test"
  write_folder(str(train), {"a": 12, "b": 12}, 8, 8, 3)
  write_folder(str(test), {"a": 3, "b": 3}, 8, 8, 3)
  good = (train / "a" / "image03.png").read_bytes()
  damaged = {train / "a" / "image05.png": good[:len(good) // 2],  # Truncated.
             train / "b" / "image00.png": b"\x89PNG garbage"}
  for path, content in damaged.items():
    path.write_bytes(content)

  def error_of(**kwargs):
    with pytest.raises(errors.DataFormatError) as raised:
      pipeline.load_splits(f"folder:{train}", None, image_size=8, **kwargs)
    return str(raised.value)

  for channels in (1, 3):  # The decode Keras will use: grayscale or RGB.
    message = error_of(test_fraction=0.25, channels=channels)
    assert f"dataset=folder:{train}: 2 of 24 image files cannot be decoded" in message
    named = set(re.findall(r"(/\S+\.png) \(", message))
    assert named == {str(path) for path in damaged}, message
    assert len(message.splitlines()) == 1 and len(message) < 600
  # A test folder's file too, when it is read, not after training.
  for path in damaged:
    path.write_bytes(good)
  (test / "b" / "image02.png").write_bytes(b"")
  message = error_of(test_folder=str(test))
  assert message.startswith(f"test_folder={test}: 1 of 6 image files cannot be decoded: "
                            f"{test / 'b' / 'image02.png'} (")
  # Many: the first few named, the rest counted.
  for index in range(12):
    (train / "b" / f"image{index:02d}.png").write_bytes(b"")
  message = error_of(test_folder=str(test))
  assert "12 of 24 image files" in message and "and 9 more" in message


# -- The dataset schema and the data fields ------------------------------------------------


@pytest.mark.parametrize("dataset, message", [
    ("tfds:", "names no tensorflow-datasets dataset"),
    ("tfds:Not A Name", "is not a tensorflow-datasets name"),
    ("folder:", "names no folder"),
    ("folder:  ", "names no folder"),
    ("mnist", "given as tfds:NAME, e.g. tfds:mnist"),
    ("imagenet:train", "tfds:NAME"),
])
def test_malformed_datasets_are_config_errors(dataset, message):
  config = registry.get_experiment("digits").replace(dataset=dataset)
  with pytest.raises(errors.ConfigError, match=message) as raised:
    config.validate()
  assert "e.g." in str(raised.value)  # Every message shows a valid value.


@pytest.mark.parametrize("changes, message", [
    (dict(dataset="folder:x", test_fraction=0.2), "needs image_size"),
    (dict(dataset="folder:x", image_size=8), "needs a test split"),
    (dict(dataset="folder:x", image_size=8, test_fraction=0.2, test_folder="y"), "keep one"),
    (dict(test_folder="y"), "test_folder is for dataset=folder:PATH"),
    (dict(test_fraction=0.1), "test_fraction is for dataset=folder:PATH"),
    (dict(train_split="train[:50%]"), "train_split is for dataset=tfds:NAME"),
    (dict(dataset="tfds:mnist", test_split="train"), "both 'train'"),
    (dict(channels=2), "channels=2 is not one of 1"),
    (dict(image_size=-1), "image_size must be >= 0"),
    (dict(dataset="folder:x", image_size=8, test_fraction=1.0), "test_fraction must be in"),
])
def test_data_fields_are_checked_against_the_dataset(changes, message):
  with pytest.raises(errors.ConfigError, match=message):
    registry.get_experiment("digits").replace(**changes).validate()


def test_named_datasets_resize_and_change_channels(tmp_path):
  plain = pipeline.load_splits("digits", None)
  bigger = pipeline.load_splits("digits", None, image_size=16, channels=3)
  assert bigger.info.image_shape == (16, 16, 3) and bigger.info.num_train == 1437
  assert bigger.info.class_names == tuple(str(digit) for digit in range(10))
  image, label = next(bigger.test.as_numpy_iterator())
  original, original_label = next(plain.test.as_numpy_iterator())
  assert label == original_label
  assert np.array_equal(image[..., 0], image[..., 2])  # Gray made RGB.
  # Upscaling by 2 keeps the mean brightness.
  assert abs(image.mean() - original.mean()) < 2.0


def write_cifar100(folder, meta_names=None):
  """The official CIFAR-100 python batches (zero images), with a meta file if asked."""
  import pickle
  folder.mkdir(parents=True)
  for name, labels in (("train", [0, 99, 5]), ("test", [7])):
    batch = {b"data": np.zeros((len(labels), 3072), np.uint8), b"fine_labels": labels}
    (folder / name).write_bytes(pickle.dumps(batch))
  if meta_names is not None:
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": meta_names}))


def test_cifar_class_names_come_with_the_files(tmp_path):
  names = [f"class{index}".encode() for index in range(100)]
  write_cifar100(tmp_path / "with" / "cifar-100-python", names)
  splits = pipeline.load_splits("cifar100", str(tmp_path / "with"))
  assert splits.info.class_names == tuple(f"class{index}" for index in range(100))
  import tarfile
  (tmp_path / "tarball").mkdir()
  with tarfile.open(tmp_path / "tarball" / "cifar-100-python.tar.gz", "w:gz") as archive:
    archive.add(tmp_path / "with" / "cifar-100-python", arcname="cifar-100-python")
  from_tarball = pipeline.load_splits("cifar100", str(tmp_path / "tarball"))
  assert "tarball" in from_tarball.info.source
  assert from_tarball.info.class_names == splits.info.class_names
  write_cifar100(tmp_path / "without" / "cifar-100-python")
  unnamed = pipeline.load_splits("cifar100", str(tmp_path / "without"))
  assert unnamed.info.class_names == tuple(str(index) for index in range(100))
  write_cifar100(tmp_path / "short" / "cifar-100-python", names[:20])
  with pytest.raises(errors.DataFormatError, match="names 20 classes, expected 100"):
    pipeline.load_splits("cifar100", str(tmp_path / "short"))


# -- tensorflow-datasets by name ---------------------------------------------------------


def test_a_tfds_dataset_by_name_under_mock_data(monkeypatch):
  monkeypatch.setattr(downloads, "check_download_host", lambda name: None)  # mock_data downloads.
  with tfds.testing.mock_data(num_examples=12):
    splits = pipeline.load_splits("tfds:svhn_cropped", None)
    gray = pipeline.load_splits("tfds:svhn_cropped", None, image_size=16, channels=1)
  info = splits.info
  assert info.image_shape == (32, 32, 3) and info.num_classes == 10
  assert (info.num_train, info.num_test) == (12, 12)
  assert info.class_names == tuple(str(label) for label in range(10))  # tfds' own names.
  assert "tfds svhn_cropped" in info.source
  assert gray.info.image_shape == (16, 16, 1)
  colour = np.stack([image for image, _ in splits.train.as_numpy_iterator()])
  small = np.stack([image for image, _ in gray.train.as_numpy_iterator()])
  # Same examples: the gray 16x16 image's mean is the luma of the colour one's mean.
  np.testing.assert_allclose(small.mean(axis=(1, 2, 3)), colour.mean(axis=(1, 2)) @ LUMA,
                             atol=1.5)
  batched = pipeline.make_pipeline(gray.train, batch_size=4, training=True,
                                   augmentation="crop_flip", crop_padding=2)
  images, labels = next(batched.as_numpy_iterator())
  assert images.shape == (4, 16, 16, 1) and labels.shape == (4,)


def test_unknown_and_non_image_tfds_names_are_config_errors():
  with pytest.raises(errors.ConfigError, match="no dataset 'mnsit'. Did you mean tfds:mnist"):
    pipeline.load_splits("tfds:mnsit", None)
  with pytest.raises(errors.ConfigError, match="not an image-classification dataset"):
    pipeline.load_splits("tfds:imdb_reviews", None)
  with pytest.raises(errors.ConfigError, match="cannot make its builder"):
    pipeline.load_splits("tfds:mnist/no_such_config", None)


class OwnShapes(tfds.core.GeneratorBasedBuilder):
  """A tfds dataset of the test's own: images of varying size, a 'train' split only."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["circle", "square"])}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for index in range(8):
      size = 6 + index  # Every image another size.
      image = np.full((size, size + 1, 3), 20 * index, np.uint8)
      yield index, {"image": image, "label": index % 2}


@pytest.fixture(scope="module")
def own_tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  OwnShapes(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_a_tfds_dataset_prepared_in_data_dir(own_tfds_dir, monkeypatch):
  started = []
  monkeypatch.setattr(downloads, "download_and_prepare", started.append)
  with pytest.raises(errors.ConfigError, match=r"no 'test' split \(its splits: train\)"):
    pipeline.load_splits("tfds:own_shapes", own_tfds_dir, image_size=8)
  halves = dict(train_split="train[:75%]", test_split="train[75%:]")
  with pytest.raises(errors.ConfigError, match=r"images of varying size \(None, None, 3\)"):
    pipeline.load_splits("tfds:own_shapes", own_tfds_dir, **halves)
  with pytest.raises(errors.ConfigError,
                     match=r"train_split='nope' is not one of its splits \(train\)"):
    pipeline.load_splits("tfds:own_shapes", own_tfds_dir, image_size=8, train_split="nope",
                         test_split="train")
  splits = pipeline.load_splits("tfds:own_shapes", own_tfds_dir, image_size=8, **halves)
  info = splits.info
  assert info.class_names == ("circle", "square") and info.image_shape == (8, 8, 3)
  assert (info.num_train, info.num_test) == (6, 2)
  got = examples(splits.train) + examples(splits.test)
  assert sorted((int(image[0, 0, 0]), label) for image, label in got) == [
      (20 * index, index % 2) for index in range(8)]
  for image, _ in got:
    assert np.all(image == image[0, 0, 0])  # A one-colour image of any size, resized.
  # --data_dir is the only place looked in: what is not prepared there is an error.
  with pytest.raises(errors.DataNotFoundError) as raised:
    pipeline.load_splits("tfds:mnist", own_tfds_dir)
  assert f"--data_dir={own_tfds_dir}" in str(raised.value)
  assert "download_and_prepare()" in str(raised.value) and started == []


def test_download_hosts_of_any_tfds_dataset_come_from_its_builder():
  assert downloads.download_hosts("svhn_cropped") == ["ufldl.stanford.edu"]
  assert downloads.download_hosts("cifar100") == ["www.cs.toronto.edu"]
  assert downloads.download_hosts("digits") == []


# -- Shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size, stages", [(8, 2), (28, 3), (32, 3), (64, 3), (96, 4),
                                          (224, 5)])
def test_discriminator_stages_follow_the_image_size(size, stages):
  discriminator = discriminators.build_discriminator((size, size, 3), filters=4)
  convolutions = [layer for layer in discriminator.layers
                  if layer.name.startswith("spectral_conv")]
  assert len(convolutions) == stages
  final = convolutions[-1].output.shape[1]
  assert final <= 8 or stages == 3  # 3 stages as before for 64 px and smaller.


def test_shapes_the_classifiers_cannot_take_are_config_errors():
  with pytest.raises(ValueError, match="fixed"):
    backbones.check_image_shape((None, None, 3))
  with pytest.raises(ValueError, match="positive"):
    backbones.check_image_shape((0, 8, 1))
  info = pipeline.DatasetInfo("x", 2, (8, 0, 1), 1, 0, 1, "test")
  config = registry.get_experiment("digits").replace(architectures=("small_cnn",),
                                                       method="independent")
  with pytest.raises(errors.ConfigError, match="dataset=digits: Image shape"):
    builders.build_model(config, info, [0.5], [0.1], steps=1)


def test_acn_trains_on_96x96_rgb_images():
  config = registry.get_experiment("digits").replace(method="acn", batch_size=4,
                                                       epochs=1, adv_warmup_epochs=0)
  info = pipeline.DatasetInfo("x", 3, (96, 96, 3), 4, 0, 4, "test")
  model = builders.build_model(config, info, [0.5] * 3, [0.1] * 3, steps=1)
  assert model.generator.output_shape == (None, 96, 96, 3)
  images = np.random.default_rng(0).uniform(size=(4, 96, 96, 3)).astype(np.float32)
  before = [weight.numpy().copy() for weight in model.generator.trainable_weights]
  metrics = model.train_on_batch(images, np.array([0, 1, 2, 0]), return_dict=True)
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["g_loss"])
  assert any(not np.array_equal(old, new.numpy())
             for old, new in zip(before, model.generator.trainable_weights))


# -- Experiments defined by a JSON file --------------------------------------------------


def test_a_config_file_alone_defines_an_experiment(tmp_path):
  path = write_json(tmp_path / "my_shapes.json", {
      "name": "shapes", "dataset": "folder:shapes/train", "test_fraction": 0.2,
      "image_size": 16, "epochs": 3})
  config = command_line.resolve_config(None, config_file=path, overrides=["seed=2"])
  assert (config.name, config.data.dataset, config.optimization.epochs, config.seed) == (
      "shapes", "folder:shapes/train", 3, 2)
  defaults = config_lib.ExperimentConfig.from_fields(name="shapes", dataset="folder:shapes/train")
  assert config.optimization.learning_rate == defaults.optimization.learning_rate  # Not a registered experiment's.
  unnamed = write_json(tmp_path / "my_shapes.json", {"dataset": "tfds:mnist"})
  assert command_line.resolve_config(None, config_file=unnamed).name == "my_shapes"
  from_override = write_json(tmp_path / "lr.json", {"learning_rate": 0.01})
  assert command_line.resolve_config(None, config_file=from_override,
                                   overrides=["dataset=cifar10"]).data.dataset == "cifar10"


def test_a_config_file_over_a_named_experiment_may_rename_it(tmp_path):
  path = write_json(tmp_path / "tuned.json", {"name": "digits_tuned", "epochs": 4})
  config = command_line.resolve_config("digits", config_file=path)
  assert config.name == "digits_tuned" and config.optimization.epochs == 4
  assert config.optimization.learning_rate == registry.get_experiment("digits").optimization.learning_rate
  kept = write_json(tmp_path / "epochs.json", {"epochs": 4})
  assert command_line.resolve_config("digits", config_file=kept).name == "digits"


def test_without_experiment_the_file_must_give_a_dataset(tmp_path):
  path = write_json(tmp_path / "nodata.json", {"name": "x", "epochs": 4})
  with pytest.raises(errors.ConfigError) as raised:
    command_line.resolve_config(None, config_file=path)
  message = str(raised.value)
  assert f"--config_file={path} gives no dataset" in message
  assert '"dataset"' in message and "--experiment=NAME" in message
  with pytest.raises(errors.ConfigError, match="--experiment or --config_file is required"):
    command_line.resolve_config(None)
  bad_name = write_json(tmp_path / "badname.json", {"name": 3, "dataset": "digits"})
  with pytest.raises(errors.ConfigError, match="name must be a non-empty string"):
    command_line.resolve_config(None, config_file=bad_name)


# -- End to end: run.py on a folder, class names served by a plain TF client ------------

SERVING_CLIENT = """
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = tf.constant(np.load(sys.argv[2]))
outputs = loaded.signatures["serving_default"](images=images)
print("names", [name.decode() for name in loaded.class_names.numpy()])
print("classes", outputs["classes"].numpy().tolist())
print("served", [name.decode() for name in outputs["class_names"].numpy()])
assert "acn_tf" not in sys.modules
"""


@early_runs
def folder_run(directory):
  """run.py on an experiment file of its own: folders of 8x8 RGB shapes (two
  classes, 12 training and 4 test images), one ACN epoch, with export; DIRECTORY/run
  is its model_dir."""
  root = pathlib.Path(directory)
  write_folder(str(root / "data" / "train"), {"circle": 6, "square": 6}, 8, 8, 3)
  write_folder(str(root / "data" / "test"), {"circle": 2, "square": 2}, 8, 8, 3,
               first_value=50)
  experiment = write_json(root / "shapes.json", {
      "name": "shapes", "dataset": "folder:train", "test_folder": "test",
      "image_size": 8, "architectures": ["small_cnn", "small_cnn"], "method": "acn",
      "epochs": 1, "batch_size": 4, "adv_warmup_epochs": 0, "augmentation": "crop_flip",
      "crop_padding": 1})
  return {"run": [f"--config_file={experiment}", f"--data_dir={root / 'data'}",
                  f"--model_dir={root / 'run'}", "--verbose=0"]}


def test_run_py_trains_an_experiment_file_on_a_folder_and_serves_class_names(folder_run,
                                                                            tmp_path):
  model_dir = pathlib.Path(folder_run["run"].succeeded())
  results = json.loads((model_dir / "results.json").read_text())
  assert results["experiment"] == "shapes" and results["dataset"] == "folder:train"
  assert results["class_names"] == ["circle", "square"]
  assert results["image_shape"] == [8, 8, 3] and results["num_test"] == 4

  train = model_dir.parent / "data" / "train"
  images = np.stack([tf.io.decode_png(tf.io.read_file(str(train / name / f"image0{index}.png")))
                     for name in ("circle", "square") for index in range(2)])
  np.save(tmp_path / "images.npy", images)
  served = subprocess.run(
      [sys.executable, "-c", SERVING_CLIENT, str(model_dir / "export" / "ensemble"),
       str(tmp_path / "images.npy")], cwd=str(tmp_path), capture_output=True, text=True,
      timeout=300, env=subprocess_environment())
  assert served.returncode == 0, served.stderr[-3000:]
  lines = dict(line.split(" ", 1) for line in served.stdout.splitlines()
               if line.split(" ", 1)[0] in ("names", "classes", "served"))
  assert eval(lines["names"]) == ["circle", "square"]
  classes, names = eval(lines["classes"]), eval(lines["served"])
  assert len(names) == 4 and names == [["circle", "square"][label] for label in classes]


def test_export_needs_one_class_name_per_class(tmp_path):
  from acn_tf.run.export import export_saved_models
  from acn_tf.method.codistillation import CoDistillation
  model = CoDistillation([dense_classifier(0, classes=3, shape=(4, 4, 1))])
  with pytest.raises(ValueError, match="2 class names for classifiers of 3 classes"):
    export_saved_models(model, str(tmp_path), class_names=["a", "b"])
  assert os.listdir(tmp_path) == []  # Refused before writing anything.
