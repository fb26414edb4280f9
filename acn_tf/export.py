"""SavedModel export of trained classifiers, for serving without acn_tf or Keras.

`export_saved_models(model, export_dir)` writes one SavedModel per classifier
(`export_dir/classifier_0`, `classifier_1`, ...) and one for the ensemble
(`export_dir/ensemble`, p̄ = mean_i softmax(z_i), the prediction ACN reports).
Each has a single `serving_default` signature:

  input   images         uint8   [batch, H, W, C]  raw pixels, as stored on disk
  output  probabilities  float32 [batch, num_classes]
          classes        int64   [batch]           argmax of probabilities

The signature takes uint8 pixels and divides by 255 itself, exactly as the
training pipeline does (acn_tf/data.py), so clients never need to know that the
classifiers expect [0, 1] floats; normalisation is already inside the classifiers.

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
from typing import Dict, List, Sequence

import keras
import tensorflow as tf

from acn_tf import losses

ENSEMBLE_NAME = "ensemble"
SIGNATURE_NAME = "serving_default"


def export_saved_models(model, export_dir: str, overwrite: bool = False) -> Dict[str, str]:
  """Writes a SavedModel for each classifier of `model` and one for their ensemble.

  `model` is a `CoDistillation` (or `AdversarialCoDistillation`): only its
  classifiers are exported; a generator and discriminator are training aids.
  Returns {"classifier_0": path, ..., "ensemble": path}.

  An export directory that already holds files is refused unless `overwrite`,
  in which case it is removed first: saving over it would leave the old
  export's stray files (assets, variable shards) mixed with the new one.
  """
  classifiers = list(model.classifiers)
  targets = {f"classifier_{i}": [classifier] for i, classifier in enumerate(classifiers)}
  targets[ENSEMBLE_NAME] = classifiers
  paths = {name: os.path.join(export_dir, name) for name in targets}
  _check_export_paths(list(paths.values()), overwrite)
  for name, members in targets.items():
    _save_serving_module(ServingModule(members), paths[name])
  return paths


class ServingModule(tf.Module):
  """uint8 images in, mean softmax probabilities of `classifiers` and classes out.

  It tracks the classifiers' variables rather than the Keras models, so the
  SavedModel holds the weights and one serving function, and loads with plain
  TensorFlow (no Keras classes to revive).
  """

  def __init__(self, classifiers: Sequence[keras.Model]):
    super().__init__(name="serving")
    classifiers = list(classifiers)
    image_shape = _common_image_shape(classifiers)
    self.serving_variables = [variable for classifier in classifiers
                              for variable in classifier.variables]

    def serve(images):
      return serving_outputs(classifiers, images)

    self.serving_default = tf.function(
        serve, input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8,
                                              name="images")])


def serving_outputs(classifiers: Sequence[keras.Model],
                    images: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The signature's outputs; pixels scaled as in the training pipeline (data.py)."""
  pixels = tf.cast(images, tf.float32) / 255.0
  logits = [classifier(pixels, training=False) for classifier in classifiers]
  probabilities = losses.ensemble_probabilities(logits)
  return {"probabilities": probabilities,
          "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int64)}


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
