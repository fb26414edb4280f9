"""SavedModel export of trained classifiers, for serving without acn_tf or Keras.

`export_saved_models(model, export_dir)` writes one SavedModel per classifier
(`export_dir/classifier_0`, `classifier_1`, ...) and one for the ensemble
(`export_dir/ensemble`, p̄ = mean_i softmax(z_i), the prediction ACN reports).
Each has a single `serving_default` signature:

  input   images         uint8   [batch, H, W, C]  raw pixels, as stored on disk
  output  probabilities  float32 [batch, num_classes]
          classes        int64   [batch]           argmax of probabilities
          class_names    string  [batch]           the name of that class

The signature takes uint8 pixels and divides by 255 itself with the training
pipeline's function (pipeline.pixels_to_unit_range), so clients never need to know that
the classifiers expect [0, 1] floats; normalisation is already inside the classifiers.
Images must have the training images' size and channels (after `image_size`
and `channels`): resize them before calling. `class_names` are the dataset's
(a folder's sub-folder names, a tfds dataset's label names), or each class's
index as text when none are given; the whole list is also the SavedModel's
`class_names` attribute (`tf.saved_model.load(path).class_names`).

Inspecting and calling an export from the command line:

  saved_model_cli show --dir EXPORT/ensemble --all
  saved_model_cli run --dir EXPORT/ensemble --tag_set serve \\
      --signature_def serving_default \\
      --input_exprs 'images=np.zeros((2, 8, 8, 1), np.uint8)'

TF Serving loads `<model_base_path>/<version>/saved_model.pb`, so give it a
numbered directory, e.g. copy EXPORT/ensemble to /models/acn/1 and run
`tensorflow_model_server --rest_api_port=8501 --model_name=acn
--model_base_path=/models/acn`; then POST
`{"instances": [<H x W x C nested lists of 0..255>, ...]}` to
`http://localhost:8501/v1/models/acn:predict`. From Python without acn_tf:
`tf.saved_model.load(path).signatures["serving_default"](images=uint8_batch)`.
"""

import os
import shutil
from typing import Dict, List, Optional, Sequence

import keras
import tensorflow as tf

from acn_tf import errors
from acn_tf.data import pipeline
from acn_tf.method import losses
from acn_tf.run import storage

ENSEMBLE_NAME = "ensemble"
SIGNATURE_NAME = "serving_default"


def export_saved_models(model, export_dir: str, overwrite: bool = False,
                        class_names: Optional[Sequence[str]] = None) -> Dict[str, str]:
  """Writes a SavedModel for each classifier of `model` and one for their ensemble.

  `model` is a `CoDistillation` (or `AdversarialCoDistillation`): only its
  classifiers are exported; a generator and discriminator are training aids. For a
  branched model (ONE, CL-ILR) each classifier is the trunk and one branch, and the
  ensemble is the model's own (`ensemble_members`: ONE's gated teacher).
  `class_names` (one per class, in label order; default: "0", "1", ...) become
  the signature's `class_names` output. Returns {"classifier_0": path, ...,
  "ensemble": path}.

  An export directory that already holds files is refused unless `overwrite`,
  in which case it is removed first: saving over it would leave the old
  export's stray files (assets, variable shards) mixed with the new one.
  """
  classifiers = list(model.classifiers)
  names = _class_names(classifiers, class_names)
  targets = {f"classifier_{i}": [classifier] for i, classifier in enumerate(classifiers)}
  # A method whose ensemble is not p̄ of its classifiers (ONE's gated teacher) names
  # the classifiers whose p̄ it is.
  targets[ENSEMBLE_NAME] = list(getattr(model, "ensemble_members", classifiers))
  paths = {name: os.path.join(export_dir, name) for name in targets}
  _check_export_paths(list(paths.values()), overwrite)
  for name, members in targets.items():
    _save_serving_module(ServingModule(members, names), paths[name])
    storage.reach("export")  # A test's kill with part of the export written.
  return paths


# -- A run's export ---------------------------------------------------------------------


def export_run(model, model_dir: str, target: str, class_names,
               replace: bool) -> Dict[str, str]:
  """The SavedModels of `model` in MODEL_DIR/target, written into a temporary
  folder and renamed into place: a folder under its final name is always a whole
  export, and a temporary one left by a kill is unfinished (removed, redone).
  An existing export is replaced when `replace` (training's final phase, whose
  weights it was or will be), else refused."""
  path = os.path.join(model_dir, target)
  storage.remove_leftovers(path)
  if not replace:
    check_run_export_free(path)
  incoming = storage.incoming_path(path)
  try:
    with storage.writing(incoming):
      paths = export_saved_models(model, incoming, class_names=class_names)
  except storage.StorageError:
    shutil.rmtree(incoming, ignore_errors=True)  # Unfinished: only takes space.
    raise
  storage.reach("exported")
  storage.replace_directory(incoming, path)
  return {name: os.path.join(path, os.path.basename(written))
          for name, written in paths.items()}


def check_run_export_free(path: str) -> None:
  """Refuses to export over a run's export already at `path` (whole: see export_run)."""
  if os.path.exists(path):
    raise errors.ModelDirError(
        f"{path} already holds an export; an export is never overwritten silently. "
        f"From the command line: delete {path} to export again.")


class ServingModule(tf.Module):
  """uint8 images in, mean softmax probabilities of `classifiers` and classes out.

  It tracks the classifiers' variables rather than the Keras models, so the
  SavedModel holds the weights and one serving function, and loads with plain
  TensorFlow (no Keras classes to revive).
  """

  def __init__(self, classifiers: Sequence[keras.Model],
               class_names: Optional[Sequence[str]] = None):
    super().__init__(name="serving")
    classifiers = list(classifiers)
    image_shape = _common_image_shape(classifiers)
    self.serving_variables = [variable for classifier in classifiers
                              for variable in classifier.variables]
    # A variable, not a constant: the SavedModel keeps it as an attribute too.
    self.class_names = tf.Variable(_class_names(classifiers, class_names), trainable=False,
                                   dtype=tf.string, name="class_names")

    def serve(images):
      outputs = serving_outputs(classifiers, images)
      outputs["class_names"] = tf.gather(self.class_names, outputs["classes"])
      return outputs

    self.serving_default = tf.function(
        serve, input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8,
                                              name="images")])


def serving_outputs(classifiers: Sequence[keras.Model],
                    images: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The signature's outputs; pixels scaled as in the training pipeline."""
  pixels = pipeline.pixels_to_unit_range(images)
  logits = [classifier(pixels, training=False) for classifier in classifiers]
  probabilities = losses.ensemble_probabilities(logits)
  return {"probabilities": probabilities,
          "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64)}


def _class_names(classifiers: Sequence[keras.Model],
                 class_names: Optional[Sequence[str]]) -> List[str]:
  """One name per class: `class_names`, or each class's index as text."""
  num_classes = classifiers[0].output_shape[-1] if classifiers else 0
  if class_names is None or len(class_names) == 0:
    return [str(label) for label in range(num_classes)]
  names = [str(name) for name in class_names]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} class names for classifiers of {num_classes} classes; "
                     "give one name per class, in label order.")
  return names


def _common_image_shape(classifiers: Sequence[keras.Model]) -> List[int]:
  """(H, W, C) from the classifiers' input shape; an ensemble needs one shape."""
  if not classifiers:
    raise ValueError("Nothing to export: the model has no classifiers.")
  shapes = {tuple(classifier.input_shape[1:]) for classifier in classifiers}
  if len(shapes) != 1:
    raise ValueError(f"Classifiers take different image shapes {sorted(shapes)}; "
                     "one serving signature needs one shape.")
  image_shape = shapes.pop()
  if len(image_shape) != 3 or None in image_shape:
    raise ValueError(f"Expected classifiers with a fixed (H, W, C) input, got {image_shape}.")
  return list(image_shape)


def _check_export_paths(paths: Sequence[str], overwrite: bool) -> None:
  """Checks every path before writing any, so a refusal leaves nothing half-written."""
  for path in paths:
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f"Export path {path} exists and is not a directory.")
  occupied = [path for path in paths if os.path.isdir(path) and os.listdir(path)]
  if occupied and not overwrite:
    raise ValueError(f"Export directories already hold files: {', '.join(occupied)}. "
                     "Choose another export_dir or pass overwrite=True to replace them.")
  for path in occupied:
    shutil.rmtree(path)


def _save_serving_module(module: ServingModule, path: str) -> None:
  tf.saved_model.save(module, path, signatures={SIGNATURE_NAME: module.serving_default})
