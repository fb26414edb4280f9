"""The classifier backbones against published and hand-counted parameter counts.

backbones.py builds the CIFAR ResNets of He et al. (2016, "Deep Residual Learning
for Image Recognition", section 4.2) as post-activation basic blocks whose
shortcut is the identity except where the shape changes, and there a projection
(option B: a strided 1x1 convolution followed by batch norm). He et al. used
option A (zero-padding, no weights) on CIFAR, so these networks carry
16*32 + 2*32 + 32*64 + 2*64 = 2,752 more trainable weights than the paper's, which
is below the rounding of its table. The Wide ResNets (Zagoruyko & Komodakis 2016,
"Wide Residual Networks") are pre-activation blocks with a 1x1 convolution
shortcut (no batch norm on it) where the shape changes, as in the paper.

The reference counts below are computed from those descriptions, not from the
built models: convolutions have no bias (each is followed by batch norm), batch
norm has a trainable gamma and beta and a non-trainable moving mean and
variance per channel, and the head is global average pooling and a dense layer
with bias. The Normalization layer (the data's channel statistics) holds no
trainable weight, so trainable counts are what we compare.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from acn_tf.networks import backbones

CIFAR = (32, 32, 3)


def _conv(kernel_size, inputs, filters):
  return kernel_size * kernel_size * inputs * filters


def _dense(inputs, num_classes):
  return inputs * num_classes + num_classes


def resnet_reference(depth, num_classes, channels=3):
  """(trainable, non-trainable) weights of a CIFAR ResNet-depth, projection shortcuts."""
  n = (depth - 2) // 6
  convs = _conv(3, channels, 16)  # The 3x3 stem.
  bn_channels = 16
  inputs = 16
  for filters in (16, 32, 64):
    for _ in range(n):
      convs += _conv(3, inputs, filters) + _conv(3, filters, filters)
      bn_channels += 2 * filters
      if inputs != filters:  # Projection shortcut: 1x1 conv and its batch norm.
        convs += _conv(1, inputs, filters)
        bn_channels += filters
      inputs = filters
  return convs + 2 * bn_channels + _dense(64, num_classes), 2 * bn_channels


def wrn_reference(depth, width, num_classes, channels=3):
  """(trainable, non-trainable) weights of WRN-depth-width (pre-activation blocks)."""
  n = (depth - 4) // 6
  convs = _conv(3, channels, 16)  # The 3x3 stem, no batch norm of its own.
  bn_channels = 0
  inputs = 16
  for filters in (16 * width, 32 * width, 64 * width):
    for _ in range(n):
      bn_channels += inputs + filters  # BN before conv1 (on the input), BN before conv2.
      convs += _conv(3, inputs, filters) + _conv(3, filters, filters)
      if inputs != filters:
        convs += _conv(1, inputs, filters)
      inputs = filters
  bn_channels += inputs  # The final BN-ReLU before pooling.
  return convs + 2 * bn_channels + _dense(inputs, num_classes), 2 * bn_channels


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


def _built(architecture, image_shape=CIFAR, num_classes=10):
  """A classifier built once per file (keyed so keyword and positional calls share it)."""
  return _build(architecture, tuple(image_shape), num_classes)


@functools.lru_cache(maxsize=None)
def _build(architecture, image_shape, num_classes):
  channels = image_shape[-1]
  return backbones.build_classifier(architecture, image_shape, num_classes,
                                    [0.5] * channels, [0.08] * channels, seed=0)


@pytest.fixture(scope="module", autouse=True)
def _free_built_models():
  yield
  _build.cache_clear()  # WRN-28-10 alone is ~146 MB of float32.


# He et al. (2016), Table 6 (CIFAR-10): millions of parameters, as printed. Counted
# with option-A shortcuts; the projections here add 2,752 weights, which is enough
# to move ResNet-32 (466,906) and ResNet-56 (855,770) past the rounding of the
# printed 0.46M and 0.85M, so the printed figure is checked two ways below.
PUBLISHED_RESNET = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66,
                    "resnet56": 0.85, "resnet110": 1.7}
PROJECTION_WEIGHTS = _conv(1, 16, 32) + 2 * 32 + _conv(1, 32, 64) + 2 * 64  # 2,752
# Zagoruyko & Komodakis (2016), Table 4 (CIFAR): millions of parameters, as printed.
# (WRN-16-4 is left out: we are not sure of a printed figure for it; its exact
# count is checked by hand below.)
PUBLISHED_WRN = {"wrn40_4": 8.9, "wrn16_8": 11.0, "wrn28_10": 36.5}


def _rounds_to(count, millions):
  """Whether `count` is within half a unit of the last digit printed in `millions`."""
  decimals = len(f"{millions}".split(".")[1])
  return abs(count / 1e6 - millions) <= 0.5 * 10.0**-decimals


@pytest.mark.parametrize("architecture,millions", sorted(PUBLISHED_RESNET.items()))
def test_resnet_parameters_match_he_et_al(architecture, millions):
  trainable = _count(_built(architecture).trainable_weights)
  # Within 2% of the printed figure (the largest gap, ResNet-110's 1,730,714 against
  # 1.7M, is 1.8%: 1.7M is itself only good to +-2.9%).
  assert abs(trainable / (millions * 1e6) - 1) <= 0.02, (architecture, trainable)
  # Without the projection shortcuts (He et al.'s option A), exactly the printed
  # figure after rounding: 0.27M is +-0.005M, 1.7M is +-0.05M.
  assert _rounds_to(trainable - PROJECTION_WEIGHTS, millions), (architecture, trainable)


@pytest.mark.parametrize("architecture,millions", sorted(PUBLISHED_WRN.items()))
def test_wrn_parameters_round_to_zagoruyko_and_komodakis(architecture, millions):
  # Same shortcuts as the paper, so the printed figure after rounding:
  # 8.9M and 11.0M are +-0.05M (0.56% and 0.45%), 36.5M is +-0.05M (0.14%).
  trainable = _count(_built(architecture).trainable_weights)
  assert _rounds_to(trainable, millions), (architecture, trainable)


def test_resnet32_count_by_hand():
  # stem 3x3x3x16 = 432, BN 2x16 = 32
  # stage 1: 10 convs 3x3x16x16 = 10 x 2,304 = 23,040; 10 BNs x 32 = 320
  # stage 2: 3x3x16x32 = 4,608 + 9 x 3x3x32x32 (9,216) = 82,944; 10 BNs x 64 = 640;
  #          projection 1x1x16x32 = 512 + its BN 64
  # stage 3: 3x3x32x64 = 18,432 + 9 x 3x3x64x64 (36,864) = 331,776; 10 BNs x 128 = 1,280;
  #          projection 1x1x32x64 = 2,048 + its BN 128
  # dense 64x10 + 10 = 650
  by_hand = (432 + 32 + 23_040 + 320 + 4_608 + 82_944 + 640 + 512 + 64
             + 18_432 + 331_776 + 1_280 + 2_048 + 128 + 650)
  assert by_hand == 466_906
  model = _built("resnet32")
  assert _count(model.trainable_weights) == 466_906
  # Moving mean and variance of the 1,232 batch-norm channels.
  assert _count(model.non_trainable_weights) == 2 * 1_232
  # He et al.'s option-A count, 466,906 - 2,752 = 464,154, is the published 0.46M too.
  assert round((466_906 - 2_752) / 1e6, 2) == PUBLISHED_RESNET["resnet32"]
  # The CIFAR-100 pair's network (dense 64x100 + 100 = 6,500): 0.47M, as in DML/PCL.
  cifar100 = _count(_built("resnet32", num_classes=100).trainable_weights)
  assert cifar100 == 466_906 - 650 + 6_500 == 472_756
  assert round(cifar100 / 1e6, 2) == 0.47


def test_wrn28_10_count_by_hand():
  # Widths 160, 320, 640; 4 blocks a stage; 1x1 shortcut in each stage's first block.
  # stem 3x3x3x16 = 432
  # stage 1: 3x3x16x160 = 23,040 + 7 x 3x3x160x160 (230,400) + 1x1x16x160 = 2,560
  # stage 2: 3x3x160x320 = 460,800 + 7 x 3x3x320x320 (921,600) + 1x1x160x320 = 51,200
  # stage 3: 3x3x320x640 = 1,843,200 + 7 x 3x3x640x640 (3,686,400) + 1x1x320x640 = 204,800
  # BN channels: 16+3x160 + 4x160 | 160+3x320 + 4x320 | 320+3x640 + 4x640 | final 640
  #            = 1,136 + 2,400 + 4,800 + 640 = 8,976, each with gamma and beta
  # dense 640x10 + 10 = 6,410
  convs = (432 + 23_040 + 7 * 230_400 + 2_560 + 460_800 + 7 * 921_600 + 51_200
           + 1_843_200 + 7 * 3_686_400 + 204_800)
  assert convs == 36_454_832
  by_hand = convs + 2 * 8_976 + 6_410
  assert by_hand == 36_479_194
  model = _built("wrn28_10")
  assert _count(model.trainable_weights) == 36_479_194
  assert _count(model.non_trainable_weights) == 2 * 8_976


@pytest.mark.parametrize("architecture,num_classes", [
    ("resnet8", 10), ("resnet20", 10), ("resnet32", 100), ("resnet44", 10),
    ("resnet56", 10), ("resnet110", 10), ("resnet110", 100)])
def test_resnet_counts_match_the_reference_exactly(architecture, num_classes):
  trainable, non_trainable = resnet_reference(int(architecture[6:]), num_classes)
  model = _built(architecture, num_classes=num_classes)
  assert _count(model.trainable_weights) == trainable
  assert _count(model.non_trainable_weights) == non_trainable


@pytest.mark.parametrize("depth,width,num_classes", [
    (10, 1, 10), (16, 4, 10), (16, 4, 100), (16, 8, 10), (40, 4, 10), (28, 10, 10)])
def test_wrn_counts_match_the_reference_exactly(depth, width, num_classes):
  trainable, non_trainable = wrn_reference(depth, width, num_classes)
  model = _built(f"wrn{depth}_{width}", num_classes=num_classes)
  assert _count(model.trainable_weights) == trainable
  assert _count(model.non_trainable_weights) == non_trainable


def test_references_agree_with_the_hand_counts():
  # The formulas against the sums written out above (and WRN-16-4 by hand:
  # convs 432 + 120,832 + 524,288 + 2,097,152, BN 2 x 1,808, dense 2,570).
  assert resnet_reference(32, 10) == (466_906, 2_464)
  assert wrn_reference(28, 10, 10) == (36_479_194, 17_952)
  assert wrn_reference(16, 4, 10) == (2_742_704 + 3_616 + 2_570, 3_616)
  assert resnet_reference(20, 10)[0] - 2_752 == 269_722  # Option A, as in He et al.


@pytest.mark.parametrize("architecture,image_shape,num_classes", [
    ("resnet8", CIFAR, 10), ("resnet20", CIFAR, 100), ("wrn10_2", CIFAR, 100),
    ("small_cnn", CIFAR, 10), ("resnet8", (28, 28, 1), 10), ("small_cnn", (28, 28, 1), 7)])
def test_output_is_batch_by_classes(architecture, image_shape, num_classes):
  model = _built(architecture, image_shape, num_classes)
  images = np.random.default_rng(0).random((3, *image_shape), dtype=np.float32)
  logits = model(images, training=False).numpy()
  assert logits.shape == (3, num_classes)
  assert np.all(np.isfinite(logits))


def test_outputs_are_logits_of_the_pooled_features():
  model = _built("resnet8")
  images = np.random.default_rng(1).random((4, *CIFAR), dtype=np.float32)
  logits = model(images, training=False).numpy()
  pooled = keras.Model(model.input, model.get_layer("pool").output)(images, training=False)
  kernel, bias = (w.numpy() for w in model.get_layer("logits").weights)
  # A plain affine map of the features: no softmax (or other activation) after it.
  np.testing.assert_allclose(logits, pooled.numpy() @ kernel + bias, rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits.sum(axis=1), 1.0)
  assert logits.min() < 0


def _kernels(model):
  return [w.numpy() for w in model.weights if w.path.endswith("kernel")]


def test_seed_fixes_the_initial_weights():
  build = lambda seed: backbones.build_classifier("resnet8", CIFAR, 10, [0.5] * 3,
                                                  [0.08] * 3, seed=seed)
  first, again, other = build(0), build(0), build(1)
  assert len(_kernels(first)) == 10  # Stem, 3 blocks x 2 convs, 2 projections, dense.
  for a, b in zip(_kernels(first), _kernels(again)):
    np.testing.assert_array_equal(a, b)
  for a, c in zip(_kernels(first), _kernels(other)):
    assert not np.allclose(a, c)


def test_grayscale_resnet8():
  model = _built("resnet8", (28, 28, 1), 10)
  assert tuple(model.get_layer("stem_conv").kernel.shape) == (3, 3, 1, 16)
  # resnet8 on RGB minus the stem's two missing input channels (3x3x2x16 = 288).
  assert _count(model.trainable_weights) == resnet_reference(8, 10)[0] - 288 == 77_754
  images = np.random.default_rng(2).random((2, 28, 28, 1), dtype=np.float32)
  assert model(images, training=False).shape == (2, 10)


@pytest.mark.parametrize("name,message", [
    ("resnet21", "6n\\+2"), ("resnet2", "6n\\+2"), ("resnet33", "6n\\+2"),
    ("wrn15_4", "6n\\+4"), ("wrn4_2", "6n\\+4"), ("wrn29_10", "6n\\+4"),
    ("wrn16_0", "width factor must be >= 1"),
    ("vgg16", "Unknown architecture"), ("resnet", "Unknown architecture"),
    ("ResNet32", "Unknown architecture"), ("wrn28-10", "Unknown architecture"),
    ("wrn28", "Unknown architecture"), ("small-cnn", "Unknown architecture"),
    ("", "Unknown architecture")])
def test_bad_architecture_names_raise(name, message):
  with pytest.raises(ValueError, match=message):
    backbones.check_architecture_name(name)
  with pytest.raises(ValueError, match=message):
    backbones.build_classifier(name, CIFAR, 10, [0.5] * 3, [0.08] * 3)


@pytest.mark.parametrize("name", ["resnet8", "resnet110", "resnet1202", "wrn10_1",
                                  "wrn28_10", "wrn40_4", "small_cnn"])
def test_good_architecture_names_pass(name):
  backbones.check_architecture_name(name)  # Raises on failure.


@pytest.mark.parametrize("image_shape", [
    (None, None, 3), (32, None, 3), (0, 32, 3), (32, 32, 0), (-1, 32, 3), (32, 32),
    (32, 32, 3, 1), (32.0, 32, 3), ()])
def test_bad_image_shapes_raise(image_shape):
  with pytest.raises(ValueError, match="fixed \\(height, width, channels\\)"):
    backbones.check_image_shape(image_shape)


@pytest.mark.parametrize("image_shape", [(1, 1, 1), (28, 28, 1), (32, 32, 3), [64, 48, 5]])
def test_good_image_shapes_pass(image_shape):
  backbones.check_image_shape(image_shape)  # Raises on failure.


@pytest.mark.parametrize("architecture", ["resnet8", "wrn10_1", "small_cnn"])
def test_one_pixel_images_build_and_run(architecture):
  # There is no minimum size: padding (a strided 3x3 pads 1 on every side, so 1x1
  # stays 1x1) and global pooling take 1x1 images.
  model = _built(architecture, (1, 1, 1), 4)
  assert model(np.full((2, 1, 1, 1), 0.5, np.float32), training=False).shape == (2, 4)


def _downsampling_branches(architecture, image_shape):
  """The first stride-2 block's two branches as one model: the tensor both read in,
  (the strided 3x3 convolution's output, the strided 1x1 shortcut's output) out."""
  model = _built(architecture, image_shape)
  padding = model.get_layer("stage2_block1_conv1_pad")
  branches = keras.Model(padding.input, [model.get_layer("stage2_block1_conv1").output,
                                         model.get_layer("stage2_block1_shortcut").output])
  kernels = (model.get_layer("stage2_block1_conv1").kernel.numpy(),
             model.get_layer("stage2_block1_shortcut").kernel.numpy())
  return branches, kernels


def _strided_convolution(images, kernel):
  """numpy: stride 2, (k - 1) / 2 zeros on every side, output[i] centred on input 2i."""
  size = kernel.shape[0]
  half = size // 2
  padded = np.pad(images, ((0, 0), (half, half), (half, half), (0, 0)))
  height = (images.shape[1] + 1) // 2
  width = (images.shape[2] + 1) // 2
  outputs = np.zeros((images.shape[0], height, width, kernel.shape[-1]))
  for i in range(height):
    for j in range(width):
      window = padded[:, 2 * i:2 * i + size, 2 * j:2 * j + size, :]
      outputs[:, i, j, :] = np.einsum("nabc,abcf->nf", window, kernel)
  return outputs


@pytest.mark.parametrize("architecture", ["resnet8", "wrn10_1"])
@pytest.mark.parametrize("image_shape", [CIFAR, (15, 10, 3)])
def test_stride_two_branches_are_numpy_convolutions_centred_on_2i(architecture, image_shape):
  branches, (kernel, shortcut_kernel) = _downsampling_branches(architecture, image_shape)
  images = np.random.default_rng(3).normal(size=(2, *branches.input_shape[1:]))
  strided, shortcut = (output.numpy() for output in branches(images.astype(np.float32)))
  np.testing.assert_allclose(strided, _strided_convolution(images, kernel), atol=1e-4)
  np.testing.assert_allclose(shortcut, _strided_convolution(images, shortcut_kernel),
                             atol=1e-4)


@pytest.mark.parametrize("architecture", ["resnet8", "wrn10_1"])
def test_both_branches_of_a_downsampling_block_look_at_pixel_2i(architecture):
  """The input pixels that output (i, j) of each branch depends on: the 1x1 shortcut
  reads (2i, 2j) alone, the 3x3 convolution the 3x3 around it (clipped at the border)."""
  branches, _ = _downsampling_branches(architecture, CIFAR)
  height, width = branches.input_shape[1:3]
  images = tf.constant(np.random.default_rng(4).normal(
      size=(1, *branches.input_shape[1:])).astype(np.float32))
  for i, j in [(0, 0), (3, 5), (height // 2 - 1, width // 2 - 1)]:
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(images)
      strided, shortcut = branches(images)
      picked = [tf.reduce_sum(strided[0, i, j]), tf.reduce_sum(shortcut[0, i, j])]
    supports = [np.argwhere(np.any(tape.gradient(value, images)[0].numpy() != 0, axis=-1))
                for value in picked]
    rows = lambda support: sorted(set(support[:, 0]))
    columns = lambda support: sorted(set(support[:, 1]))
    strided_support, shortcut_support = supports
    assert (rows(shortcut_support), columns(shortcut_support)) == ([2 * i], [2 * j])
    assert rows(strided_support) == [r for r in (2 * i - 1, 2 * i, 2 * i + 1)
                                     if 0 <= r < height]
    assert columns(strided_support) == [c for c in (2 * j - 1, 2 * j, 2 * j + 1)
                                        if 0 <= c < width]


def test_initial_weights_follow_the_pytorch_cifar_resnets():
  """Convolutions: kaiming_normal_(mode="fan_out"), a plain normal of std
  sqrt(2 / (k k filters)) (so 4.55% of the weights lie beyond 2 std, where a truncated
  normal has none); batch norm gamma 1, beta 0; the head PyTorch's default nn.Linear,
  weights and biases uniform in +-1 / sqrt(fan_in)."""
  model = _built("resnet32", num_classes=100)
  standardised = []
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      kernel = layer.kernel.numpy()
      size, _, _, filters = kernel.shape
      standardised.append((kernel / np.sqrt(2.0 / (size * size * filters))).ravel())
      # Layer by layer, the std is the fan-out's (the stem's fan-in one would be 2.3x).
      assert np.std(kernel) == pytest.approx(np.sqrt(2.0 / (size * size * filters)),
                                             rel=max(0.05, 4.0 / np.sqrt(kernel.size)))
    if isinstance(layer, keras.layers.BatchNormalization):
      np.testing.assert_array_equal(layer.gamma.numpy(), 1.0)
      np.testing.assert_array_equal(layer.beta.numpy(), 0.0)
  z = np.concatenate(standardised)
  assert z.size == 466_906 - 650 - 2 * 1_232  # Every convolution weight.
  assert abs(np.mean(z)) < 0.01 and np.var(z) == pytest.approx(1.0, abs=0.01)
  assert np.mean(np.abs(z) > 2.0) == pytest.approx(0.0455, abs=0.002)
  kernel, bias = (weight.numpy() for weight in model.get_layer("logits").weights)
  limit = 1.0 / np.sqrt(64)
  for values in (kernel, bias):
    assert np.abs(values).max() <= limit and np.abs(values).max() > 0.9 * limit
  assert np.var(kernel) == pytest.approx(limit**2 / 3.0, rel=0.06)  # Uniform's variance.


def test_the_small_cnn_keeps_keras_he_normal():
  model = _built("small_cnn", (28, 28, 1))
  kernel = model.get_layer("conv1").kernel.numpy()
  assert np.std(kernel) == pytest.approx(np.sqrt(2.0 / 9.0), rel=0.15)  # Fan-in 3x3x1.
  # Truncated at 2 std of the underlying normal, whose std Keras raises by 1 / 0.8796 so
  # that the truncated one keeps sqrt(2 / fan_in).
  assert np.abs(kernel).max() <= 2.0 * np.sqrt(2.0 / 9.0) / 0.87962566
  np.testing.assert_array_equal(model.get_layer("logits").bias.numpy(), 0.0)
