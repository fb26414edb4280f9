"""Phase A's discriminator d: real images against the generator's x̃0.

The GAN term keeps x̃0 on the image manifold: the generator is rewarded when d
takes x̃0 for real (docs/METHOD.md, L_g). `gan_weight = 0` builds no d at all. It takes images in [0, 1]
of any size.
"""

from typing import Tuple

import keras
from keras import layers


def build_discriminator(image_shape: Tuple[int, int, int], filters: int = 32,
                        spectral_norm: bool = True,
                        name: str = "discriminator") -> keras.Model:
  """DCGAN-style critic: stride-2 convolutions with LeakyReLU, then one logit.

  Spectral normalisation (optional) bounds its Lipschitz constant, which keeps
  the generator's GAN term from overpowering the divergence term. Any (H, W, C)
  works: the stages adapt to the size, and global pooling ends them.
  """
  images = keras.Input(shape=tuple(image_shape), name="images")
  x = layers.Rescaling(2.0, offset=-1.0, name="to_signed")(images)
  size = min(image_shape[0], image_shape[1])
  stage = 0
  # Three stride-2 stages (down to 4x4 for 32x32 images); larger images get more,
  # until the feature map is at most 8 pixels across, so that the critic's
  # receptive field keeps covering much of the image (96x96: 4 stages, to 6x6).
  while stage == 0 or (size >= 4 and (stage < 3 or size > 8)):
    conv = layers.Conv2D(filters * 2**stage, 4, strides=2, padding="same",
                         name=f"conv{stage + 1}")
    if spectral_norm:
      conv = layers.SpectralNormalization(conv, name=f"spectral_conv{stage + 1}")
    x = conv(x)
    x = layers.LeakyReLU(0.2, name=f"leaky{stage + 1}")(x)
    size = (size + 1) // 2
    stage += 1
  x = layers.GlobalAveragePooling2D(name="pool")(x)
  # The logit in float32 under mixed precision, as the classifiers' are: the wrapper
  # too, or it would cast the float32 Dense's output back to the compute dtype.
  head = layers.Dense(1, name="logit", dtype="float32")
  if spectral_norm:
    head = layers.SpectralNormalization(head, name="spectral_logit", dtype="float32")
  return keras.Model(images, head(x), name=name)
