"""Classifier architecture names and their stages, checked without importing Keras or
TensorFlow.

The config validates `architectures` with these before TensorFlow loads, so a
misspelt name is reported at once; backbones.py builds what the names say.
"""

import re
from typing import Tuple

RESNET_PATTERN = re.compile(r"^resnet(\d+)$")
WIDE_RESNET_PATTERN = re.compile(r"^wrn(\d+)_(\d+)$")

# How the ResNets' and WRNs' strided convolutions pad (backbones.py): "symmetric",
# PyTorch's padding=1, or "same", TensorFlow's, which acn-tf used at first;
# kept so that classifiers trained then compute, when restored, the function they
# were trained as.
DOWNSAMPLING_PADDINGS = ("symmetric", "same")

# Where a branched network may split (`split_after`): after one of these stages, or
# "" for the last stage but one (`resolve_split`); which of them an architecture
# has is `split_points`.
SPLIT_AFTER = ("", "stem", "stage1", "stage2")


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


def stage_names(name: str) -> Tuple[str, ...]:
  """The named stages of architecture `name`'s feature extractor, in order, as
  backbones.feature_stages builds them: a branched network splits after one of
  them (all but the last)."""
  check_architecture_name(name)
  if name == "small_cnn":
    return ("stage1", "stage2")
  return ("stem", "stage1", "stage2", "stage3")


def split_points(architecture: str) -> Tuple[str, ...]:
  """The stages after which `architecture` can split: every stage but the last, so
  that each branch holds at least one stage of its own besides its head."""
  return stage_names(architecture)[:-1]


def resolve_split(architecture: str, split_after: str) -> str:
  """The stage the trunk ends with: `split_after`, or "" for the last stage but one
  (ONE's public code: the branches are the last stage; ResNet-32's stage3). Raises
  ValueError naming the valid stages. Needs no TensorFlow: the config checks it."""
  points = split_points(architecture)
  if not split_after:
    return points[-1]
  if split_after not in points:
    raise ValueError(f"split_after={split_after!r} is not a stage {architecture} can split "
                     f"after; use one of {', '.join(points)} (or leave it empty for "
                     f"{points[-1]}).")
  return split_after
