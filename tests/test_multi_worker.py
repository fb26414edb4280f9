"""MultiWorkerMirroredStrategy: two worker processes on localhost train together."""

import json
import os
import socket

import pytest

from conftest import read_json, start_run_py, subprocess_environment


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for handle in sockets:
    handle.bind(("localhost", 0))
  ports = [handle.getsockname()[1] for handle in sockets]
  for handle in sockets:
    handle.close()
  return ports


@pytest.mark.slow
def test_two_workers_finish_and_only_the_chief_writes(tmp_path):
  """One epoch of 2 ACN steps (Phase A from the first): every file a run writes
  is written once, by the chief only."""
  workers = [f"localhost:{port}" for port in _free_ports(2)]
  model_dir = tmp_path / "run"
  processes = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    environment = subprocess_environment(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(tmp_path))
    processes.append(start_run_py(
        "--experiment=digits", "--method=acn", "--strategy=multi_worker",
        f"--model_dir={model_dir}", "--verbose=0", "--noexport", "--override=epochs=1",
        "--override=train_examples=128", "--override=adv_warmup_epochs=0", env=environment))
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
