"""A run directory written by an earlier acn-tf still evaluates and exports as trained.

tests/data/run_written_2026_12_01 is a real run directory (config.json, final weights,
results.json, history.csv) written by the code before this repository's folders and
published recipe (commit 5ce6ccb): `python run.py --experiment=digits
--method=independent --override=epochs=1 --override=architectures=resnet8
--noexport`. Its networks padded strided convolutions TensorFlow's way and its
config.json has no `downsampling_padding` or `weight_decay_mode`; restored with
today's symmetric padding the same weights score 0.13 instead of 0.35.
"""

import json
import os
import shutil

import pytest

from acn_tf.config import saved_runs, schema as config_lib
from acn_tf.run import run_dir
from conftest import ROOT, read_json

OLD_RUN = os.path.join(ROOT, "tests", "data", "run_written_2026_12_01")


@pytest.fixture
def old_run(tmp_path):
  return str(shutil.copytree(OLD_RUN, tmp_path / "old_run"))


def test_an_old_config_restores_the_code_that_wrote_it(old_run):
  stored = read_json(os.path.join(old_run, "config.json"))
  assert "downsampling_padding" not in stored and "weight_decay_mode" not in stored
  config = run_dir.run_config(old_run)
  assert config.downsampling_padding == "same"
  assert config.optimization.weight_decay_mode == "decoupled"
  # A config that names them keeps its own values.
  named = saved_runs.config_from_dict({**stored, "downsampling_padding": "symmetric",
                                       "weight_decay_mode": "coupled"})
  assert named.downsampling_padding == "symmetric"
  assert named.optimization.weight_decay_mode == "coupled"


def test_an_old_run_evaluates_to_its_own_results_and_exports(old_run, run_py_here):
  trained = read_json(os.path.join(old_run, "results.json"))
  evaluated = run_py_here("--mode=eval", f"--model_dir={old_run}", "--verbose=0")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  again = read_json(os.path.join(old_run, "results.json"))
  assert again["ensemble_top1"] == pytest.approx(trained["ensemble_top1"], abs=1e-6)
  assert again["classifiers"][0]["top1"] == pytest.approx(trained["classifiers"][0]["top1"],
                                                          abs=1e-6)
  exported = run_py_here("--mode=export", f"--model_dir={old_run}", "--verbose=0")
  assert exported.returncode == 0, exported.stderr[-3000:]
  for name in ("classifier_0", "ensemble"):
    assert os.path.exists(os.path.join(old_run, "export", name, "saved_model.pb"))



def test_a_config_with_a_removed_setting_restores_at_the_kept_behaviour(old_run):
  """A config.json written while the library had alternatives that lost (every
  committed run of experiments/results has them at the kept values) restores;
  another value of one is refused with the commit that ran it."""
  stored = read_json(os.path.join(old_run, "config.json"))
  kept = {"adv_kd_target": "divergent", "adv_normalization": "batch",
          "ras_mask_source": "update", "ras_objective": "divergence",
          "divergent_signs": "found", "divergent_sizes": "found"}
  assert saved_runs.config_from_dict({**stored, **kept}) == run_dir.run_config(old_run)
  for removed in ({"adv_kd_target": "real"}, {"adv_normalization": "kept"},
                  {"ras_mask_source": "search"}, {"divergent_signs": "random"},
                  {"divergence": "logit_l1"}):
    key, value = next(iter(removed.items()))
    with pytest.raises(config_lib.ConfigError,
                       match=f"{key}='{value}'.*removed.*git checkout b6bd82a"):
      saved_runs.config_from_dict({**stored, **removed})
  # A run that still names them is read as today's fields when compared.
  config = run_dir.run_config(old_run)
  assert (saved_runs.config_differences({**stored, **kept}, config)
          == saved_runs.config_differences(stored, config))
  assert saved_runs.differing_fields({**stored, "adv_kd_target": "real"}, config) == sorted(
      [*saved_runs.differing_fields(stored, config), "adv_kd_target"])


def test_a_run_directory_with_a_removed_setting_names_the_commit(old_run):
  path = os.path.join(old_run, "config.json")
  stored = read_json(path)
  with open(path, "w", encoding="utf-8") as handle:
    json.dump({**stored, "ras_objective": "generator_loss"}, handle)
  with pytest.raises(run_dir.ModelDirError,
                     match="ras_objective='generator_loss'.*git checkout b6bd82a"):
    run_dir.run_config(old_run)
