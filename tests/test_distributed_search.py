"""keras-tuner's distributed tuning: a chief hands out a search's trials to workers
(acn_tf/run/tuning.py, tuners.search_role)."""

import os
import signal
import time

import keras_tuner as kt
import pytest

from acn_tf.config import command_line
from acn_tf.config.schema import ConfigError
from acn_tf.errors import ModelDirError
from acn_tf.run import storage, tuners, tuning
from conftest import (error_lines, free_ports, read_json, run_py, start_run_py,
                      subprocess_environment)

SEARCH = ["--experiment=digits", "--method=dml", "--mode=tune", "--verbose=0",
          "--override=epochs=1", "--override=train_examples=256",
          "--override=validation_fraction=0.2",
          "--override=search_space=learning_rate=log:0.01:0.2"]


def _config(learning_rate_range="0.01:0.2"):
  return command_line.resolve_config(
      "digits", "dml", overrides=["epochs=1", "train_examples=256", "validation_fraction=0.2",
                                  f"search_space=learning_rate=log:{learning_rate_range}"])


def _as_worker(monkeypatch, tuner_id="worker0", port="1"):
  monkeypatch.setenv(tuners.ORACLE_IP_VARIABLE, "127.0.0.1")
  monkeypatch.setenv(tuners.ORACLE_PORT_VARIABLE, port)
  monkeypatch.setenv(tuners.TUNER_ID_VARIABLE, tuner_id)


def test_a_worker_failures_message_reaches_the_chiefs_record(tmp_path):
  """keras-tuner's chief receives a worker's trial without its message; the worker
  leaves it in the trial's folder (tuners._TrialHistory.on_trial_end)."""
  trial = kt.engine.trial.Trial(kt.HyperParameters(), trial_id="3", status="FAILED")
  (tmp_path / "trial_3").mkdir()

  class Search:
    def get_trial_dir(self, trial_id):
      return str(tmp_path / f"trial_{trial_id}")

  assert tuning._trial_message(Search(), trial) is None
  (tmp_path / "trial_3" / tuners.FAILURE_FILE).write_text("Traceback\nValueError: nan")
  assert tuning._trial_message(Search(), trial) == "Traceback\nValueError: nan"
  trial.message = "its own"  # A search alone: keras-tuner's record has it.
  assert tuning._trial_message(Search(), trial) == "its own"


@pytest.mark.parametrize("variables,role", [
    ({}, "alone"),
    ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000",
      "KERASTUNER_TUNER_ID": "chief"}, "chief"),
    ({"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000",
      "KERASTUNER_TUNER_ID": "tuner1"}, "worker"),
])
def test_the_role_is_read_from_keras_tuners_variables(monkeypatch, variables, role):
  for name in tuners.DISTRIBUTED_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in variables.items():
    monkeypatch.setenv(name, value)
  assert tuners.search_role() == role


def test_a_role_given_in_part_is_refused_naming_what_is_missing(monkeypatch):
  """keras-tuner itself would ignore the ID without the address, and fail later
  without the port or the ID."""
  for name in tuners.DISTRIBUTED_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
  with pytest.raises(ConfigError) as raised:
    tuners.search_role()
  message = str(raised.value)
  assert message.startswith("KERASTUNER_TUNER_ID set but not KERASTUNER_ORACLE_IP, "
                            "KERASTUNER_ORACLE_PORT")
  assert "unset them all" in message


def test_a_tuner_name_with_a_path_separator_is_refused(monkeypatch):
  _as_worker(monkeypatch, "../tuner1")
  with pytest.raises(ConfigError, match="give a name without a path separator"):
    tuners.search_role()


def test_a_chief_that_cannot_listen_names_the_address(monkeypatch, tmp_path):
  """192.0.2.1 is a documentation address, never this machine's."""
  monkeypatch.setenv(tuners.ORACLE_IP_VARIABLE, "192.0.2.1")
  monkeypatch.setenv(tuners.ORACLE_PORT_VARIABLE, str(free_ports(1)[0]))
  monkeypatch.setenv(tuners.TUNER_ID_VARIABLE, "chief")
  with pytest.raises(ConfigError) as raised:
    tuning.tune(_config(), str(tmp_path / "search"), max_trials=2, verbose=0)
  assert str(raised.value).startswith("The chief cannot listen at 192.0.2.1:")
  assert "to a free port of this machine" in str(raised.value)


def test_a_search_under_multi_worker_is_refused_before_tensorflow_loads(run_py_here, tmp_path):
  """Each worker would have kept its own search (resumed ones out of step)."""
  completed = run_py_here(*SEARCH, "--strategy=multi_worker",
                          f"--model_dir={tmp_path / 'search'}")
  assert completed.returncode != 0
  (line,) = error_lines(completed.stderr)
  assert "--mode=tune does not run under --strategy=multi_worker" in line
  assert "KERASTUNER_TUNER_ID" in line
  assert not os.path.exists(tmp_path / "search")


def test_a_worker_with_another_config_than_its_chiefs_is_refused_before_any_trial(
    monkeypatch, tmp_path):
  model_dir = str(tmp_path / "search")
  chief_config, _ = tuning.prepare_search_config(_config())
  tuning.check_same_search(model_dir, "random", chief_config)  # What the chief writes.
  _as_worker(monkeypatch)
  with pytest.raises(ConfigError) as raised:
    tuning.tune(_config("0.02:0.2"), model_dir, max_trials=2, verbose=0)
  message = str(raised.value)
  assert message.startswith("Worker worker0 was given another configuration than the "
                            f"search its chief serves in --model_dir={model_dir}.")
  assert "search_space" in message
  assert sorted(os.listdir(model_dir)) == [tuning.SEARCH_FILE]  # No lock, no trial.


def test_two_workers_of_one_name_are_refused(monkeypatch, tmp_path):
  """keras-tuner's chief would hand both the trial it holds for that name."""
  model_dir = str(tmp_path / "search")
  config, _ = tuning.prepare_search_config(_config())
  tuning.check_same_search(model_dir, "random", config)
  _as_worker(monkeypatch, "worker0")
  with storage.RunDirLock(model_dir, lock_file=".lock-worker0") as other:
    other.acquire()
    with pytest.raises(ModelDirError) as raised:
      tuning.tune(_config(), model_dir, max_trials=2, verbose=0)
  assert str(raised.value).startswith(
      f"Another process of the search in --model_dir={model_dir} is worker "
      "KERASTUNER_TUNER_ID=worker0")
  assert not os.path.exists(os.path.join(model_dir, tuning.TUNER_DIR))


def test_a_worker_without_its_chief_says_where_it_looked(monkeypatch, tmp_path):
  monkeypatch.setattr(tuning, "CHIEF_WAIT_SECONDS", 1.5)
  _as_worker(monkeypatch, "worker0", port="8123")
  model_dir = str(tmp_path / "search")
  with pytest.raises(ModelDirError) as raised:
    tuning.tune(_config(), model_dir, max_trials=2, verbose=0)
  message = str(raised.value)
  assert message.startswith(f"Worker worker0 found no {os.path.join(model_dir, 'search.json')}"
                            " after 2 s")
  assert "127.0.0.1:8123" in message and "Start the chief with the same --model_dir" in message


def test_a_signal_stops_the_chief_at_once_saying_to_restart_its_workers():
  """keras-tuner's chief only sleeps and answers: nothing would ever read a request
  to stop at the next step. The previous handler comes back after."""
  class Search:
    project_dir = "/shared/search/tuner"

  previous = signal.getsignal(signal.SIGUSR1)
  with pytest.raises(tuners.SearchStopped) as raised:
    with tuners.stop_oracle_on_signals(Search(), signals=(signal.SIGUSR1,)):
      os.kill(os.getpid(), signal.SIGUSR1)
      time.sleep(5)  # The handler raises here, at once.
  message = str(raised.value.interruption)
  assert message.startswith("Interrupted by SIGUSR1 while handing out the trials of the "
                            "search in /shared/search/tuner")
  assert "Stop its workers too" in message
  assert raised.value.interruption.exit_status == 128 + signal.SIGUSR1
  assert signal.getsignal(signal.SIGUSR1) is previous


@pytest.mark.slow
def test_a_chief_and_two_workers_run_each_trial_once_and_the_chief_records_them(tmp_path):
  """A search of 2 trials begun alone is continued by three processes of one
  command: the chief hands out trials 3 and 4 (of one epoch); each is run by
  exactly one worker, the first two are kept as they were, and the chief's
  tuning_results.json and HParams experiment hold the search, as a search alone
  writes them. (Without tuning._continue_under_this_name, keras-tuner's chief,
  finding no file of its own name, would start the search over.)"""
  model_dir = tmp_path / "search"
  alone = run_py(*SEARCH, f"--model_dir={model_dir}", "--max_trials=2")
  assert alone.returncode == 0, alone.stderr[-3000:]
  begun = read_json(model_dir / tuning.RESULTS_FILE)["trials"]
  port = str(free_ports(1)[0])
  processes = {}
  for tuner_id in ("chief", "worker0", "worker1"):
    environment = subprocess_environment(KERASTUNER_ORACLE_IP="127.0.0.1",
                                         KERASTUNER_ORACLE_PORT=port,
                                         KERASTUNER_TUNER_ID=tuner_id)
    processes[tuner_id] = start_run_py(*SEARCH, f"--model_dir={model_dir}", "--max_trials=4",
                                       env=environment)
  outputs = {tuner_id: process.communicate(timeout=600)
             for tuner_id, process in processes.items()}
  for tuner_id, process in processes.items():
    assert process.returncode == 0, (tuner_id, outputs[tuner_id][1][-3000:])

  summary = read_json(model_dir / tuning.RESULTS_FILE)
  trial_ids = [trial["trial"] for trial in summary["trials"]]
  assert summary["num_trials"] == 4 and summary["num_completed"] == 4
  assert summary["trials"][:2] == begun
  assert summary["best_score"] == max(trial["score"] for trial in summary["trials"])
  assert os.path.exists(model_dir / tuning.BEST_CONFIG_FILE)
  assert "Serving the search in" in outputs["chief"][1]

  run_by = {}
  for tuner_id in ("worker0", "worker1"):
    (line,) = [line for line in outputs[tuner_id][0].splitlines()
               if line.startswith(f"Worker {tuner_id} ran trials: ")]
    listed = line.split("ran trials: ")[1].split(". The chief")[0]
    run_by[tuner_id] = [] if listed == "none" else listed.split(", ")
    assert line.endswith(f"The chief writes the search's results to "
                         f"{model_dir / tuning.RESULTS_FILE}.")
  assert sorted(run_by["worker0"] + run_by["worker1"]) == sorted(trial_ids[2:])
  # Each trial's every epoch in its folder, written by the process that ran it.
  for trial_id in trial_ids:
    assert os.path.exists(model_dir / tuning.TUNER_DIR / f"trial_{trial_id}" /
                          tuners.TRIAL_HISTORY_FILE)
  # One HParams experiment (the chief's), and a run per trial.
  hparams_dir = model_dir / tuning.HPARAMS_DIR
  assert len([name for name in os.listdir(hparams_dir)
              if name.startswith("events.out.tfevents")]) == 1
  assert sorted(name for name in os.listdir(hparams_dir) if name.startswith("trial_")) == \
      sorted(f"trial_{trial_id}" for trial_id in trial_ids)

  # The chief run again on the ended search has nothing to hand out: it records the
  # same trials and ends, rather than waiting for a worker to ask.
  again = run_py(*SEARCH, f"--model_dir={model_dir}", "--max_trials=4",
                 env=subprocess_environment(KERASTUNER_ORACLE_IP="127.0.0.1",
                                            KERASTUNER_ORACLE_PORT=port,
                                            KERASTUNER_TUNER_ID="chief"))
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Serving" not in again.stderr
  assert read_json(model_dir / tuning.RESULTS_FILE)["trials"] == summary["trials"]
