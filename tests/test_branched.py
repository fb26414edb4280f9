"""Branched networks (acn_tf/networks/branched.py): the backbone's layers split at a
named stage, hand-counted parameters, ONE's gate and CL-ILR's gradient rescaling."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.networks import architecture_names, backbones, branched
from test_backbones import resnet_reference

SHAPE = (8, 8, 1)


def _network(architecture="resnet8", branches=3, num_classes=5, **kwargs):
  return branched.build_branched_network(architecture, SHAPE, num_classes, [0.5], [0.08],
                                         branches=branches, seed=kwargs.pop("seed", 0),
                                         **kwargs)


def _images(count=6, seed=0):
  return np.random.default_rng(seed).random((count, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize("architecture", ["resnet8", "wrn10_1", "small_cnn"])
def test_the_stages_built_are_the_stages_the_config_names(architecture):
  """The config checks split points without TensorFlow (architecture_names); the
  backbones build the stages: the two lists must agree."""
  built = [stage.name for stage in backbones.feature_stages(architecture)]
  assert tuple(built) == architecture_names.stage_names(architecture)


@pytest.mark.parametrize("architecture,split", [
    ("resnet8", "stem"), ("resnet8", "stage1"), ("resnet8", "stage2"),
    ("wrn10_1", "stage1"), ("small_cnn", "stage1")])
def test_each_branch_classifier_has_the_backbones_layers_and_settings(architecture, split):
  """Trunk + branch i is the backbone itself: the same layer types with the same
  settings (initialisers, padding, batch norm momentum and epsilon, head) in order,
  only renamed, so the conventions tests/test_backbones.py checks hold for it."""
  network = _network(architecture, split_after=split)
  plain = backbones.build_classifier(architecture, SHAPE, 5, [0.5], [0.08], seed=0)
  for index in range(3):
    classifier = branched.branch_classifier(network, index)

    def settings(layer):
      config = dict(layer.get_config())
      config.pop("name")
      return type(layer).__name__, config

    own = [settings(layer) for layer in classifier.layers
           if not isinstance(layer, branched.GradientScale)]
    assert own == [settings(layer) for layer in plain.layers]
    assert classifier.count_params() == plain.count_params()


def test_branched_resnet32_parameters_against_a_hand_count():
  """ResNet-32 on CIFAR-100 split after stage2 into 3 branches: the plain network plus
  2 more copies of stage3 and the head (hand-counted: stage3's first block 3x3x32x64 +
  3x3x64x64 + 1x1x32x64 convolutions and 3 batch norms of 64, four more blocks of two
  3x3x64x64 and 2 batch norms; the head 64 x 100 + 100); ONE's gate adds 32 x 3 + 3
  and a batch norm of 3 (gamma, beta)."""
  plain, _ = resnet_reference(32, 100)
  stage3 = (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64 + 3 * 2 * 64) + 4 * (2 * 9 * 64 * 64 + 2 * 2 * 64)
  head = 64 * 100 + 100
  expected = plain + 2 * (stage3 + head)
  trainable = lambda model: sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  for with_gate, extra in ((False, 0), (True, 32 * 3 + 3 + 2 * 3)):
    network = branched.build_branched_network("resnet32", (32, 32, 3), 100, [0.5] * 3,
                                              [0.1] * 3, branches=3, with_gate=with_gate)
    assert trainable(network) == expected + extra
  assert expected == 1_193_084 and plain == 472_756  # The figures docs/METHOD.md gives.


def test_a_seed_fixes_every_weight_and_branches_start_apart():
  first, second = _network(seed=4), _network(seed=4)
  for a, b in zip(first.weights, second.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  kernels = {w.path.split("/")[0]: w.numpy() for w in first.weights
             if w.path.endswith("stage3_block1_conv1/kernel")}
  assert len(kernels) == 3
  assert not np.allclose(kernels["branch0_stage3_block1_conv1"],
                         kernels["branch1_stage3_block1_conv1"])


def test_branches_share_the_trunk_and_the_trunk_is_computed_once():
  network = _network()
  trunk = {w.path for w in network.weights if not w.path.startswith("branch")}
  assert trunk and all("stage3" not in path for path in trunk)
  for index in range(3):
    classifier = branched.branch_classifier(network, index)
    paths = {w.path for w in classifier.weights}
    assert trunk <= paths
    assert all(p in trunk or p.startswith(f"branch{index}_") for p in paths)
  # One stem convolution in the whole graph, read by every branch.
  assert sum(layer.name == "stem_conv" for layer in network.layers) == 1
  outputs = network(_images(), training=False)
  for index in range(3):
    np.testing.assert_allclose(branched.branch_classifier(network, index)(_images()),
                               outputs[index], rtol=1e-5, atol=1e-6)


def test_split_points_and_bad_split_errors():
  assert architecture_names.split_points("resnet32") == ("stem", "stage1", "stage2")
  assert architecture_names.resolve_split("resnet32", "") == "stage2"
  assert architecture_names.resolve_split("small_cnn", "") == "stage1"
  with pytest.raises(ValueError, match="use one of stem, stage1, stage2"):
    architecture_names.resolve_split("resnet32", "stage3")
  with pytest.raises(ValueError, match="at least 2 branches"):
    _network(branches=1)


def test_gradient_scale_is_identity_forward_and_scales_the_gradient_by_hand():
  layer = branched.GradientScale(0.25)
  x = tf.constant([[1.0, -2.0, 3.0]])
  weights = tf.constant([[0.5, 1.5, -4.0]])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x)
    total = tf.reduce_sum(weights * y ** 2)
  np.testing.assert_array_equal(y.numpy(), x.numpy())
  # d/dx sum(w x²) = 2 w x, times the layer's 0.25 on the way back.
  np.testing.assert_allclose(tape.gradient(total, x).numpy(),
                             0.25 * 2 * weights.numpy() * x.numpy())
  assert branched.GradientScale.from_config(layer.get_config()).scale == 0.25


def test_rescaling_divides_the_trunks_gradient_by_the_branches_and_nothing_else():
  """The same weights with and without CL-ILR's rescaling: every trunk gradient is
  1/m of the unscaled one, every branch gradient is unchanged."""
  scaled = _network(scale_trunk_gradient=True, seed=7)
  plain = _network(scale_trunk_gradient=False, seed=7)
  images = _images(8)
  gradients = []
  for network in (scaled, plain):
    with tf.GradientTape() as tape:
      total = tf.add_n([tf.reduce_sum(z ** 2) for z in network(images, training=True)])
    gradients.append({v.path: g.numpy() for v, g in zip(
        network.trainable_variables, tape.gradient(total, network.trainable_variables))})
  for path, unscaled in gradients[1].items():
    factor = 1.0 if path.startswith("branch") else 1.0 / 3
    np.testing.assert_allclose(gradients[0][path], factor * unscaled, rtol=1e-4, atol=1e-6,
                               err_msg=path)


def test_the_gate_and_gated_ensemble_against_numpy():
  """g = softmax(relu(BN(W · GAP(trunk) + b))) with the moving statistics, and
  z_e = Σ_i g_i z_i, recomputed in numpy from the layers' weights."""
  network = _network(with_gate=True)
  for layer in network.layers:  # Statistics away from 0 and 1, so a mix-up shows.
    if layer.name == "gate_bn":
      layer.moving_mean.assign([0.1, -0.2, 0.3])
      layer.moving_variance.assign([0.5, 1.5, 2.0])
      layer.gamma.assign([1.2, 0.8, 1.1])
      layer.beta.assign([0.05, -0.1, 0.2])
  images = _images()
  outputs = [o.numpy() for o in network(images, training=False)]
  trunk = keras.Model(network.input, network.get_layer("stage2_block1_out").output)
  pooled = trunk(images).numpy().mean(axis=(1, 2))
  linear = network.get_layer("gate_linear")
  bn = network.get_layer("gate_bn")
  x = pooled @ linear.kernel.numpy() + linear.bias.numpy()
  x = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-5)
  x = np.maximum(bn.gamma.numpy() * x + bn.beta.numpy(), 0.0)
  gate = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
  expected = sum(gate[:, i:i + 1] * outputs[i] for i in range(3))
  np.testing.assert_allclose(outputs[3], expected, rtol=1e-5, atol=1e-6)
  ensemble = branched.ensemble_classifier(network)
  np.testing.assert_allclose(ensemble(images).numpy(), expected, rtol=1e-5, atol=1e-6)
