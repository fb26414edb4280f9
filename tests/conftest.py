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
