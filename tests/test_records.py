"""What a run leaves behind: TensorBoard events, checkpoints, resume after a kill."""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(model_dir, *overrides, method="acn"):
  return [sys.executable, os.path.join(ROOT, "run.py"), "--experiment=digits",
          f"--method={method}", f"--model_dir={model_dir}", "--verbose=0",
          *[f"--override={item}" for item in overrides]]


def _run(command):
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(command, capture_output=True, text=True, env=environment,
                        timeout=300, cwd=ROOT)


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
def acn_run(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("records") / "run")
  # Default log_every_steps (50), 5 steps an epoch: the epoch's last step is not
  # a multiple of it, the case where Keras' own callback loses the epoch scalars.
  completed = _run(_command(model_dir, "epochs=2", "train_examples=320",
                            "adv_warmup_epochs=0", "validation_fraction=0.2"))
  assert completed.returncode == 0, completed.stderr[-3000:]
  return model_dir


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
  from acn_tf import callbacks
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


def test_best_checkpoint_is_kept_and_evaluated(acn_run):
  assert os.path.exists(os.path.join(acn_run, "checkpoints", "best.weights.h5"))
  completed = _run([sys.executable, os.path.join(ROOT, "run.py"), "--mode=eval",
                    f"--model_dir={acn_run}", "--checkpoint=best", "--verbose=0"])
  assert completed.returncode == 0, completed.stderr[-3000:]
  with open(os.path.join(acn_run, "results.json")) as handle:
    results = json.load(handle)
  assert results["checkpoint"] == "best"
  with open(os.path.join(acn_run, "history.csv")) as handle:
    best_validation = max(float(row["val_ensemble_top1"]) for row in csv.DictReader(handle))
  assert best_validation > 0


def test_corrupted_weights_give_a_clear_error(acn_run, tmp_path):
  corrupted = tmp_path / "run"
  os.makedirs(corrupted)
  for name in ("config.json", "final.weights.h5"):
    with open(os.path.join(acn_run, name), "rb") as source:
      content = source.read()
    if name.endswith(".h5"):
      content = content[:len(content) // 3]  # A file cut short, as by a crash.
    (corrupted / name).write_bytes(content)
  completed = _run([sys.executable, os.path.join(ROOT, "run.py"), "--mode=eval",
                    f"--model_dir={corrupted}", "--verbose=0"])
  assert completed.returncode != 0
  assert "Cannot load weights from" in completed.stderr
  assert "final.weights.h5" in completed.stderr
  assert "Traceback" not in completed.stderr


def test_killed_run_resumes_with_every_optimizer_and_finishes_all_epochs(tmp_path):
  model_dir = str(tmp_path / "run")
  epochs = 12
  settings = (f"epochs={epochs}", "adv_warmup_epochs=1", "train_examples=512")
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  process = subprocess.Popen(_command(model_dir, *settings), cwd=ROOT, env=environment,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metadata = os.path.join(model_dir, "backup", "training_metadata.json")
  deadline = time.time() + 240
  while not os.path.exists(metadata) and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert os.path.exists(metadata), "the run never wrote its first checkpoint"
  assert not os.path.exists(os.path.join(model_dir, "results.json")), \
      "the run finished before it was killed: make it longer"
  with open(metadata) as handle:
    resumed_from = json.load(handle)["epoch"]
  assert 1 <= resumed_from < epochs

  completed = _run(_command(model_dir, *settings))
  assert completed.returncode == 0, completed.stderr[-3000:]
  with open(os.path.join(model_dir, "results.json")) as handle:
    results = json.load(handle)
  steps = 512 // 64
  # Every optimizer's step counter came back: none restarted from zero.
  assert results["optimizer_iterations"] == {
      "classifiers": epochs * steps,
      "generator": (epochs - 1) * steps,
      "discriminator": (epochs - 1) * steps}
  with open(os.path.join(model_dir, "history.csv")) as handle:
    recorded = [int(row["epoch"]) for row in csv.DictReader(handle)]
  assert recorded[-1] == epochs - 1
  assert set(recorded) >= set(range(resumed_from, epochs))


def test_finished_run_is_not_resumed_and_other_config_is_refused(acn_run, tmp_path):
  again = _run(_command(acn_run, "epochs=2", "train_examples=320", "adv_warmup_epochs=0",
                        "validation_fraction=0.2"))
  assert again.returncode != 0 and "already holds a finished run" in again.stderr
  unfinished = tmp_path / "unfinished"
  os.makedirs(unfinished)
  with open(os.path.join(acn_run, "config.json")) as handle:
    (unfinished / "config.json").write_text(handle.read())
  other = _run(_command(str(unfinished), "epochs=3", "train_examples=320",
                        "adv_warmup_epochs=0", "validation_fraction=0.2"))
  assert other.returncode != 0
  assert "epochs (saved 2, now 3)" in other.stderr


def test_best_recorded_reads_the_history_and_skips_missing_values(tmp_path):
  from acn_tf import training
  path = tmp_path / "history.csv"
  path.write_text("epoch,val_ensemble_top1\n0,0.5\n1,NA\n2,0.75\n3,0.7\n")
  assert training.best_recorded(str(path), "val_ensemble_top1") == 0.75
  assert training.best_recorded(str(path), "val_loss") is None
  assert training.best_recorded(str(tmp_path / "absent.csv"), "val_ensemble_top1") is None
