"""Tests of acn_tf.run.storage and the guarantees it gives a run directory: one
writer at a time, a final phase that the same command completes after a kill at
any of its stages, and write errors (a full disk) as one message naming the path,
with nothing written damaged."""

import csv
import errno
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf import errors, strict_json
from acn_tf.run import callbacks as acn_callbacks, safety, storage
from conftest import (assert_one_error_line, read_json, run_py, snapshot, start_run_py,
                      subprocess_environment)

DIGITS = ["--experiment=digits", "--verbose=0", "--override=epochs=2",
          "--override=train_examples=256"]


# -- One writer per run directory -------------------------------------------------------


def _hold_lock(model_dir, shared=False):
  """A process of its own that holds model_dir's lock until it is killed."""
  code = ("import sys, time; from acn_tf.run import storage; "
          f"storage.RunDirLock(sys.argv[1], shared={shared}).acquire(); "
          "print('held', flush=True); time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", code, model_dir], stdout=subprocess.PIPE,
                            text=True, env=subprocess_environment())
  assert holder.stdout.readline().strip() == "held"
  return holder


def test_shared_holders_coexist_and_exclude_a_writer(tmp_path):
  model_dir = str(tmp_path)
  first = storage.RunDirLock(model_dir, shared=True)
  second = storage.RunDirLock(model_dir, shared=True)
  assert first.acquire() and second.acquire()
  with pytest.raises(errors.ModelDirError, match=f"process {os.getpid()}"):
    storage.RunDirLock(model_dir, purpose="export").acquire()
  first.release()
  second.release()
  writer = storage.RunDirLock(model_dir)
  assert writer.acquire()
  with pytest.raises(errors.ModelDirError, match="in use by"):
    storage.RunDirLock(model_dir, shared=True).acquire()
  writer.release()
  # A directory no run took is left untouched by a lock that only joins.
  assert not storage.RunDirLock(str(tmp_path / "new")).acquire(create=False)
  assert not os.path.exists(tmp_path / "new")


@pytest.mark.parametrize("mode", ["train", "eval", "export", "tune"])
def test_a_directory_in_use_is_refused_at_once_naming_it_and_the_holder(
    tmp_path, run_py_here, mode):
  """A killed holder does not leave the directory locked: the kernel frees its lock."""
  model_dir = str(tmp_path / "run")
  os.makedirs(model_dir)
  holder = _hold_lock(model_dir)
  try:
    before = snapshot(model_dir)
    arguments = [f"--mode={mode}", f"--model_dir={model_dir}"]
    if mode in ("train", "tune"):
      arguments += DIGITS
    completed = run_py_here(*arguments)
    assert_one_error_line(completed, f"--model_dir={model_dir} is in use by process "
                          f"{holder.pid}", "wait for it to end")
    assert snapshot(model_dir) == before
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  lock = storage.RunDirLock(model_dir)
  assert lock.acquire()
  lock.release()


@pytest.mark.slow
def test_the_same_command_twice_trains_once_and_resumes_after_a_kill(tmp_path, run_py_here):
  """The issue's case: a scheduler retries a command while the first still runs.
  The second is refused before it writes; once the first is killed, the same
  command resumes and the history holds each epoch once, under one header."""
  model_dir = str(tmp_path / "run")
  command = [*DIGITS, f"--model_dir={model_dir}", "--noexport", "--override=epochs=6"]
  first = start_run_py(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  lock_file = os.path.join(model_dir, storage.LOCK_FILE)
  deadline = time.time() + 240
  while time.time() < deadline and first.poll() is None:
    if os.path.exists(lock_file) and open(lock_file).read().strip() == str(first.pid):
      break
    time.sleep(0.05)
  second = run_py_here(*command)
  first.send_signal(signal.SIGKILL)
  first.wait()
  assert_one_error_line(second, f"--model_dir={model_dir} is in use by process {first.pid}")
  assert not os.path.exists(os.path.join(model_dir, "results.json"))

  again = run_py_here(*command)
  assert again.returncode == 0, again.stderr[-3000:]
  with open(os.path.join(model_dir, "history.csv")) as handle:
    text = handle.read()
  assert text.count("epoch,") == 1
  epochs = [int(row["epoch"]) for row in csv.DictReader(text.splitlines())]
  assert epochs == sorted(set(epochs)) and epochs[-1] == 5


# -- The final phase, killed at each stage ---------------------------------------------


def _export_is_whole(export_dir):
  names = sorted(os.listdir(export_dir))
  assert names == ["classifier_0", "classifier_1", "ensemble"], names
  for name in names:
    loaded = tf.saved_model.load(os.path.join(export_dir, name))
    outputs = loaded.signatures["serving_default"](images=tf.zeros((2, 8, 8, 1), tf.uint8))
    assert outputs["probabilities"].shape == (2, 10)


def _no_temporary_folders(model_dir):
  leftovers = [name for name in os.listdir(model_dir)
               if name.endswith((storage.INCOMING_SUFFIX, storage.REMOVING_SUFFIX))
               or ".incoming." in name]
  assert leftovers == [], leftovers


@pytest.mark.slow
def test_a_kill_at_each_stage_of_the_final_phase_is_completed_by_the_same_command(
    tmp_path, run_py_here):
  """One run killed (SIGKILL) at every stage after training in turn, each rerun
  being killed at the next: the last rerun finishes it without training again.
  Before, a kill during the export left files that every rerun refused. The
  killed commands run in processes of their own (the kill ends the process);
  the reruns that finish, through run.py's main in this process."""
  model_dir = str(tmp_path / "run")
  command = [*DIGITS, f"--model_dir={model_dir}"]
  export_dir = os.path.join(model_dir, "export")
  for stage in ("final_weights", "export", "exported", "recording", "replacing"):
    killed = run_py(*command, env=subprocess_environment(
        **{storage.STOP_AT_VARIABLE: stage}))
    assert killed.returncode == -signal.SIGKILL, (stage, killed.stderr[-3000:])
    assert not os.path.exists(os.path.join(model_dir, "results.json")), stage
    if os.path.exists(export_dir):  # Under its final name, an export is whole.
      _export_is_whole(export_dir)
  assert os.path.exists(export_dir + storage.REMOVING_SUFFIX)  # Killed while replacing.

  finished = run_py_here(*command)
  assert finished.returncode == 0, finished.stderr[-3000:]
  results = read_json(os.path.join(model_dir, "results.json"))
  assert results["optimizer_iterations"] == {"classifiers": 2 * 4}  # Trained once.
  assert results["train_steps"] == 0  # The reruns restored the last checkpoint.
  _export_is_whole(export_dir)
  _no_temporary_folders(model_dir)
  assert not os.path.exists(os.path.join(model_dir, "backup"))

  # --mode=export killed in the middle of its export: the same command completes it.
  os.rename(export_dir, str(tmp_path / "first_export"))
  export = ["--mode=export", f"--model_dir={model_dir}"]
  killed = run_py(*export, env=subprocess_environment(**{storage.STOP_AT_VARIABLE: "export"}))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not os.path.exists(export_dir)
  completed = run_py_here(*export)
  assert completed.returncode == 0, completed.stderr[-3000:]
  _export_is_whole(export_dir)
  _no_temporary_folders(model_dir)


@pytest.mark.slow
def test_a_kill_after_the_results_leaves_a_finished_run(tmp_path, run_py_here):
  model_dir = str(tmp_path / "run")
  killed = run_py(*DIGITS, f"--model_dir={model_dir}", "--noexport",
                  env=subprocess_environment(**{storage.STOP_AT_VARIABLE: "removing"}))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert read_json(os.path.join(model_dir, "results.json"))["epochs"] == 2
  assert not os.path.exists(os.path.join(model_dir, "backup"))  # Renamed whole, away.
  assert os.path.exists(os.path.join(model_dir, "backup" + storage.REMOVING_SUFFIX))
  evaluated = run_py_here("--mode=eval", f"--model_dir={model_dir}", "--verbose=0")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  _no_temporary_folders(model_dir)  # The evaluation removed the leftover.


# -- Write errors ------------------------------------------------------------------------


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")


@pytest.mark.slow
def test_a_full_disk_is_one_message_and_the_same_command_resumes_with_room(tmp_path,
                                                                         run_py_here):
  """A 300 kB tmpfs holds the run's first files, not its first checkpoint. Before,
  h5py printed 46 lines of tracebacks and the process crashed (status 139): the
  run on the full disk is a process of its own; the same command with room, run.py's
  main in this process."""
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "300k")
  try:
    model_dir = str(disk / "run")
    command = [*DIGITS, f"--model_dir={model_dir}", "--noexport"]
    full = run_py(*command)
    line = assert_one_error_line(full, f"Cannot write {os.path.join(model_dir, 'backup')}",
                                 "No space left on device", "run the same command again")
    assert "Segmentation" not in full.stderr and len(full.stderr.splitlines()) < 10, line
    assert os.listdir(os.path.join(model_dir, "backup")) == []  # No partial checkpoint.
    subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
    resumed = run_py_here(*command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_json(os.path.join(model_dir, "results.json"))["optimizer_iterations"] == {
        "classifiers": 2 * 4}
  finally:
    subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize("stage,culprit", [("final_weights", "final.weights.h5"),
                                           ("export", "export.incoming")])
def test_a_full_disk_in_the_final_phase_is_one_error_and_the_rerun_finishes(
    tmp_path, run_py_here, monkeypatch, stage, culprit):
  """The OSError of a full disk, injected where a tmpfs cannot place it exactly.
  Before, a full disk during the export gave a 50-line traceback and a directory
  that no rerun could finish."""
  model_dir = str(tmp_path / "run")
  command = [*DIGITS, f"--model_dir={model_dir}"]
  monkeypatch.setenv(storage.STOP_AT_VARIABLE, f"{stage}:enospc")
  full = run_py_here(*command)
  assert_one_error_line(full, f"Cannot write {os.path.join(model_dir, culprit)}",
                        "No space left on device")
  assert not os.path.exists(os.path.join(model_dir, "results.json"))
  _no_temporary_folders(model_dir)
  monkeypatch.delenv(storage.STOP_AT_VARIABLE)
  finished = run_py_here(*command)
  assert finished.returncode == 0, finished.stderr[-3000:]
  _export_is_whole(os.path.join(model_dir, "export"))


def _tiny_model():
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
  return model


_DATA = (np.arange(24, dtype=np.float32).reshape(8, 3) / 24, np.ones((8, 2), np.float32))


class _FailingWrites(keras.callbacks.Callback):
  """From epoch `epoch` on, `target` (a module attribute) raises a full disk's OSError."""

  def __init__(self, monkeypatch, owner, name, epoch):
    super().__init__()
    self.monkeypatch, self.owner, self.name, self.epoch = monkeypatch, owner, name, epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      def full(*arguments, **keywords):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      self.monkeypatch.setattr(self.owner, self.name, full)


def _fit_until_the_disk_fills(model, callbacks):
  with pytest.raises(storage.StorageError) as raised:
    model.fit(*_DATA, epochs=3, batch_size=4, verbose=0, shuffle=False, callbacks=callbacks)
  return str(raised.value)


def test_a_history_row_that_cannot_be_written_is_cut_off(tmp_path, monkeypatch):
  path = str(tmp_path / "history.csv")
  logger = acn_callbacks.HistoryLogger(path)

  class Writer:  # The csv writer of epoch 2 writes half a row, then the disk is full.
    def __init__(self, handle):
      self.handle = handle

    def writerow(self, row):
      self.handle.write("1,0.5")
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  class SwapWriter(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      if epoch == 1:
        logger.writer = Writer(logger.csv_file)

  message = _fit_until_the_disk_fills(_tiny_model(), [SwapWriter(), logger])
  assert f"Cannot write {path}: No space left on device" in message
  with open(path) as handle:
    rows = list(csv.DictReader(handle))
  assert [row["epoch"] for row in rows] == ["0"]


def test_best_weights_that_cannot_be_written_keep_the_previous_ones(tmp_path, monkeypatch):
  path = str(tmp_path / "best.weights.h5")
  model = _tiny_model()
  checkpoint = acn_callbacks.BestWeightsCheckpoint(path, monitor="loss", mode="min",
                                                   save_best_only=True,
                                                   save_weights_only=True)
  failing = _FailingWrites(monkeypatch, keras.Model, "save_weights", epoch=1)
  saved = {}

  class Record(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      saved.setdefault(epoch, [w.copy() for w in self.model.get_weights()])

  message = _fit_until_the_disk_fills(model, [failing, Record(), checkpoint])
  assert f"Cannot write {path}: No space left on device" in message
  monkeypatch.undo()
  restored = _tiny_model()
  restored.load_weights(path)
  assert all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), saved[0]))
  assert os.listdir(tmp_path) == ["best.weights.h5"]


def test_a_backup_that_cannot_be_written_keeps_the_last_checkpoint(tmp_path, monkeypatch):
  backup_dir = str(tmp_path / "backup")
  model = _tiny_model()
  backup = safety.SafeBackupAndRestore(backup_dir)
  failing = _FailingWrites(monkeypatch, keras.Model, "save_weights", epoch=1)
  message = _fit_until_the_disk_fills(model, [failing, backup])
  assert f"Cannot write {backup_dir}: No space left on device" in message
  assert not [name for name in os.listdir(backup_dir) if "incoming" in name]
  monkeypatch.undo()
  resumed = safety.SafeBackupAndRestore(backup_dir)
  resumed.set_model(_tiny_model())
  resumed.on_train_begin()
  assert resumed.restored["epoch"] == 1


def test_tensorboard_that_cannot_write_is_one_error(tmp_path, monkeypatch):
  log_dir = str(tmp_path / "logs")
  board = acn_callbacks.EpochTensorBoard(log_dir, write_graph=False, profile_batch=0)

  def full(*arguments):
    raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

  class FullDisk(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      if epoch == 1:
        monkeypatch.setattr(keras.callbacks.TensorBoard, "on_epoch_end", full)

  message = _fit_until_the_disk_fills(_tiny_model(), [FullDisk(), board])
  assert f"Cannot write {log_dir}: No space left on device" in message


def test_results_that_cannot_be_written_leave_no_partial_file(tmp_path, monkeypatch):
  model_dir = str(tmp_path)
  path = os.path.join(model_dir, "results.json")

  def full(handle):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(storage.StorageError, match="Cannot write .*results.json: No space"):
    with storage.writing(path):
      strict_json.write(path, {"ensemble_top1": 0.5})
  assert os.listdir(model_dir) == []


def test_bugs_are_not_mistaken_for_write_errors():
  with pytest.raises(ValueError):
    with storage.writing("somewhere"):
      raise ValueError("a bug")
  with pytest.raises(errors.ModelDirError):
    with storage.writing("somewhere"):
      raise errors.ModelDirError("a user's error")


def test_an_error_of_a_file_elsewhere_is_not_called_a_write_error_of_the_run(tmp_path):
  """The data's files are read while the run writes: their errors keep their own type."""
  with pytest.raises(FileNotFoundError):
    with storage.writing(str(tmp_path / "run")):
      open(tmp_path / "data" / "images.gz")
  with pytest.raises(storage.StorageError, match="run.incoming"):
    with storage.writing(str(tmp_path / "run")):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run.incoming"))
