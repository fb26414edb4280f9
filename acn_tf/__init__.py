"""acn-tf: Adversarial Co-distillation Networks in Keras 3 / TensorFlow."""

__version__ = "0.1.0"
