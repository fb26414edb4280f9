"""What an ACN makes of real images: x, x̃0, x̃ and their difference, as arrays.

Shared by the TensorBoard image summary (acn_tf/run/callbacks.py) and the figure
script (experiments/divergent_figure.py), so both show the same computation.
"""

import dataclasses
from typing import List

import numpy as np
import tensorflow as tf



@dataclasses.dataclass(frozen=True)
class DivergentExamples:
  real: np.ndarray        # x, [batch, H, W, C] in [0, 1]
  generated: np.ndarray   # x̃0 = WRC(x, g([x, noise]))
  searched: np.ndarray    # x̃ after the Restricted Adversarial Search
  keep_mask: np.ndarray   # 1 where the ensemble still predicts the label on x̃
  predictions: List[np.ndarray]  # per row (real, generated, searched): [n, batch] classes

  def amplified_difference(self, gain: float = 5.0) -> np.ndarray:
    """0.5 + gain * (x̃ - x), clipped: grey where nothing changed."""
    return np.clip(0.5 + gain * (self.searched - self.real), 0.0, 1.0)


def divergent_examples(model, images, labels, seed: int = 0) -> DivergentExamples:
  """Runs the generator (inference mode) and the search on one batch."""
  images = tf.convert_to_tensor(images, tf.float32)
  labels = tf.convert_to_tensor(labels)
  # Own noise, so that drawing a picture never moves training's random stream.
  noise = np.random.default_rng(seed).normal(
      size=(*images.shape[:-1], model.adversarial.noise_channels)).astype(np.float32)
  examples = model.inference_examples(images, labels, tf.constant(noise))
  predictions = [np.stack([np.argmax(z.numpy(), -1) for z in row])
                 for row in (examples.real_logits, examples.generated_logits,
                             examples.searched_logits)]
  return DivergentExamples(real=images.numpy(), generated=examples.generated.numpy(),
                           searched=examples.searched.numpy(),
                           keep_mask=examples.keep_mask.numpy(), predictions=predictions)


def image_grid(examples: DivergentExamples) -> np.ndarray:
  """One image [4H, batch*W, C]: rows x, x̃0, x̃, amplified x̃ - x."""
  rows = [examples.real, examples.generated, examples.searched,
          examples.amplified_difference()]
  return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
