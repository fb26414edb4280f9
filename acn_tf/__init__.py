"""acn-tf: Adversarial Co-distillation Networks in Keras 3 / TensorFlow.

Importing the package before TensorFlow turns TensorFlow's oneDNN CPU kernels on
for x86 machines (acn_tf/platform.py says why); the entry points do so.
"""

from acn_tf import platform as _platform

_platform.prefer_onednn()

__version__ = "0.1.0"
