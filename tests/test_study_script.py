"""experiments/study.py: each variant's run.py command, without training anything."""

import json
import os
import subprocess
import sys

import pytest

from acn_tf.config import command_line, registry, saved_runs
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import fashion_mnist_study  # noqa: E402
import study  # noqa: E402


def _commands(monkeypatch, tmp_path, experiment, names, settings=()):
  """The run.py arguments run_study would start, one list per run."""
  started = []
  monkeypatch.setattr(subprocess, "run",
                      lambda command, check: started.append(command[2:]))
  study.run_study(experiment, str(tmp_path), study.VARIANTS, names, [0], settings)
  return started


def _epochs(command):
  """The last epochs override of a command: the one run.py applies."""
  return [argument for argument in command if argument.startswith("--override=epochs=")][-1]


def test_compute_matched_dml_stretches_the_experiments_schedule(monkeypatch, tmp_path):
  """Cosine (fashion_mnist_small): the epochs; step decay (cifar100): the epochs and
  the epochs of each drop, so the rate falls at the same fractions of training."""
  factor = study.ACN_COST_IN_DML_STEPS
  (cosine,) = _commands(monkeypatch, tmp_path, "fashion_mnist_small", ["dml_compute_matched"])
  assert registry.get_experiment("fashion_mnist_small").optimization.lr_schedule == "cosine"
  assert "--method=dml" in cosine and _epochs(cosine) == f"--override=epochs={round(factor * 40)}"
  assert not any(argument.startswith("--override=lr_decay_epochs") for argument in cosine)
  (step,) = _commands(monkeypatch, tmp_path / "c", "cifar100", ["dml_compute_matched"])
  optimization = registry.get_experiment("cifar100").optimization
  assert (optimization.epochs, optimization.lr_decay_epochs) == (300, (150, 225))
  assert _epochs(step) == f"--override=epochs={round(factor * 300)}"
  assert (f"--override=lr_decay_epochs={round(factor * 150)},{round(factor * 225)}"
          in step)


def test_the_compute_factor_of_another_machine_is_a_flag(monkeypatch, tmp_path):
  """--acn_cost_in_dml_steps=2.5 on cifar100: 750 epochs, the drops at 375 and 562;
  the other variants keep their flags."""
  started = []
  monkeypatch.setattr(subprocess, "run", lambda command, check: started.append(command))
  monkeypatch.setattr(sys, "argv", [
      "study.py", "--experiment=cifar100", f"--out={tmp_path}", "--seeds=0",
      "--variants=dml,dml_compute_matched", "--acn_cost_in_dml_steps=2.5"])
  study.main()
  dml, matched = started
  assert not any("--override=epochs" in argument for argument in dml)
  assert matched[-2:] == ["--override=epochs=750", "--override=lr_decay_epochs=375,562"]
  assert study.VARIANTS["dml_compute_matched"][1].factor == study.ACN_COST_IN_DML_STEPS


def test_a_fractional_factor_rounds_to_whole_epochs():
  optimization = registry.get_experiment("cifar100").optimization
  assert study.EpochsTimes(2.5).flags(optimization) == [
      "--override=epochs=750", "--override=lr_decay_epochs=375,562"]


def test_the_multiple_is_of_the_epochs_the_studys_settings_give(monkeypatch, tmp_path):
  (command,) = _commands(monkeypatch, tmp_path, "fashion_mnist", ["dml_compute_matched"],
                         fashion_mnist_study.CPU_SETTINGS)
  assert "--override=epochs=6" in command
  assert _epochs(command) == f"--override=epochs={round(study.ACN_COST_IN_DML_STEPS * 6)}"


def test_dml_noise_and_finished_runs(monkeypatch, tmp_path):
  (tmp_path / "dml-seed0").mkdir()
  (tmp_path / "dml-seed0" / "results.json").write_text("{}")  # Finished: skipped.
  commands = _commands(monkeypatch, tmp_path, "fashion_mnist_small", ["dml", "dml_noise"])
  assert len(commands) == 1 and commands[0][-1] == "--method=dml_noise"
  assert f"--model_dir={tmp_path / 'dml_noise-seed0'}" in commands[0]
  assert "dml_noise" in fashion_mnist_study.VARIANTS


def test_a_malformed_setting_is_named(monkeypatch, tmp_path):
  with pytest.raises(SystemExit, match="--override=epochs is not of the form FIELD=VALUE"):
    _commands(monkeypatch, tmp_path, "digits", ["dml_compute_matched"], ["epochs"])


def _resolved(experiment, flags, seed):
  """resolve_config of a variant's run.py flags, as run.py resolves them."""
  arguments = {"method": None, "preset": None, "overrides": [f"seed={seed}"]}
  for flag in flags:
    key, _, value = flag.partition("=")
    if key == "--override":
      arguments["overrides"].append(value)
    else:
      assert key in ("--method", "--preset"), flag
      arguments[key[2:]] = value
  return command_line.resolve_config(experiment, arguments["method"], None,
                                     arguments["overrides"], arguments["preset"])


# The folders of test-split runs that README and RESULTS.md tabulate, kept by
# `study.py --keep` with no study-wide override.
TABULATED_RESULTS = ("main", "rivals", "frontier", "frontier_augmented")


@pytest.mark.parametrize("folder", TABULATED_RESULTS)
def test_the_committed_runs_are_what_their_variants_give_today(folder):
  """Each kept test run's config.json must be what `study.py --variants=VARIANT`
  trains for its experiment with today's code, field for field, so that the tables'
  rows (`acn` among them: the registered ACN) are the settings their names say."""
  root = os.path.join(ROOT, "experiments", "results", folder)
  if not os.path.isdir(root):
    pytest.skip(f"no run kept in {folder} yet")
  runs = sorted(name for name in os.listdir(root) if "-seed" in name)
  if folder == "main":
    assert {run.rsplit("-seed", 1)[0] for run in runs} >= {
        "dml", "acn", "acn_spec", "dml_noise"}
  mismatches = {}
  for run in runs:
    variant, seed = run.rsplit("-seed", 1)
    with open(os.path.join(root, run, "config.json"), encoding="utf-8") as handle:
      saved = json.load(handle)
    experiment = saved["name"]
    config = _resolved(experiment, study.variant_flags(study.VARIANTS[variant], experiment),
                       int(seed))
    differences = saved_runs.config_differences(saved, config)
    if differences:
      mismatches[run] = differences
  assert not mismatches


def test_the_live_generator_variants_are_its_preset_and_the_wide_ball_its_reach():
  live = _resolved("fashion_mnist_small", study.VARIANTS["acn_live_generator"], 0)
  wide = _resolved("fashion_mnist_small", study.VARIANTS["acn_live_generator_wide_ball"], 0)
  assert live == command_line.resolve_config("fashion_mnist_small", "acn", None, ["seed=0"],
                                             "live_generator")
  assert live.get("divergence") == "total_variation"
  assert wide == live.replace(ras_epsilon=live.get("wrc_alpha"))
  assert wide.get("ras_epsilon") == 0.122 > live.get("ras_epsilon")


def test_acn_is_the_registered_acn_and_acn_spec_the_spec_weights():
  acn = _resolved("fashion_mnist_small", study.VARIANTS["acn"], 0)
  spec = _resolved("fashion_mnist_small", study.VARIANTS["acn_spec"], 0)
  assert acn == command_line.resolve_config("fashion_mnist_small", "acn", None, ["seed=0"])
  assert (acn.distillation.adv_weight, spec.distillation.adv_weight) == (0.5, 1.0)
  assert spec == acn.replace(adv_weight=1.0)


def test_kept_runs_are_skipped_and_finished_runs_kept(monkeypatch, tmp_path):
  """--keep: a run kept there is not started again; a run that finishes here is
  copied there (results, history, config), and so is one finished before."""
  keep, out = tmp_path / "kept", tmp_path / "out"
  (keep / "dml-seed0").mkdir(parents=True)
  (keep / "dml-seed0" / "results.json").write_text('{"kept": true}')
  (out / "independent-seed0").mkdir(parents=True)
  for name in study.KEPT_FILES:
    (out / "independent-seed0" / name).write_text(f"independent {name}")
  started = []

  def fake_run(command, check):
    model_dir = next(argument.split("=", 1)[1] for argument in command
                     if argument.startswith("--model_dir="))
    os.makedirs(model_dir)
    for name in study.KEPT_FILES:
      with open(os.path.join(model_dir, name), "w") as f:
        f.write(f"trained {name}")
    started.append(model_dir)

  monkeypatch.setattr(subprocess, "run", fake_run)
  study.run_study("fashion_mnist_small", str(out), study.VARIANTS,
                  ["independent", "dml", "dml_noise"], [0], keep=str(keep))
  assert started == [str(out / "dml_noise-seed0")]
  assert (keep / "dml-seed0" / "results.json").read_text() == '{"kept": true}'
  for name in study.KEPT_FILES:
    assert (keep / "dml_noise-seed0" / name).read_text() == f"trained {name}"
    assert (keep / "independent-seed0" / name).read_text() == f"independent {name}"


def test_length_variants_stretch_dml_and_acn_by_their_factors(monkeypatch, tmp_path):
  dml_16, acn_4, dml_64, acn_16 = _commands(
      monkeypatch, tmp_path, "fashion_mnist_small",
      ["dml_epochs_16x", "acn_epochs_4x", "dml_epochs_64x", "acn_epochs_16x"])
  assert "--method=dml" in dml_16 and _epochs(dml_16) == "--override=epochs=640"
  assert "--method=acn" in acn_4 and _epochs(acn_4) == "--override=epochs=160"
  assert "--method=dml" in dml_64 and _epochs(dml_64) == "--override=epochs=2560"
  assert "--method=acn" in acn_16 and _epochs(acn_16) == "--override=epochs=640"


def test_dml_at_the_branched_rivals_compute_has_0_65_of_the_epochs(monkeypatch, tmp_path):
  (dml,) = _commands(monkeypatch, tmp_path, "fashion_mnist_small", ["dml_epochs_0_65x"])
  assert "--method=dml" in dml and _epochs(dml) == "--override=epochs=26"
