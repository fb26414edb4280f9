"""Test set-up: quiet TensorFlow, and two logical CPU devices for strategy tests.

The logical devices must be configured before TensorFlow initialises its
devices, so this runs at import time, before any test module touches tf.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from acn_tf.config import AdversarialConfig, ExperimentConfig  # noqa: E402


def spec_phase_a(**settings) -> AdversarialConfig:
  """Phase A's settings as the spec gives them (JS at temperature 1, equal L_g
  weights, the search ball 8/255, the label mask from a separate inference
  pass), with `settings` (by their config names) on top. Tests written against
  the spec's equations keep them whatever the library's defaults become."""
  spec = dict(divergence="js", divergence_temperature=1.0, keep_label_weight=1.0,
              divergence_weight=1.0, ras_epsilon=8.0 / 255.0, ras_mask_source="search")
  return ExperimentConfig.from_fields(**{**spec, **settings}).adversarial
