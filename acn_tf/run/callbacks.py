"""Keras callbacks for what training writes besides its checkpoint: the history,
the best weights, TensorBoard scalars and images. Each turns a failed write (a
full disk) into one StorageError naming the file, and leaves what it had
written before intact."""

import contextlib
import os

import keras
import numpy as np
import tensorflow as tf

from acn_tf.run import storage, visualize


class EpochTensorBoard(keras.callbacks.TensorBoard):
  """Keras' TensorBoard callback, with every epoch's scalars written.

  With an integer `update_freq`, Keras (3.15) wraps each training batch in
  `tf.summary.record_if(batch % update_freq == 0)` and leaves the last batch's
  condition in force at the epoch's end, so the epoch scalars (train and
  validation, learning rate) are silently dropped unless the epoch's last step
  is a multiple of `update_freq`. Here epoch-end summaries are always recorded.
  """

  def on_epoch_end(self, epoch, logs=None):
    with storage.writing(self.log_dir), tf.summary.record_if(True):
      super().on_epoch_end(epoch, logs)

  def on_train_batch_end(self, batch, logs=None):
    with storage.writing(self.log_dir):
      super().on_train_batch_end(batch, logs)

  def on_train_end(self, logs=None):
    with storage.writing(self.log_dir):
      super().on_train_end(logs)


class HistoryLogger(keras.callbacks.CSVLogger):
  """Keras' CSVLogger whose rows are whole: a row that cannot be written (a full
  disk) is cut off again, so the history a resumed run appends to stays a table."""

  def on_train_begin(self, logs=None):
    with storage.writing(self.filename):
      super().on_train_begin(logs)

  def on_epoch_end(self, epoch, logs=None):
    size = os.path.getsize(self.filename) if os.path.exists(self.filename) else 0
    try:
      with storage.writing(self.filename):
        super().on_epoch_end(epoch, logs)
    except storage.StorageError:
      with contextlib.suppress(OSError):
        self.csv_file.close()  # Its buffer cannot be written either.
      with contextlib.suppress(OSError):
        os.truncate(self.filename, size)
      raise


class BestWeightsCheckpoint(keras.callbacks.ModelCheckpoint):
  """Keras' ModelCheckpoint (weights only) that writes under a temporary name and
  renames into place: a save cut short (a kill, a full disk) keeps the previous
  best weights whole."""

  def _save_model(self, epoch, batch, logs):
    final = self.filepath
    incoming = final[:-len(".weights.h5")] + ".incoming.weights.h5"
    self.filepath = incoming
    try:
      with storage.writing(final):
        super()._save_model(epoch, batch, logs)
        if os.path.exists(incoming):
          os.replace(incoming, final)
    except storage.StorageError:
      with contextlib.suppress(OSError):
        os.remove(incoming)
      raise
    finally:
      self.filepath = final


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
    self.writer_dir = os.path.join(log_dir, "train")
    self.writer = tf.summary.create_file_writer(self.writer_dir)

  def on_epoch_end(self, epoch, logs=None):
    with storage.writing(self.writer_dir):
      self._write(epoch)

  def _write(self, epoch):
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
    with storage.writing(self.writer_dir):
      self.writer.close()
