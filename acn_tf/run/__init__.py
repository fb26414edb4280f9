"""Run machinery: from a config to a trained, evaluated and exported run.

Builders (networks, optimizers, compiled models), the training driver around
Keras' fit, the run directory and its checks, safe checkpoints, distribution
strategies, callbacks, SavedModel export and keras-tuner searches.
"""
