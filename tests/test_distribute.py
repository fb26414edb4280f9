"""A step on 2 replicas equals a step on 1 replica with the same global batch.

This is the test that catches a hand-written loss not scaled for the number of
replicas (MirroredStrategy sums the replicas' gradients). The networks here have
no batch norm, whose per-replica batch statistics would differ by design.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from acn_tf.run import distribute
from tiny_models import (exact_acn, exact_batches, exact_dml,
                         exact_dml_noise)


def _two_replicas():
  strategy = distribute.create_strategy("mirrored")  # conftest: two logical CPUs.
  assert strategy.num_replicas_in_sync == 2
  return strategy


@pytest.mark.parametrize(
    "build", [exact_dml, exact_dml_noise, exact_acn],
    ids=["dml", "dml_noise", "acn"])
def test_two_replicas_match_one_replica(build):
  single = build(tf.distribute.get_strategy())
  mirrored = build(_two_replicas())
  for a, b in zip(single.weights, mirrored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  start = [weight.numpy() for weight in single.weights]
  single_logs = single.fit(exact_batches(), epochs=1, verbose=0, shuffle=False).history
  mirrored_logs = mirrored.fit(exact_batches(), epochs=1, verbose=0, shuffle=False).history
  moved = 0
  for a, b, before in zip(single.weights, mirrored.weights, start):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)
    moved += not np.allclose(a.numpy(), before)
  assert moved > 4, "the step should have moved the weights"
  # Reported losses are per-example means on both, not divided by the replicas.
  extra = {exact_dml: (), exact_dml_noise: ("kept_fraction",)}.get(build, ("g_loss", "d_loss"))
  for key in ("loss", "c0_loss") + extra:
    np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4,
                               err_msg=key)


def test_create_strategy_names():
  assert distribute.create_strategy("mirrored").num_replicas_in_sync == 2  # conftest: 2 CPUs
  assert distribute.create_strategy("auto").num_replicas_in_sync == 1
  with pytest.raises(ValueError, match="Unknown strategy"):
    distribute.create_strategy("tpu")


@pytest.mark.parametrize("tf_config,chief", [
    (None, True),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_is_chief_reads_tf_config(monkeypatch, tf_config, chief):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
  assert distribute.is_chief() is chief
