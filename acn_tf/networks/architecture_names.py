"""Classifier architecture names, checked without importing Keras or TensorFlow.

The config validates `architectures` with these before TensorFlow loads, so a
misspelt name is reported at once; backbones.py builds what the names say.
"""

import re

RESNET_PATTERN = re.compile(r"^resnet(\d+)$")
WIDE_RESNET_PATTERN = re.compile(r"^wrn(\d+)_(\d+)$")

# How the ResNets' and WRNs' strided convolutions pad (backbones.py): "symmetric",
# PyTorch's padding=1, or "same", TensorFlow's, which acn-tf used at first;
# kept so that classifiers trained then compute, when restored, the function they
# were trained as.
DOWNSAMPLING_PADDINGS = ("symmetric", "same")


def check_architecture_name(name: str) -> None:
  """Raises ValueError for a name `build_classifier` would not understand."""
  resnet = RESNET_PATTERN.match(name)
  if resnet:
    if (int(resnet.group(1)) - 2) % 6 or int(resnet.group(1)) < 8:
      raise ValueError(f"Architecture {name!r}: CIFAR ResNet depth must be 6n+2 "
                       "(resnet8, resnet20, resnet32, resnet56, resnet110).")
    return
  wide = WIDE_RESNET_PATTERN.match(name)
  if wide:
    if (int(wide.group(1)) - 4) % 6 or int(wide.group(1)) < 10:
      raise ValueError(f"Architecture {name!r}: WRN depth must be 6n+4 "
                       "(wrn16_2, wrn28_10, ...).")
    if int(wide.group(2)) < 1:
      raise ValueError(f"Architecture {name!r}: the WRN width factor must be >= 1 "
                       "(wrn16_1, wrn16_2, wrn28_10, ...).")
    return
  if name == "small_cnn":
    return
  raise ValueError(f"Unknown architecture {name!r}. Use resnetD (D = 6n+2, e.g. "
                   "resnet32), wrnD_K (e.g. wrn16_2, wrn28_10) or small_cnn.")
