"""What a run leaves behind: TensorBoard events, checkpoints, resume after a kill."""

import csv
import glob
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (assert_one_error_line, kill_run_py_after_checkpoint, read_json,
                      snapshot)


def _event_values(directory):
  """{tag: [values]} of every scalar and the shapes of every image in `directory`."""
  scalars, images = {}, {}
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tensor = tf.make_ndarray(value.tensor)
        if value.metadata.plugin_data.plugin_name == "images":
          images.setdefault(value.tag, []).append(tensor)
        elif tensor.ndim == 0:
          scalars.setdefault(value.tag, []).append(float(tensor))
  return scalars, images


@pytest.fixture(scope="module")
def acn_run(digits_runs):
  """conftest.DIGITS_RUNS["acn"]: 2 epochs of 5 steps, validation, no warm-up."""
  return digits_runs["acn"].succeeded()


def test_tensorboard_has_metrics_learning_rates_and_divergent_images(acn_run):
  scalars, images = _event_values(os.path.join(acn_run, "logs", "train"))
  for tag in ("epoch_ensemble_top1", "epoch_c0_top1", "epoch_divergence_x0",
              "epoch_kept_fraction", "epoch_g_loss", "epoch_d_loss", "epoch_learning_rate",
              "epoch_generator_learning_rate", "epoch_discriminator_learning_rate",
              "epoch_health_divergence_ratio_generated", "epoch_health_kept_searched"):
    assert tag in scalars, sorted(scalars)
    assert np.all(np.isfinite(scalars[tag])), tag
  assert len(scalars["epoch_ensemble_top1"]) == 2
  divergent = [tag for tag in images if "divergent" in tag]
  assert divergent, sorted(images)
  assert len(images[divergent[0]]) == 2  # One grid per epoch.
  validation, _ = _event_values(os.path.join(acn_run, "logs", "validation"))
  assert len(validation["epoch_ensemble_top1"]) == 2


def test_epoch_scalars_are_written_whatever_the_batch_logging_frequency(tmp_path):
  from acn_tf.run import callbacks
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
  data = (np.zeros((28, 3), np.float32), np.zeros(28, np.int64))
  # 7 steps an epoch, batch scalars every 3 steps: epochs end on steps 7 and 14.
  model.fit(*data, batch_size=4, epochs=2, validation_data=data, verbose=0,
            callbacks=[callbacks.EpochTensorBoard(str(tmp_path), update_freq=3,
                                                  write_graph=False, profile_batch=0)])
  train, _ = _event_values(str(tmp_path / "train"))
  assert len(train["epoch_loss"]) == 2 and len(train["epoch_learning_rate"]) == 2
  assert len(train["batch_loss"]) == 4  # Steps 3, 6, 9 and 12.
  validation, _ = _event_values(str(tmp_path / "validation"))
  assert len(validation["epoch_accuracy"]) == 2


def test_best_checkpoint_is_kept_and_evaluated(acn_run, run_py_here, tmp_path):
  model_dir = shutil.copytree(acn_run, tmp_path / "run")  # Evaluating rewrites results.json.
  assert os.path.exists(os.path.join(model_dir, "checkpoints", "best.weights.h5"))
  completed = run_py_here("--mode=eval", f"--model_dir={model_dir}", "--checkpoint=best",
                          "--verbose=0")
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert read_json(os.path.join(model_dir, "results.json"))["checkpoint"] == "best"
  with open(os.path.join(model_dir, "history.csv")) as handle:
    best_validation = max(float(row["val_ensemble_top1"]) for row in csv.DictReader(handle))
  assert best_validation > 0


def test_corrupted_weights_give_a_clear_error(acn_run, run_py_here, tmp_path):
  corrupted = tmp_path / "run"
  os.makedirs(corrupted)
  for name in ("config.json", "final.weights.h5"):
    with open(os.path.join(acn_run, name), "rb") as source:
      content = source.read()
    if name.endswith(".h5"):
      content = content[:len(content) // 3]  # A file cut short, as by a crash.
    (corrupted / name).write_bytes(content)
  completed = run_py_here("--mode=eval", f"--model_dir={corrupted}", "--verbose=0")
  assert_one_error_line(completed, "Cannot load weights from", "final.weights.h5")


@pytest.mark.slow
def test_killed_run_resumes_with_every_optimizer_and_finishes_all_epochs(tmp_path,
                                                                        run_py_here):
  """Killed after the checkpoint of epoch 2, the first with Phase A (epoch 1 is
  the warm-up), so that every optimizer has taken steps when it is saved. The
  resuming command runs through run.py's main in this process."""
  model_dir = str(tmp_path / "run")
  epochs, steps = 4, 256 // 64
  command = ["--experiment=digits", "--method=acn", f"--model_dir={model_dir}", "--verbose=0",
             "--noexport", f"--override=epochs={epochs}", "--override=adv_warmup_epochs=1",
             "--override=train_examples=256"]
  resumed_from = kill_run_py_after_checkpoint(command, model_dir, 2)
  assert 2 <= resumed_from < epochs

  completed = run_py_here(*command)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = read_json(os.path.join(model_dir, "results.json"))
  # Every optimizer's step counter came back: none restarted from zero.
  assert results["optimizer_iterations"] == {
      "classifiers": epochs * steps,
      "generator": (epochs - 1) * steps,
      "discriminator": (epochs - 1) * steps}
  # The cost recorded is the resumed process's: whole epochs after the checkpoint.
  assert 0 < results["train_steps"] < epochs * steps and results["train_steps"] % steps == 0
  with open(os.path.join(model_dir, "history.csv")) as handle:
    recorded = [int(row["epoch"]) for row in csv.DictReader(handle)]
  assert recorded[-1] == epochs - 1
  assert set(recorded) >= set(range(resumed_from, epochs))


def test_a_finished_run_launched_again_trains_nothing_and_other_config_is_refused(
    acn_run, run_py_here, tmp_path):
  """The same command again (a scheduler's retry) succeeds without training and
  prints the run's recorded results; another configuration is refused, there and
  in an unfinished run."""
  settings = ["--experiment=digits", "--method=acn", "--verbose=0", "--override=epochs=2",
              "--override=train_examples=320", "--override=adv_warmup_epochs=0",
              "--override=validation_fraction=0.2"]
  before = snapshot(acn_run)
  again = run_py_here(*settings, f"--model_dir={acn_run}")
  assert again.returncode == 0, again.stderr
  assert "holds this run, finished by an earlier launch: nothing to train" in again.stdout
  recorded = read_json(os.path.join(acn_run, "results.json"))
  assert f"ensemble top1 {recorded['ensemble_top1']:.4f}" in again.stdout
  assert snapshot(acn_run) == before
  longer = run_py_here(*settings, f"--model_dir={acn_run}", "--override=epochs=3")
  assert_one_error_line(longer, "already holds a finished run (results.json) of another "
                        "configuration. Different: epochs (saved 2, now 3)")
  assert snapshot(acn_run) == before
  unfinished = tmp_path / "unfinished"
  os.makedirs(unfinished)
  with open(os.path.join(acn_run, "config.json")) as handle:
    (unfinished / "config.json").write_text(handle.read())
  other = run_py_here(*settings, f"--model_dir={unfinished}", "--override=epochs=3")
  assert_one_error_line(other, "epochs (saved 2, now 3)")
  assert sorted(os.listdir(unfinished)) == ["config.json"]


def test_best_recorded_reads_the_history_and_skips_missing_values(tmp_path):
  from acn_tf.run import training
  path = tmp_path / "history.csv"
  path.write_text("epoch,val_ensemble_top1\n0,0.5\n1,NA\n2,0.75\n3,0.7\n")
  assert training.best_recorded(str(path), "val_ensemble_top1") == 0.75
  assert training.best_recorded(str(path), "val_loss") is None
  assert training.best_recorded(str(tmp_path / "absent.csv"), "val_ensemble_top1") is None
