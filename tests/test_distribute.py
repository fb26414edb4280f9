"""A step on 2 replicas equals a step on 1 replica with the same global batch.

This is the test that catches a hand-written loss not scaled for the number of
replicas (MirroredStrategy sums the replicas' gradients). The exact models have no
batch norm; networks with it match too once their moments are the global batch's
(distribute.synchronize_batch_norm, which the builders apply).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from acn_tf import api
from acn_tf.networks import batch_norm
from acn_tf.run import distribute
from tiny_models import (EXACT_CLASSES, GLOBAL_BATCH, exact_acn, exact_batches, exact_dml,
                         exact_dml_noise, small_cnns)


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


def _batch_norm_dml(strategy, synchronize=True):
  """DML of two small_cnns (a batch norm after every convolution) through the API,
  which synchronises their batch norms; `synchronize=False` undoes it."""
  with strategy.scope():
    model = api.build_model(small_cnns(num_classes=EXACT_CLASSES),
                            api.config(method="dml", learning_rate=0.1), steps_per_epoch=2)
  batch_norms = batch_norm.batch_norms(model)
  assert len(batch_norms) == 4 and all(layer.synchronized == (strategy.num_replicas_in_sync > 1)
                                       for layer in batch_norms)
  for layer in batch_norms:
    layer.synchronized = layer.synchronized and synchronize
  return model, batch_norms


def _replica_copies(variable):
  """Each replica's copy of a mirrored variable (one for a plain one)."""
  value = getattr(variable, "value", variable)
  return [copy.numpy() for copy in getattr(value, "values", (value,))]


@pytest.mark.parametrize("synchronize", [True, False], ids=["synchronized", "per_replica"])
def test_batch_norm_on_two_replicas_is_one_device_only_when_synchronized(synchronize):
  """Weights and moving statistics after two steps. Per replica, each normalises
  by 8 of the 16 images and keeps its own moving statistics: the replicas' copies
  part, and the weights leave one device's (the control that shows the first case
  could fail)."""
  single, _ = _batch_norm_dml(tf.distribute.get_strategy())
  mirrored, batch_norms = _batch_norm_dml(_two_replicas(), synchronize)
  single.fit(exact_batches(), epochs=1, verbose=0, shuffle=False)
  mirrored.fit(exact_batches(), epochs=1, verbose=0, shuffle=False)
  assert GLOBAL_BATCH % 2 == 0
  for layer in batch_norms:
    first, second = _replica_copies(layer.moving_mean)
    assert np.array_equal(first, second) == synchronize, layer.path
  matches = [np.allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
             for a, b in zip(single.weights, mirrored.weights)]
  if synchronize:
    assert all(matches), [w.path for w, m in zip(single.weights, matches) if not m]
  else:
    assert not all(matches)


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


def test_a_divergent_batch_kept_out_of_batch_norm_statistics_on_two_replicas():
  """divergent_batch_norm_updates off under synchronised batch norm: after one step
  of the no-generator ACN on two replicas, every replica's moving statistics are
  those of a DML step on the real batch alone (the same networks and batch), while
  the default's are not."""
  def one_step(method, **settings):
    with _two_replicas().scope():
      model = api.build_model(small_cnns(num_classes=EXACT_CLASSES),
                              api.config(method=method, learning_rate=0.1, **settings),
                              steps_per_epoch=1)
    model.fit(exact_batches(steps=1), epochs=1, verbose=0, shuffle=False)
    return model, [copy for layer in batch_norm.batch_norms(model)
                   for variable in (layer.moving_mean, layer.moving_variance)
                   for copy in _replica_copies(variable)]

  acn = dict(use_generator=False, gan_weight=0.0)
  kept_out, kept_out_statistics = one_step("acn", divergent_batch_norm_updates=False, **acn)
  _, default_statistics = one_step("acn", **acn)
  _, real_only_statistics = one_step("dml")
  assert kept_out.searched_divergence.count.numpy() > 0  # Phase B saw x̃.
  assert len(kept_out_statistics) == 16  # 4 batch norms, 2 statistics, 2 replicas.
  for a, b in zip(kept_out_statistics, real_only_statistics):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(a, b, rtol=1e-4, atol=1e-5)
             for a, b in zip(default_statistics, real_only_statistics))
