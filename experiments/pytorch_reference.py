"""The same ResNet-32 training step in PyTorch eager, for experiments/BENCHMARKS.md.

  pip install torch   # Not a dependency of acn-tf: this script alone needs it.
  python experiments/pytorch_reference.py [--steps=10] [--repeats=3] [--json]

The network mirrors `acn_tf.networks.backbones` resnet32: input normalisation, a 16-filter
stem, three stages of five post-activation basic blocks (16, 32, 64 filters,
1x1 projection shortcuts where the shape changes; a strided 3x3 convolution pads 1 on
every side, as backbones' do, not TensorFlow's "same"), global average pooling and a
100-way linear head; batch norm momentum 0.1 (Keras' 0.9) and epsilon 1e-5. One
step = forward, cross-entropy, backward and SGD (momentum 0.9, Nesterov, weight
decay 5e-4) on a batch of 128 CIFAR-shaped images, as benchmark.py's "single".
Threads: PyTorch's default (one per core), as TensorFlow's.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn


class BasicBlock(nn.Module):
  """conv-bn-relu-conv-bn, plus the (projected) shortcut, then relu."""

  def __init__(self, in_filters: int, filters: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_filters, filters, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1)
    self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1)
    self.shortcut = nn.Identity()
    if stride != 1 or in_filters != filters:
      self.shortcut = nn.Sequential(nn.Conv2d(in_filters, filters, 1, stride, bias=False),
                                    nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + self.shortcut(x))


class ResNet(nn.Module):
  def __init__(self, depth: int = 32, num_classes: int = 100):
    super().__init__()
    blocks = (depth - 2) // 6
    self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    in_filters = 16
    for stage, filters in enumerate((16, 32, 64)):
      for block in range(blocks):
        layers.append(BasicBlock(in_filters, filters, 2 if stage > 0 and block == 0 else 1))
        in_filters = filters
    self.features = nn.Sequential(*layers)
    self.head = nn.Linear(64, num_classes)

  def forward(self, images):
    x = self.features((images - self.mean) / self.std)
    return self.head(x.mean(dim=(2, 3)))


def images_per_second(steps: int, warmup: int, repeats: int, batch_size: int,
                      channels_last: bool):
  torch.manual_seed(0)
  model = ResNet()
  images = torch.rand(batch_size, 3, 32, 32)
  labels = torch.randint(0, 100, (batch_size,))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
  loss_function = nn.CrossEntropyLoss()
  model.train()

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = loss_function(model(images), labels)
    loss.backward()
    optimizer.step()

  for _ in range(warmup):
    step()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    rates.append(steps * batch_size / (time.perf_counter() - start))
  return rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--json", action="store_true")
  arguments = parser.parse_args()
  results = {"torch_version": torch.__version__, "threads": torch.get_num_threads()}
  for layout in ("channels_first", "channels_last"):
    rates = images_per_second(arguments.steps, arguments.warmup, arguments.repeats,
                              arguments.batch_size, layout == "channels_last")
    results[layout] = {"median": statistics.median(rates), "min": min(rates),
                       "max": max(rates)}
  if arguments.json:
    print(json.dumps(results, indent=2))
  else:
    for layout in ("channels_first", "channels_last"):
      r = results[layout]
      print(f"pytorch eager resnet32 {layout:15s} {r['median']:7.1f} images/s "
            f"(min {r['min']:.1f}, max {r['max']:.1f})")


if __name__ == "__main__":
  main()
