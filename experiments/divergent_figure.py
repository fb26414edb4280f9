"""A PNG grid of what a trained ACN generates: x, x̃0, x̃ and the amplified x̃ - x.

  python experiments/divergent_figure.py --model_dir=runs/study/acn-seed0 \
      --out=experiments/figures/fashion_mnist_divergent.png [--count=8] [--split=test]

Under each image: every classifier's predicted class (green when it equals the
label), and for x̃ whether the label restriction kept it.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's acn_tf rather than an installed one: a git worktree runs its own code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from acn_tf import platform  # noqa: E402

platform.prefer_onednn()  # Before TensorFlow loads, as run.py does.

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from acn_tf.data import pipeline  # noqa: E402
from acn_tf.run import training, visualize  # noqa: E402

ROW_TITLES = ("real x", "generated x̃0", "searched x̃", "0.5 + 5 (x̃ - x)")


def _first_examples(dataset, count):
  images, labels = next(iter(dataset.batch(count)))
  return pipeline.pixels_to_unit_range(images).numpy(), labels.numpy()


def draw(examples: visualize.DivergentExamples, labels, path: str) -> None:
  count = len(labels)
  rows = (examples.real, examples.generated, examples.searched,
          examples.amplified_difference())
  figure, axes = plt.subplots(4, count, figsize=(1.6 * count, 7.6), squeeze=False)
  for row, (title, images) in enumerate(zip(ROW_TITLES, rows)):
    for column in range(count):
      axis = axes[row][column]
      image = images[column]
      axis.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                  cmap="gray" if image.shape[-1] == 1 else None, vmin=0.0, vmax=1.0)
      axis.set_xticks([])
      axis.set_yticks([])
      if column == 0:
        axis.set_ylabel(title, fontsize=9)
      if row < 3:
        predicted = examples.predictions[row][:, column]
        text = " ".join(str(p) for p in predicted)
        correct = np.all(predicted == labels[column])
        if row == 2:
          text += " kept" if examples.keep_mask[column] else " dropped"
        axis.set_xlabel(text, fontsize=8, color="green" if correct else "red")
      elif row == 3:
        axis.set_xlabel(f"label {labels[column]}", fontsize=8)
  figure.suptitle("ACN divergent examples (classifiers' predictions under each image)",
                  fontsize=10)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True, help="A trained method=acn run.")
  parser.add_argument("--out", required=True, help="PNG path to write.")
  parser.add_argument("--count", type=int, default=8)
  parser.add_argument("--split", choices=("test", "train"), default="test")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--seed", type=int, default=0)
  arguments = parser.parse_args()
  config, model, splits = training.restore_run(arguments.model_dir, arguments.data_dir)
  if config.method != "acn":
    raise SystemExit(f"{arguments.model_dir} is a method={config.method} run: only an "
                     "ACN run has a generator to draw.")
  images, labels = _first_examples(getattr(splits, arguments.split), arguments.count)
  examples = visualize.divergent_examples(model, images, labels, seed=arguments.seed)
  draw(examples, labels, arguments.out)
  print(f"Wrote {arguments.out}")


if __name__ == "__main__":
  main()
