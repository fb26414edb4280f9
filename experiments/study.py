"""Runs a comparison: methods x variants x seeds of one registered experiment.

  python experiments/study.py --out=runs/small [--experiment=fashion_mnist_small]
      [--variants=independent,dml,acn] [--seeds=0,1,2]

Each run is `python run.py --experiment=EXPERIMENT ...` with the variant's flags,
in OUT/VARIANT-seedS; finished runs (results.json present) are skipped, so the
script can be stopped and started again. With `--keep=DIR` (a folder under
experiments/results/), each finished run's results.json, history.csv and config.json
are copied to DIR/VARIANT-seedS, and a run already kept there is skipped: a study
committed run by run continues on another machine instead of starting over. A variant's flag may be an
`EpochsTimes`, a multiple of the experiment's epochs (e.g. `dml_compute_matched`:
DML given ACN's compute), resolved against the registered experiment and the
study's common overrides (`--acn_cost_in_dml_steps` sets that multiple for another
machine or experiment). Runs are sequential: on a 2-core
machine two trainings at once would distort the per-epoch times. Then
`python experiments/summarize.py OUT` prints the tables and draws the chart.
"""

import argparse
import os
import shutil
import subprocess
import sys
from typing import Dict, List, NamedTuple, Sequence, Union

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acn_tf.config import presets, registry, schema as config_lib  # noqa: E402


class EpochsTimes(NamedTuple):
  """A variant's flags: the experiment's schedule (after the study's common
  overrides) stretched `factor` times, so that it holds for any experiment: the
  epochs and, for a step schedule, the epochs at which the rate drops, each rounded
  to a whole epoch (a cosine schedule stretches with its epochs)."""
  factor: float

  def flags(self, optimization) -> List[str]:
    stretched = [f"--override=epochs={round(self.factor * optimization.epochs)}"]
    if optimization.lr_schedule == "step":
      boundaries = ",".join(str(round(self.factor * epoch))
                            for epoch in optimization.lr_decay_epochs)
      stretched.append(f"--override=lr_decay_epochs={boundaries}")
    return stretched


# A variant's flags: run.py arguments, or an EpochsTimes resolved per experiment.
Flag = Union[str, EpochsTimes]

# ACN's training time in DML's on fashion_mnist_small on this project's 2-core
# machines, rounded to a whole number (measured without validation passes, which
# count against DML the more; experiments/RESULTS.md gives the measurements).
# summarize.py's last column measures it for a study's own machine.
ACN_COST_IN_DML_STEPS = 4

# ACN with Phase A tuned for divergence (the health target), the settings the
# defaults had before they became the spec's (acn_tf/config/presets.py).
DIVERGENCE_SEEKING = ("--method=acn", "--preset=divergence_seeking")

# ACN with a generator that does something: `fashion_mnist_small`'s best-accuracy
# setting among those whose x̃0 leaves the search ball and diverges.
LIVE_GENERATOR = ("--method=acn", "--preset=live_generator")

# ACN as the library's defaults have it, the spec's Phase A at the spec's weights,
# where an experiment gives ACN settings of its own (fashion_mnist_small's
# adv_weight 0.5).
SPEC_ACN = ("--method=acn", "--override=adv_weight=1")

# The methods, the two rivals every ACN result is read against (noise of the
# divergent batch's size, and DML given ACN's compute) and ACN's ablations, as
# every study runs them. `acn` is the experiment's registered ACN (with the
# settings the experiment gives ACN alone), `acn_spec` the spec's weights. In
# RESULTS.md's notebook these names stood for earlier settings; its sections say
# which.
METHODS_AND_ABLATIONS = {
    "independent": ("--method=independent",),
    "dml": ("--method=dml",),
    # DML plus Phase B's divergent-batch terms on x ± input_noise (random signs).
    "dml_noise": ("--method=dml_noise",),
    # DML given the compute of ACN: as many times the epochs as an ACN step costs.
    "dml_compute_matched": ("--method=dml", EpochsTimes(ACN_COST_IN_DML_STEPS)),
    # A smaller factor: the `dml_compute_matched` of an earlier comparison in
    # RESULTS.md.
    "dml_epochs_3x": ("--method=dml", EpochsTimes(3)),
    "acn": ("--method=acn",),
    # KDCL (Guo et al., CVPR 2020): every peer distilled from one MinLogit target.
    "kdcl": ("--method=kdcl",),
    "acn_spec": SPEC_ACN,
    "acn_divergence_seeking": DIVERGENCE_SEEKING,
    "acn_no_wrc": ("--method=acn", "--override=wrc_alpha=0"),
    "acn_no_ras": ("--method=acn", "--override=ras_steps=0",
                   "--override=ras_label_restrict=false"),
    "acn_no_gan": ("--method=acn", "--override=gan_weight=0"),
    # x̃0 = x: the search alone, no generator or discriminator to train.
    "acn_no_generator": ("--method=acn", "--override=use_generator=false"),
    # Training length: DML and ACN with the whole schedule stretched (the 4x DML is
    # `dml_compute_matched`).
    "dml_epochs_16x": ("--method=dml", EpochsTimes(16)),
    # Stage 1's next screen: DML had not stopped improving at 16x (RESULTS.md).
    "dml_epochs_64x": ("--method=dml", EpochsTimes(64)),
    # DML given the compute of the branched rivals (a ONE or CL-ILR step costs about
    # 0.65 of a DML step at fashion_mnist_small's shapes).
    "dml_epochs_0_65x": ("--method=dml", EpochsTimes(0.65)),
    "acn_epochs_4x": ("--method=acn", EpochsTimes(4)),
    # ACN at 640 epochs, set beside DML at 2560 (about the same compute).
    "acn_epochs_16x": ("--method=acn", EpochsTimes(16)),
    "acn_no_generator_epochs_4x": ("--method=acn", "--override=use_generator=false",
                                   EpochsTimes(4)),
    # ACN whose generator moves x̃0 (the preset chosen for accuracy among the search's
    # live-generator settings, experiments/RESULTS.md "The frontier", stage 3).
    "acn_live_generator": LIVE_GENERATOR,
    "acn_live_generator_epochs_4x": (*LIVE_GENERATOR, EpochsTimes(4)),
    # The same with the search's ball as wide as the generator's reach, so that the
    # projection around x does not clip x̃0 back into 8/255 of x: Phase B sees what
    # the generator made.
    "acn_live_generator_wide_ball": (
        *LIVE_GENERATOR,
        f"--override=ras_epsilon={presets.get_preset('live_generator')['wrc_alpha']}"),
    # The field's branched online-distillation rivals (docs/METHOD.md, "Branched
    # rivals"), with as many branches as the experiment has classifiers, so that each
    # is set beside a DML group of the same size: ONE (a gated ensemble teacher) and
    # CL-ILR (the other heads' consensus, the trunk's gradient rescaled).
    "one": ("--method=one",),
    "cl_ilr": ("--method=cl_ilr",),
}

# The ACN settings of `fashion_mnist_small` before they were chosen for the health
# target (experiments/RESULTS.md): the divergence-seeking Phase A with the budget
# 0.1 and the agreement term on x̃. The variants screened against those settings
# name them, so that their commands give what RESULTS.md reports.
PREVIOUS_ACN = (*DIVERGENCE_SEEKING, "--override=wrc_alpha=0.1",
                "--override=ras_epsilon=0.1", "--override=adv_kd_weight=1")

# Not an ablation: the spec's Phase A (JS at Phase B's temperature, generator
# rate 2e-4, equal term weights, search ball 8/255) with the previous settings'
# WRC and agreement term.
SPEC_PHASE_A = (*PREVIOUS_ACN, "--override=divergence=js",
                "--override=divergence_temperature=4", "--override=divergence_weight=1",
                "--override=keep_label_weight=1",
                "--override=generator_learning_rate=0.0002",
                f"--override=ras_epsilon={8 / 255}")

# The study of experiments/RESULTS.md on `fashion_mnist_small`: the methods and
# ablations, then Phase A options for comparison.
VARIANTS = {
    **METHODS_AND_ABLATIONS,
    # Not an ablation: no keep-the-label term in the generator's loss (only the
    # label restriction keeps labels): more divergence on validation, less accuracy.
    "acn_keep_label_0": (*PREVIOUS_ACN, "--override=keep_label_weight=0"),
    "acn_spec_phase_a": SPEC_PHASE_A,
    # The previous settings themselves: the budget 0.1 and agreement asked on x̃.
    "acn_previous": PREVIOUS_ACN,
    # Phase B options screened on the validation split (RESULTS.md, "What Phase B
    # does with x̃"): each lowers what the divergent batch asks of the classifiers.
    "acn_adv_ce_0": (*PREVIOUS_ACN, "--override=adv_ce_weight=0"),
    "acn_adv_weight_0.5": (*PREVIOUS_ACN, "--override=adv_weight=0.5"),
    "acn_warmup_20": (*PREVIOUS_ACN, "--override=adv_warmup_epochs=20"),
    "acn_ball_0.05": (*PREVIOUS_ACN, "--override=ras_epsilon=0.05",
                      "--override=wrc_alpha=0.05"),
    # x̃ with its label only, no agreement asked on it (adv_kd_weight=0).
    "acn_adv_kd_0": (*PREVIOUS_ACN, "--override=adv_kd_weight=0"),
    # Phase A options for the health target (Div(x̃0) / Div(x) >= 3 at the end):
    # two generator updates per step, with and without the keep-the-label term.
    "acn_generator_updates_2": (*PREVIOUS_ACN, "--override=generator_updates=2"),
    "acn_keep_label_0_generator_updates_2": (*PREVIOUS_ACN, "--override=generator_updates=2",
                                             "--override=keep_label_weight=0"),
    # A larger budget for the generator and the search (WRC's alpha = the ball's epsilon).
    "acn_budget_0.2": (*PREVIOUS_ACN, "--override=wrc_alpha=0.2",
                       "--override=ras_epsilon=0.2"),
    "acn_budget_0.2_adv_kd_0": (*DIVERGENCE_SEEKING, "--override=wrc_alpha=0.2",
                                "--override=ras_epsilon=0.2", "--override=adv_kd_weight=0"),
    # How much of the agreement term on x̃ the health target leaves room for: a
    # budget between 0.1 and 0.2 with the whole term, and 0.2 with a lighter term.
    "acn_budget_0.15": (*PREVIOUS_ACN, "--override=wrc_alpha=0.15",
                        "--override=ras_epsilon=0.15"),
    "acn_budget_0.2_adv_kd_0.1": (*DIVERGENCE_SEEKING, "--override=wrc_alpha=0.2",
                                  "--override=ras_epsilon=0.2", "--override=adv_kd_weight=0.1"),
    "acn_budget_0.2_adv_kd_0.3": (*DIVERGENCE_SEEKING, "--override=wrc_alpha=0.2",
                                  "--override=ras_epsilon=0.2", "--override=adv_kd_weight=0.3"),
    # The chosen setting without L_g's label term: the generator update then
    # back-propagates through the classifiers once instead of twice
    # (experiments/BENCHMARKS.md).
    "acn_budget_0.2_adv_kd_0_keep_label_0": (
        *DIVERGENCE_SEEKING, "--override=wrc_alpha=0.2", "--override=ras_epsilon=0.2",
        "--override=adv_kd_weight=0", "--override=keep_label_weight=0"),
    # The spec's Phase A with a stronger search inside its 8/255 ball: three steps
    # of 2/255, or one of 4/255.
    "acn_spec_phase_a_k3": (*SPEC_PHASE_A, "--override=ras_steps=3"),
    "acn_spec_phase_a_step_4": (*SPEC_PHASE_A, f"--override=ras_step_size={4 / 255}"),
    # The spec's ACN asking less of the classifiers on x̃: half the divergent
    # batch's weight (the setting fashion_mnist_small gives ACN), half the search
    # ball (and step), or Phase A from epoch 20 of 40.
    "acn_adv_weight_half": (*SPEC_ACN, "--override=adv_weight=0.5"),
    "acn_ball_4": (*SPEC_ACN, f"--override=ras_epsilon={4 / 255}",
                   f"--override=ras_step_size={1 / 255}"),
    "acn_phase_a_from_epoch_20": (*SPEC_ACN, "--override=adv_warmup_epochs=20"),
    # The validation screen of dml_noise's noise size.
    **{f"dml_noise_{size}": ("--method=dml_noise", f"--override=input_noise={size}")
       for size in ("0.05", "0.1", "0.15", "0.2")},
}


def with_acn_cost(variants: Dict[str, Sequence[Flag]], factor: float
                  ) -> Dict[str, Sequence[Flag]]:
  """`variants` with `dml_compute_matched` given `factor` times the epochs: ACN's
  training time in DML's where the study runs (another machine, another
  experiment); summarize.py's last column, acn's row against dml, measures it."""
  return {**variants, "dml_compute_matched": ("--method=dml", EpochsTimes(factor))}


def experiment_optimization(experiment: str, settings: Sequence[str] = ()):
  """The optimization section (epochs, schedule) of the registered `experiment` with
  the FIELD=VALUE `settings` applied."""
  config = registry.get_experiment(experiment)
  malformed = [setting for setting in settings if "=" not in setting]
  if malformed:
    raise SystemExit(f"--override={malformed[0]} is not of the form FIELD=VALUE.")
  overrides = dict(setting.split("=", 1) for setting in settings)
  return config_lib.apply_overrides(config, overrides).optimization


def variant_flags(flags: Sequence[Flag], experiment: str,
                  settings: Sequence[str] = ()) -> List[str]:
  """A variant's run.py arguments for `experiment`, each EpochsTimes resolved."""
  resolved = []
  for flag in flags:
    if isinstance(flag, EpochsTimes):
      resolved += flag.flags(experiment_optimization(experiment, settings))
    else:
      resolved.append(flag)
  return resolved


# What a kept run is: enough to summarize it and to check its config.
KEPT_FILES = ("results.json", "history.csv", "config.json")


def keep_run(model_dir: str, keep_dir: str) -> None:
  """Copies a finished run's KEPT_FILES into `keep_dir`, results.json last, so that
  a copy cut short is not taken for a kept run."""
  os.makedirs(keep_dir, exist_ok=True)
  for name in sorted(KEPT_FILES, key=lambda name: name == "results.json"):
    shutil.copyfile(os.path.join(model_dir, name), os.path.join(keep_dir, name))


def run_study(experiment: str, out: str, variants: Dict[str, Sequence[Flag]],
              names: Sequence[str], seeds: Sequence[int], settings: Sequence[str] = (),
              data_dir: str = None, keep: str = None) -> None:
  """Trains every (variant, seed) not finished yet: seeds outer, so that an
  interrupted study has whole seeds of every variant. `settings` are overrides
  common to all runs, placed before each variant's own flags. With `keep`, a run
  kept there counts as finished and every run finished here is kept there."""
  unknown = [name for name in names if name not in variants]
  if unknown:
    raise SystemExit(f"Unknown variants {', '.join(unknown)}; known: {', '.join(variants)}.")
  flags = {name: variant_flags(variants[name], experiment, settings) for name in names}
  for seed in seeds:
    for name in names:
      run_name = f"{name}-seed{seed}"
      model_dir = os.path.join(out, run_name)
      if keep and os.path.exists(os.path.join(keep, run_name, "results.json")):
        continue
      if os.path.exists(os.path.join(model_dir, "results.json")):
        if keep:
          keep_run(model_dir, os.path.join(keep, run_name))
        continue
      command = [sys.executable, os.path.join(ROOT, "run.py"),
                 f"--experiment={experiment}", f"--model_dir={model_dir}", "--verbose=0",
                 "--noexport", f"--override=seed={seed}",
                 *[f"--override={setting}" for setting in settings], *flags[name]]
      if data_dir:
        command.append(f"--data_dir={data_dir}")
      print(" ".join(command[1:]), flush=True)
      subprocess.run(command, check=True)
      if keep:
        keep_run(model_dir, os.path.join(keep, run_name))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--experiment", default="fashion_mnist_small")
  parser.add_argument("--out", default="runs/fashion_mnist_small")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--override", action="append", default=[],
                      help="FIELD=VALUE for every run, before the variant's own flags")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--keep", default=None,
                      help="copy each finished run's results, history and config to "
                      "KEEP/VARIANT-seedS and skip runs already there")
  parser.add_argument("--acn_cost_in_dml_steps", type=float, default=ACN_COST_IN_DML_STEPS,
                      help="dml_compute_matched's multiple of the epochs: ACN's training "
                      "time in DML's on the machine and experiment of the study")
  arguments = parser.parse_args()
  variants = with_acn_cost(VARIANTS, arguments.acn_cost_in_dml_steps)
  run_study(arguments.experiment, arguments.out, variants, arguments.variants.split(","),
            [int(s) for s in arguments.seeds.split(",")], arguments.override,
            arguments.data_dir, arguments.keep)


if __name__ == "__main__":
  main()
