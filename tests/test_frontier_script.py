"""experiments/frontier.py: a run's compute from its steps and the benchmarked step
costs, checked by hand; the points and their paired differences."""

import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import frontier  # noqa: E402

BENCHMARK = {"dml": 200.0, "independent": 250.0, "dml_noise": 100.0, "acn": 50.0,
             "acn_no_generator": 80.0}


def test_families_fold_lengths_into_one_method():
  assert frontier.family_of("dml_epochs_16x") == "dml"
  assert frontier.family_of("dml_epochs_0_65x") == "dml"
  assert frontier.family_of("dml_compute_matched") == "dml"
  assert frontier.family_of("acn_epochs_4x") == "acn"
  assert frontier.family_of("acn_no_generator_epochs_4x") == "acn_no_generator"
  assert frontier.family_of("acn_no_generator") == "acn_no_generator"
  assert frontier.family_of("acn_live_generator_epochs_4x") == "acn_live_generator"
  # Every family the study's variants fold into has a label and a benchmarked step.
  assert set(frontier.LABELS) == set(frontier._STEP_COST_KEYS)


def test_a_runs_compute_counts_the_warmup_as_dml_steps():
  """ACN, 160 epochs of 15 steps, 5 warm-up epochs: 75 DML steps, then 2325 steps
  at 4 DML steps each (200 / 50 images/s), in units of a 40-epoch DML run (600 DML
  steps)."""
  costs = frontier.step_costs_in_dml_steps(BENCHMARK)
  assert costs["acn"] == 4.0 and costs["independent"] == 0.8
  results = {"train_steps": 2400, "epochs": 160}
  cost = frontier.run_cost(results, {"method": "acn", "adv_warmup_epochs": 5}, costs,
                           "acn", 40)
  assert cost == pytest.approx((75 + 2325 * 4.0) / 600)
  dml = frontier.run_cost({"train_steps": 9600, "epochs": 640},
                          {"method": "dml", "adv_warmup_epochs": 5}, costs, "dml", 40)
  assert dml == pytest.approx(16.0)  # DML has no warm-up: every step is a DML step.
  assert frontier.run_cost(results, {"method": "acn"}, {"dml": 1.0}, "acn", 40) is None
  # The unit is the registered length of the run's experiment.
  assert frontier.registered_epochs("fashion_mnist_small") == 40
  assert frontier.registered_epochs("cifar100") == 300


def _write_run(root, variant, seed, epochs, method, top1s, steps_per_epoch=15,
               experiment="fashion_mnist_small"):
  run = root / f"{variant}-seed{seed}"
  run.mkdir(parents=True)
  results = {"experiment": experiment, "seed": seed, "epochs": epochs,
             "train_steps": epochs * steps_per_epoch,
             "classifiers": [{"top1": top1} for top1 in top1s],
             "ensemble_top1": max(top1s)}
  (run / "results.json").write_text(json.dumps(results))
  (run / "config.json").write_text(json.dumps({"method": method, "adv_warmup_epochs": 5}))


def test_points_pair_with_dml_of_the_same_length_and_the_nearest_compute(tmp_path):
  for seed, shift in enumerate((0.0, 0.01, 0.03)):
    _write_run(tmp_path, "dml", seed, 40, "dml", [0.80 + shift, 0.81 + shift])
    _write_run(tmp_path, "dml_compute_matched", seed, 160, "dml",
               [0.82 + shift, 0.83 + shift])
    _write_run(tmp_path, "acn", seed, 40, "acn", [0.80 + shift + 0.002 * seed, 0.81 + shift])
  points = frontier.collect_points([str(tmp_path)], frontier.step_costs_in_dml_steps(
      BENCHMARK))
  assert [(p.family, p.epochs, len(p.runs)) for p in points] == [
      ("dml", 40, 3), ("dml", 160, 3), ("acn", 40, 3)]
  acn_cost = (75 + 525 * 4.0) / 600
  assert points[2].costs == pytest.approx([acn_cost] * 3)
  assert frontier.nearest_dml(points, acn_cost).epochs == 160  # 3.6 is nearer 4 than 1.
  row = frontier.table_rows(points)[2]
  # Ensemble = the better classifier: ACN − DML 40 per seed is 0, 0, 0 (the second
  # classifier is unchanged); the mean classifier gains 0, 0.001, 0.002: +0.10 points.
  assert row[6].startswith("+0.00") and row[6].endswith("vs DML 40")
  assert row[7].startswith("+0.10") and "3 seeds" in row[7]
  assert row[8].startswith("-2.00") and row[8].endswith("vs DML 160")


def test_each_regime_is_compared_with_its_own_dml(tmp_path):
  """Two experiments' runs in two folders: each point is paired with the DML of
  its own regime, never the other's, and each regime's unit is its own DML run."""
  small, augmented = tmp_path / "small", tmp_path / "augmented"
  for seed in range(2):
    _write_run(small, "dml", seed, 40, "dml", [0.80, 0.80 + 0.01 * seed])
    _write_run(augmented, "dml", seed, 40, "dml", [0.88, 0.88],
               experiment="fashion_mnist_small_augmented", steps_per_epoch=63)
    _write_run(augmented, "acn", seed, 40, "acn", [0.89, 0.89 + 0.01 * seed],
               experiment="fashion_mnist_small_augmented", steps_per_epoch=63)
  points = frontier.collect_points([str(small), str(augmented)],
                                   frontier.step_costs_in_dml_steps(BENCHMARK))
  by_regime = frontier.regimes(points)
  assert list(by_regime) == ["fashion_mnist_small", "fashion_mnist_small_augmented"]
  assert [(p.family, p.costs) for p in by_regime["fashion_mnist_small_augmented"]] == [
      ("dml", [1.0, 1.0]), ("acn", [pytest.approx((5 + 35 * 4.0) / 40)] * 2)]
  acn_row = frontier.table_rows(by_regime["fashion_mnist_small_augmented"])[1]
  # ACN − the augmented DML, by hand: ensemble (the better classifier) +1.0 and
  # +2.0 points on seeds 0 and 1, mean +1.50; mean classifier +1.0 and +1.5, +1.25.
  # Paired with the other regime's DML it would be about +8.
  assert acn_row[6].startswith("+1.50") and acn_row[6].endswith("vs DML 40")
  assert acn_row[7].startswith("+1.25")


def test_the_command_prints_a_table_and_draws_a_row_of_panels_per_regime(tmp_path, capsys,
                                                                           monkeypatch):
  small, augmented = tmp_path / "small", tmp_path / "augmented"
  for seed in range(2):
    _write_run(small, "dml", seed, 40, "dml", [0.80, 0.81])
    _write_run(augmented, "dml", seed, 40, "dml", [0.88, 0.88],
               experiment="fashion_mnist_small_augmented")
  costs = tmp_path / "costs.json"
  costs.write_text(json.dumps(BENCHMARK))
  figure = tmp_path / "frontier.png"
  monkeypatch.setattr(sys, "argv", ["frontier.py", str(small), str(augmented),
                                    f"--step_costs={costs}", f"--figure={figure}"])
  frontier.main()
  printed = capsys.readouterr().out
  assert printed.index("\nfashion_mnist_small\n") < printed.index(
      "\nfashion_mnist_small_augmented\n")
  assert printed.count("| DML | 40 | 2 | 1.00 |") == 2
  import matplotlib.image
  height, width = matplotlib.image.imread(str(figure)).shape[:2]
  # 120 dpi: 12 inches wide, 1.2 + 4.6 inches per regime high.
  assert (width, height) == (12 * 120, round((1.2 + 2 * 4.6) * 120))
