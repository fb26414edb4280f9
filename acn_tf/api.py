"""The Python API: ACN, DML or independent training of your own Keras classifiers
on your own tf.data pipeline.

`config()` takes a registered experiment's settings (or the defaults) with your
changes; `build_model()` puts the co-distillation model of `config.method`
around your classifiers and compiles it with the config's optimizers, exactly as
`run.py` does (acn_tf/run/training.py); you call `fit` and `evaluate` on your own
batches of (float32 images in [0, 1], integer labels), with `callbacks()`, and
`export_saved_models()` writes the SavedModels `run.py` writes. Your classifiers
take [0, 1] images of one fixed (height, width, channels) and return logits
(normalise inside them if they need it); DML and ACN need two or more. The
config's `architectures`, `dataset` and data fields are not read: the networks
and the data are yours.

```python
import keras
import tensorflow as tf
from sklearn.datasets import load_digits
from acn_tf import api

digits = load_digits()  # 1797 8x8 grayscale images of 10 digits, bundled
images, labels = (digits.images[..., None] / 16.0).astype("float32"), digits.target
train = (tf.data.Dataset.from_tensor_slices((images[:1400], labels[:1400]))
         .shuffle(1400, seed=0).batch(64, drop_remainder=True))
test = tf.data.Dataset.from_tensor_slices((images[1400:], labels[1400:])).batch(64)

def classifier(seed):  # Yours: [0, 1] images in, logits out.
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3),
                           keras.layers.ReLU(), keras.layers.Flatten(),
                           keras.layers.Dense(10)])

config = api.config("digits", method="acn", epochs=4, adv_warmup_epochs=1)
model = api.build_model([classifier(0), classifier(1)], config, steps_per_epoch=len(train))
model.fit(train, epochs=config.optimization.epochs, callbacks=api.callbacks(config),
          shuffle=False)
print(model.evaluate(test, return_dict=True)["ensemble_top1"])
api.export_saved_models(model, "digits_acn", class_names=digits.target_names.astype(str))
```
"""

from typing import Any, List, Optional, Sequence, Tuple

import keras

from acn_tf import errors
from acn_tf.config import schema as config_lib, registry
from acn_tf.data import pipeline
from acn_tf.networks import backbones
from acn_tf.run import builders
from acn_tf.config.methods import min_classifiers
from acn_tf.config.schema import ExperimentConfig
from acn_tf.run.export import _common_image_shape
# Re-exported: the SavedModels run.py writes, for the model build_model returns.
from acn_tf.run.export import export_saved_models  # noqa: F401
from acn_tf.method.codistillation import CoDistillation

__all__ = ["config", "build_model", "callbacks", "export_saved_models"]


def config(base: Optional[str] = None, **fields: Any) -> ExperimentConfig:
  """The settings of the registered experiment `base` (e.g. "cifar100" for the
  paper's; default: ExperimentConfig's own, the spec's) with `fields` changed,
  type-checked as --override values are, and validated.

  The name is `base` unless given; the dataset is "python" (your own
  pipeline) unless given. `base`'s settings for one method (e.g.
  fashion_mnist_small's adv_weight for ACN) follow `method`, as on run.py's
  command line.
  """
  if base:
    settings = registry.get_experiment(base, fields.get("method"))
  else:
    settings = ExperimentConfig.from_fields(name="python_api", dataset=config_lib.PYTHON_DATASET)
  settings = settings.replace(dataset=config_lib.PYTHON_DATASET)
  name = fields.pop("name", None)
  if name is not None:
    settings = settings.replace(name=name)
  return config_lib.apply_overrides(settings, fields).validate()


def build_model(classifiers: Sequence[keras.Model], config: ExperimentConfig,
                steps_per_epoch: int) -> CoDistillation:
  """The compiled model of `config.method` around `classifiers`, ready for `fit`.

  "independent" and "dml" give a `CoDistillation`, "dml_noise" a
  `NoisyCoDistillation` (DML plus a noisy copy of each batch), "kdcl" an
  `EnsembleTargetDistillation` (every peer distilled from one ensemble target), "acn" an
  `AdversarialCoDistillation` whose generator and discriminator are sized for
  the classifiers' input; "one" and "cl_ilr" train the branches of a network they
  build themselves (run.py, `builders.build_model`) and are refused here. `steps_per_epoch` (batches per epoch of your training
  dataset, e.g. len(train)) sets the learning-rate schedule over
  `config.optimization.epochs`. The classifiers must know their input and output shapes
  (functional or Sequential models built on a keras.Input). Call inside a
  distribution strategy's scope to train on several devices. For "acn" it seeds Keras'
  global random generators (Python's, numpy's and TensorFlow's, from `config.seed`)
  before building the generator and discriminator, so that they start alike in every
  run: seed again afterwards if your own code draws from them.

  Raises ConfigError for a config, classifiers or shapes that cannot work
  together, naming what to change.
  """
  config.validate()
  classifiers = list(classifiers)
  if not classifiers or not all(isinstance(c, keras.Model) for c in classifiers):
    raise errors.ConfigError("classifiers must be one or more keras.Model instances "
                             f"([0, 1] images in, logits out), got {classifiers!r}.")
  if len(classifiers) < min_classifiers(config.method):
    raise errors.ConfigError(f"method={config.method} co-distils two classifiers or more; "
                             f"got {len(classifiers)}. Add one, or use method=independent.")
  if steps_per_epoch < 1:
    raise errors.ConfigError(f"steps_per_epoch must be >= 1 (batches per epoch of your "
                             f"training dataset), got {steps_per_epoch}.")
  image_shape = _image_shape(classifiers)
  num_classes = _num_classes(classifiers)
  policy = "float32" if config.runtime.mixed_precision == "none" else config.runtime.mixed_precision
  if keras.mixed_precision.global_policy().name != policy:
    raise errors.ConfigError(
        f"mixed_precision={config.runtime.mixed_precision}, but the Keras policy is "
        f"{keras.mixed_precision.global_policy().name}: call "
        f"keras.mixed_precision.set_global_policy({policy!r}) before building your "
        "classifiers, or change mixed_precision.")
  builders.set_execution_mode(config)
  info = pipeline.DatasetInfo(name=config.data.dataset, num_classes=num_classes,
                              image_shape=image_shape, num_train=0, num_validation=0,
                              num_test=0, source="the caller's tf.data pipeline (acn_tf.api)")
  return builders.assemble_model(config, classifiers, info, steps_per_epoch)


def callbacks(config: ExperimentConfig) -> List[keras.callbacks.Callback]:
  """Callbacks worth adding to your own: a stop when the loss turns NaN. None is
  needed to train the method: the ACN model runs its warm-up (DML for
  `adv_warmup_epochs`) itself, counted in `steps_per_epoch` steps of its
  classifiers' optimizer, as the learning-rate schedule is."""
  del config  # Every method's callbacks are the same.
  return [keras.callbacks.TerminateOnNaN()]


def _image_shape(classifiers: Sequence[keras.Model]) -> Tuple[int, int, int]:
  """The one fixed (H, W, C) every classifier takes."""
  try:
    image_shape = tuple(_common_image_shape(classifiers))
    backbones.check_image_shape(image_shape)
  except (AttributeError, ValueError) as error:
    raise errors.ConfigError(
        f"The classifiers' input: {error}. Build each on keras.Input((H, W, C)) with "
        "one fixed shape for all.") from None
  return image_shape


def _num_classes(classifiers: Sequence[keras.Model]) -> int:
  """The classes every classifier scores (their outputs must agree)."""
  try:
    counts = {int(classifier.output_shape[-1]) for classifier in classifiers}
  except (AttributeError, ValueError, TypeError) as error:
    raise errors.ConfigError(f"The classifiers' output: {error}. Build each on a "
                             "keras.Input, returning logits [batch, classes].") from None
  if len(counts) != 1:
    raise errors.ConfigError(f"The classifiers score different numbers of classes "
                             f"({sorted(counts)}); co-distillation needs one label space.")
  return counts.pop()
