"""MultiWorkerMirroredStrategy: two worker processes on localhost train together."""

import json
import os
import signal
import time

import pytest

from acn_tf.run import run_dir
from conftest import (free_ports, history_epochs, read_json, start_run_py,
                      subprocess_environment)


# An ACN run on digits (Phase A from the first step), 2 steps an epoch.
ACN = ["--method=acn", "--override=train_examples=128", "--override=adv_warmup_epochs=0"]


def _start_workers(tmp_path, model_dir, *arguments, **variables):
  """run.py ARGUMENTS on two localhost workers of one cluster (worker 0 the
  chief), started."""
  workers = [f"localhost:{port}" for port in free_ports(2)]
  processes = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    environment = subprocess_environment(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(tmp_path),
                                         **variables)
    processes.append(start_run_py(
        "--experiment=digits", "--strategy=multi_worker", f"--model_dir={model_dir}",
        "--verbose=0", "--noexport", *arguments, env=environment))
  return processes


def test_a_workers_scratch_copy_holds_what_a_later_launch_reads_and_nothing_else(tmp_path):
  """The config, divergences, history, results and checkpoint are copied, file for
  file; the lock, TensorBoard logs, exports and weights are the chief's alone."""
  chief, scratch = tmp_path / "run", tmp_path / "scratch"
  files = {"config.json": "{}", "diverged.json": "{}", "history.csv": "epoch\n0\n",
           "results.json": "{}", "backup/latest.weights.h5": "w",
           "backup/training_metadata.json": "{}", ".lock": "1",
           "logs/train/events": "e", "export/saved_model.pb": "m",
           "final.weights.h5": "f", "checkpoints/best.weights.h5": "b"}
  for name, text in files.items():
    (chief / name).parent.mkdir(parents=True, exist_ok=True)
    (chief / name).write_text(text)
  scratch.mkdir()
  run_dir.copy_run_state(str(chief), str(scratch))
  copied = sorted(str(path.relative_to(scratch)) for path in scratch.rglob("*")
                  if path.is_file())
  assert copied == ["backup/latest.weights.h5", "backup/training_metadata.json",
                    "config.json", "diverged.json", "history.csv", "results.json"]
  for name in copied:
    assert (scratch / name).read_text() == files[name]
  fresh = tmp_path / "fresh"
  fresh.mkdir()
  run_dir.copy_run_state(str(tmp_path / "new"), str(fresh))  # No run yet: nothing to copy.
  assert list(fresh.iterdir()) == []


@pytest.mark.slow
def test_two_workers_finish_and_only_the_chief_writes(tmp_path):
  """One epoch of 2 ACN steps (Phase A from the first): every file a run writes
  is written once, by the chief only."""
  model_dir = tmp_path / "run"
  processes = _start_workers(tmp_path, model_dir, *ACN, "--override=epochs=1")
  outputs = [process.communicate(timeout=400) for process in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  results = read_json(model_dir / "results.json")
  assert results["epochs"] == 1
  assert results["optimizer_iterations"] == {"classifiers": 2, "generator": 2,
                                             "discriminator": 2}
  # Both workers trained the same model: their printed summaries agree.
  summaries = [stdout.strip().splitlines()[-1] for stdout, _ in outputs]
  assert summaries[0].split(", divergence")[0] == summaries[1].split(", divergence")[0]
  # The non-chief worker's scratch directory is gone; nothing else was written.
  leftovers = [name for name in os.listdir(tmp_path) if name.startswith("acn_tf_worker_")]
  assert leftovers == []
  assert sorted(os.listdir(model_dir)) == [".lock", "config.json", "final.weights.h5",
                                           "history.csv", "logs", "results.json"]


@pytest.mark.slow
def test_two_workers_killed_after_training_resume_together(tmp_path):
  """Both workers are killed as they write their final weights, after the last
  epoch's checkpoint (2 epochs of 2 steps). Launched again, the other worker
  starts from a copy of the chief's run (run_dir.copy_run_state): both restore
  epoch 2 of 2, and finish without training. (Without the copy, it would train
  from the first epoch in its empty scratch directory while the chief, with
  nothing left to train, went on to evaluate: out of step.)"""
  model_dir = tmp_path / "run"
  killed = _start_workers(tmp_path, model_dir, *ACN, "--override=epochs=2",
                          ACN_TF_STOP_AT="final_weights")
  for process in killed:
    _, stderr = process.communicate(timeout=400)
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]
  assert not os.path.exists(model_dir / "results.json")
  assert read_json(model_dir / "backup" / "training_metadata.json")["epoch"] == 2

  resumed = _start_workers(tmp_path, model_dir, *ACN, "--override=epochs=2")
  outputs = [process.communicate(timeout=400) for process in resumed]
  for process, (_, stderr) in zip(resumed, outputs):
    assert process.returncode == 0, stderr[-3000:]
  chief_stderr, worker_stderr = outputs[0][1], outputs[1][1]
  assert f"Resuming {model_dir} after epoch 2 of 2" in chief_stderr, chief_stderr[-3000:]
  assert "Resuming" not in worker_stderr  # Its directory is a scratch copy: not news.
  results = read_json(model_dir / "results.json")
  assert results["train_steps"] == 0
  assert results["optimizer_iterations"] == {"classifiers": 4, "generator": 4,
                                             "discriminator": 4}
  assert history_epochs(model_dir / "history.csv") == ["0", "1"]


@pytest.mark.slow
def test_a_signal_to_one_worker_stops_both_at_an_epoch_end_and_they_resume(tmp_path):
  """SIGTERM to the other worker only, once the chief's first checkpoint exists
  (DML, 10 epochs of 8 steps). The workers agree at the next epoch's end: both
  stop there with status 143 (the chief, never signalled, too), the chief keeping
  that epoch's checkpoint; the same commands then finish the run. (Without the
  agreement the signalled worker stopped alone at its step's end and the chief
  failed in its next collective: UnavailableError, seen.)"""
  epochs, steps = 10, 512 // 64
  model_dir = tmp_path / "run"
  settings = ["--method=dml", f"--override=epochs={epochs}", "--override=train_examples=512"]
  chief, worker = _start_workers(tmp_path, model_dir, *settings)
  metadata = model_dir / "backup" / "training_metadata.json"
  deadline = time.time() + 300
  while not metadata.exists() and chief.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  worker.send_signal(signal.SIGTERM)
  outputs = [process.communicate(timeout=300) for process in (chief, worker)]
  for process, (_, stderr) in zip((chief, worker), outputs):
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "interrupted: Interrupted by SIGTERM at the end of epoch " in stderr, stderr[-3000:]
  saved = read_json(metadata)
  assert 1 <= saved["epoch"] < epochs and saved["steps_into_epoch"] == 0
  assert not (model_dir / "results.json").exists()

  resumed = _start_workers(tmp_path, model_dir, *settings)
  for process in resumed:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
  results = read_json(model_dir / "results.json")
  assert results["optimizer_iterations"] == {"classifiers": epochs * steps}
  assert results["train_steps"] == (epochs - saved["epoch"]) * steps
  assert history_epochs(model_dir / "history.csv") == [str(epoch) for epoch in range(epochs)]
