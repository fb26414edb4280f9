"""Phase A against frozen classifiers: can the generator make divergent examples?

  python experiments/phase_a_probe.py --model_dir=RUN --steps=300 \\
      --variant=spec: --variant=tv:divergence=total_variation [--out=probe.json]

RUN is a finished run (any method) trained with validation_fraction > 0. Its
classifiers are loaded and never updated; for each variant (NAME:FIELD=VALUE,...
overrides of RUN's config, method set to acn) a fresh generator and
discriminator play Phase A (the model's own `adversarial_phase`: generator
update(s), discriminator update(s), search) on RUN's training batches. The
health figures (acn_tf/method/health.py) are measured on RUN's validation images, never
the test split, before and every `--report_every` steps; the per-example
gradient norm of each generator-loss term at x̃0 = x comes first. Settings
chosen with this script are chosen on validation data.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from acn_tf import platform  # noqa: E402

platform.prefer_onednn()  # Before TensorFlow loads, as run.py does.

from acn_tf.config import command_line, schema as config_lib  # noqa: E402
from acn_tf.method import health, losses  # noqa: E402
from acn_tf.run import training  # noqa: E402

import tensorflow as tf  # noqa: E402

PROBE_EXAMPLES = 1024


def gradient_norms(model, images, labels):
  """Mean per-example L2 norm of d(term)/d(x̃0) at x̃0 = x, for each L_g term."""
  images = tf.convert_to_tensor(images, tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(images)
    logits = [c(images, training=False) for c in model.classifiers]
    terms = {"js": losses.reported_divergence(logits),
             "total_variation": losses.divergence(logits, "total_variation"),
             "label_ce": losses.ensemble_cross_entropy(logits, labels)}
    if model.discriminator is not None:
      terms["gan"] = losses.generator_adversarial_loss(
          model.discriminator(images, training=False))
    totals = {name: tf.reduce_sum(value) for name, value in terms.items()}
  norms = {}
  for name, total in totals.items():
    gradient = tape.gradient(total, images)
    norms[name] = {"value": float(tf.reduce_mean(terms[name])),
                   "gradient_norm": float(tf.reduce_mean(
                       tf.norm(tf.reshape(gradient, [tf.shape(gradient)[0], -1]), axis=1)))}
  return norms


def probe_variant(run_config, run_model, splits, overrides, steps, report_every):
  config = config_lib.apply_overrides(run_config, {"method": "acn", **overrides}).validate()
  model, _ = training.build_for_splits(config, splits, tf.distribute.get_strategy())
  for mine, trained in zip(model.classifiers, run_model.classifiers):
    mine.set_weights(trained.get_weights())
  train_data, held_out, _ = training.make_pipelines(config, splits)  # An endless stream.
  batches = list(held_out.unbatch().take(PROBE_EXAMPLES).batch(256).as_numpy_iterator())
  meter = health.HealthMeter(model, batches, seed=config.seed)
  phase_a = tf.function(lambda x, y: model.adversarial_phase(x, y)[0])
  trajectory = [{"step": 0, **meter.measure()}]
  for step, (images, labels) in enumerate(train_data.take(steps), start=1):
    phase_a(images, labels)
    if step % report_every == 0 or step == steps:
      trajectory.append({"step": step, **meter.measure()})
  return {"overrides": overrides,
          "gradients_at_start": gradient_norms(model, *batches[0]),
          "trajectory": trajectory}


def parse_variant(text):
  name, _, assignments = text.partition(":")
  return name, command_line.parse_override_strings(
      [item for item in assignments.split(",") if item])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--variant", action="append", required=True,
                      help="NAME:FIELD=VALUE,FIELD=VALUE (no overrides: NAME:)")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--report_every", type=int, default=100)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--out", default=None, help="JSON file for every figure")
  arguments = parser.parse_args()
  variants = dict(parse_variant(text) for text in arguments.variant)
  run_config, run_model, splits = training.restore_run(arguments.model_dir,
                                                       arguments.data_dir)
  if splits.validation is None:
    parser.error(f"{arguments.model_dir} was trained without a validation split; the "
                 "probe measures on validation images only. Train the run with "
                 "--override=validation_fraction=0.1.")
  results = {}
  print(f"{'variant':28s} {'step':>5s} {'Div(x)':>8s} {'x̃0/x':>6s} {'x̃/x':>6s} "
        f"{'kept x̃0':>8s} {'kept x̃':>7s} {'|x̃0-x|∞':>8s} {'d real':>6s} {'d fake':>6s}")
  for name, overrides in variants.items():
    result = probe_variant(run_config, run_model, splits, overrides, arguments.steps,
                           arguments.report_every)
    results[name] = result
    for row in result["trajectory"]:
      d_real, d_fake = (row["discriminator_real_accuracy"],
                        row["discriminator_fake_accuracy"])
      print(f"{name:28s} {row['step']:5d} {row['divergence_real']:8.4f} "
            f"{row['divergence_ratio_generated']:6.2f} {row['divergence_ratio_searched']:6.2f} "
            f"{row['kept_generated']:8.3f} {row['kept_searched']:7.3f} "
            f"{row['residual_linf']:8.4f} "
            f"{'-' if d_real is None else f'{d_real:.2f}':>6s} "
            f"{'-' if d_fake is None else f'{d_fake:.2f}':>6s}", flush=True)
    gradients = ", ".join(f"{term} {v['value']:.4f} (|grad| {v['gradient_norm']:.3f})"
                          for term, v in result["gradients_at_start"].items())
    print(f"{'':28s} terms at x̃0 = x: {gradients}", flush=True)
  if arguments.out:
    with open(arguments.out, "w") as handle:
      json.dump(results, handle, indent=2)


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
