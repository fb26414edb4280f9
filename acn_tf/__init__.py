"""acn-tf: Adversarial Co-distillation Networks in Keras 3 / TensorFlow.

Importing the package changes nothing outside it (no environment variable, no
global policy); the entry points choose process-wide settings such as oneDNN
(acn_tf/platform.py).
"""

__version__ = "0.1.0"
