"""Keras callbacks for side products of training (images and extra scalars)."""

import os

import keras
import numpy as np
import tensorflow as tf

from acn_tf.run import visualize


class EpochTensorBoard(keras.callbacks.TensorBoard):
  """Keras' TensorBoard callback, with every epoch's scalars written.

  With an integer `update_freq`, Keras (3.15) wraps each training batch in
  `tf.summary.record_if(batch % update_freq == 0)` and leaves the last batch's
  condition in force at the epoch's end, so the epoch scalars (train and
  validation, learning rate) are silently dropped unless the epoch's last step
  is a multiple of `update_freq`. Here epoch-end summaries are always recorded.
  """

  def on_epoch_end(self, epoch, logs=None):
    with tf.summary.record_if(True):
      super().on_epoch_end(epoch, logs)


class StepCounter(keras.callbacks.Callback):
  """The training steps `fit` ran in this process: a resumed run's earlier steps are
  not among them, so steps / seconds is this process's throughput either way."""

  def __init__(self):
    super().__init__()
    self.steps = 0

  def on_train_batch_end(self, batch, logs=None):
    self.steps += 1


class DivergentExamplesSummary(keras.callbacks.Callback):
  """Each epoch, a TensorBoard image of real vs divergent examples (tag
  "divergent_examples": rows x, x̃0, x̃, amplified x̃ - x) and the generator's and
  discriminator's learning rates, which Keras' TensorBoard does not log."""

  def __init__(self, log_dir: str, images: np.ndarray, labels: np.ndarray):
    super().__init__()
    self.images = images
    self.labels = labels
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))

  def on_epoch_end(self, epoch, logs=None):
    model = self.model
    # Recorded whatever batch-level condition TensorBoard left in force.
    with self.writer.as_default(step=epoch), tf.summary.record_if(True):
      if model.generator_optimizer is not None:
        tf.summary.scalar("epoch_generator_learning_rate",
                          float(keras.ops.convert_to_numpy(
                              model.generator_optimizer.learning_rate)))
      if model.discriminator_optimizer is not None:
        tf.summary.scalar("epoch_discriminator_learning_rate",
                          float(keras.ops.convert_to_numpy(
                              model.discriminator_optimizer.learning_rate)))
      examples = visualize.divergent_examples(model, self.images, self.labels, seed=epoch)
      grid = visualize.image_grid(examples)
      tf.summary.image("divergent_examples", grid[np.newaxis], step=epoch,
                       description="Rows: real x, generated x̃0, searched x̃, "
                       "0.5 + 5 (x̃ - x).")
    self.writer.flush()

  def on_train_end(self, logs=None):
    self.writer.close()
