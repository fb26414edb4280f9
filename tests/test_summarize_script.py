"""experiments/summarize.py and experiments/summary/: the tables RESULTS.md quotes, from
run directories."""

import os
import sys

import numpy as np
import pytest

from conftest import ROOT, read_json, write_json

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import summarize  # noqa: E402
from summary import comparison, plots, runs, tables  # noqa: E402


def _run(root, name, ensemble, divergence_search=None, kept=None, history=None):
  """A finished run; `history` ({column: values per epoch}) replaces its default
  two-epoch history.csv."""
  model_dir = root / name
  model_dir.mkdir()
  results = {"classifiers": [{"top1": ensemble - 0.01}, {"top1": ensemble - 0.03}],
             "ensemble_top1": ensemble, "mean_divergence": 0.004,
             "seconds_per_epoch": 10.0}
  write_json(model_dir / "results.json", results)
  columns = ["epoch", "ensemble_top1", "val_ensemble_top1"]
  rows = [["0", "0.5", "NA"], ["1", str(ensemble), "NA"]]
  if divergence_search is not None:
    columns += ["divergence_x0", "divergence_search", "kept_fraction"]
    rows = [rows[0] + ["0", "0", "0"], rows[1] + ["0.003", str(divergence_search), str(kept)]]
  if history is not None:
    columns = ["epoch", *history]
    rows = [[str(epoch)] + [str(values[epoch]) for values in history.values()]
            for epoch in range(len(next(iter(history.values()))))]
  (model_dir / "history.csv").write_text(
      "\n".join(",".join(row) for row in [columns, *rows]) + "\n")


def test_tables_average_over_seeds_per_variant(tmp_path):
  _run(tmp_path, "dml-seed0", 0.70)
  _run(tmp_path, "dml-seed1", 0.74)
  _run(tmp_path, "acn-seed0", 0.72, divergence_search=0.01, kept=0.8)
  _run(tmp_path, "acn-seed1", 0.76, divergence_search=0.02, kept=0.6)
  rows = tables.summary_rows(runs.load_runs(str(tmp_path)))
  assert [row[0] for row in rows] == ["dml", "acn"]
  # Ensemble top-1 of acn: mean 74.00, sample std of 72 and 76 = 2.83.
  assert rows[1][4] == "74.00 ± 2.83"
  phase_a = tables.phase_a_rows(str(tmp_path))
  # Only ACN runs log Phase A; the last epoch's values, averaged over the two seeds.
  assert phase_a == [["acn", "2", "0.0030", "0.0150", "0.7000"]]
  assert runs.last_epoch(str(tmp_path / "dml-seed0")) == pytest.approx(
      {"epoch": 1.0, "ensemble_top1": 0.70})


def test_unfinished_runs_are_left_out(tmp_path):
  _run(tmp_path, "acn-seed0", 0.72, divergence_search=0.01, kept=0.8)
  _run(tmp_path, "acn-seed1", 0.76, divergence_search=0.02, kept=0.6)
  (tmp_path / "acn-seed1" / "results.json").unlink()  # Still training.
  assert tables.phase_a_rows(str(tmp_path)) == [["acn", "1", "0.0030", "0.0100", "0.8000"]]
  assert tables.summary_rows(runs.load_runs(str(tmp_path)))[0][1] == "1"


def test_comparison_to_the_baseline_uses_the_pooled_seed_spread(tmp_path):
  for seed, score in enumerate((0.70, 0.74)):
    _run(tmp_path, f"dml-seed{seed}", score)
  for seed, score in enumerate((0.75, 0.77)):
    _run(tmp_path, f"acn-seed{seed}", score)
  rows = tables.comparison_rows(runs.load_runs(str(tmp_path)), "dml")
  # Ensemble: 76 - 72 = +4.00 points; stds 2.83 and 1.41 pool to sqrt((8 + 2) / 2).
  assert rows[0][:5] == ["acn", "2", "+4.00", f"{(5.0) ** 0.5:.2f}", "yes"]
  # Mean classifier top-1 is the ensemble minus 0.02 in every run: the same gap.
  assert rows[0][5] == "+4.00"


def test_health_table_averages_the_test_split_figures(tmp_path):
  for seed, ratio in enumerate((3.0, 5.0)):
    _run(tmp_path, f"acn-seed{seed}", 0.75)
    path = tmp_path / f"acn-seed{seed}" / "results.json"
    results = read_json(path)
    results["phase_a_health"] = {
        "divergence_real": 0.01, "divergence_generated": 0.01 * ratio,
        "divergence_searched": 0.05, "divergence_ratio_generated": ratio,
        "divergence_ratio_searched": 5.0, "kept_searched": 0.6,
        "discriminator_real_accuracy": None, "discriminator_fake_accuracy": None,
        "residual_linf": 0.1}
    write_json(path, results)
  _run(tmp_path, "dml-seed0", 0.74)
  rows = tables.health_rows(runs.load_runs(str(tmp_path)))
  assert len(rows) == 1 and rows[0][:2] == ["acn", "2"]
  assert rows[0][5] == f"4.00 ± {2 ** 0.5:.2f}"  # Div(x̃0) / Div(x): 3 and 5.
  assert rows[0][8] == "–"  # No discriminator (gan_weight = 0).


def test_chart_is_written(tmp_path):
  for seed, score in enumerate((0.70, 0.74)):
    _run(tmp_path, f"dml-seed{seed}", score)
  chart = tmp_path / "chart.png"
  plots.draw_chart(runs.load_runs(str(tmp_path)), str(chart))
  assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_are_each_seeds_history_and_their_mean(tmp_path, monkeypatch, capsys):
  dml = [[0.3, 0.5, 0.6], [0.2, 0.6, 0.7]]
  for seed, values in enumerate(dml):  # No validation split, no Phase A.
    _run(tmp_path, f"dml-seed{seed}", values[-1],
         history={"ensemble_top1": values, "val_ensemble_top1": ["NA"] * 3})
  acn = [{"ensemble_top1": [0.4, 0.55, 0.65], "val_ensemble_top1": [0.35, 0.5, 0.6],
          "health_divergence_ratio_generated": ["nan", 2.0, 3.0]},  # nan: warm-up.
         {"ensemble_top1": [0.3, 0.5, 0.75], "val_ensemble_top1": [0.3, "NA", 0.7],
          "health_divergence_ratio_generated": ["nan", 4.0, 6.0]}]
  for seed, history in enumerate(acn):
    _run(tmp_path, f"acn-seed{seed}", history["ensemble_top1"][-1], history=history)
  _run(tmp_path, "acn-seed2", 0.1, history={"ensemble_top1": [0.1, 0.1, 0.1]})
  (tmp_path / "acn-seed2" / "results.json").unlink()  # Still training: left out.

  curves = tmp_path / "curves.png"
  drawn = plots.draw_curves(runs.finished_runs(str(tmp_path)), str(curves))
  assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert {column: sorted(lines) for column, lines in drawn.items()} == {
      "ensemble_top1": ["acn", "dml"], "val_ensemble_top1": ["acn"],
      "health_divergence_ratio_generated": ["acn"]}

  def check(lines, seeds, epochs, mean):
    assert len(lines["seeds"]) == len(seeds)
    for (x, y), (seed_epochs, values) in zip(lines["seeds"], seeds):
      np.testing.assert_array_equal(x, seed_epochs)
      np.testing.assert_array_equal(y, values)
    np.testing.assert_array_equal(lines["mean"][0], epochs)
    np.testing.assert_allclose(lines["mean"][1], mean)

  epochs = [1, 2, 3]
  check(drawn["ensemble_top1"]["dml"], [(epochs, v) for v in dml], epochs,
        np.mean(dml, axis=0))
  check(drawn["ensemble_top1"]["acn"], [(epochs, h["ensemble_top1"]) for h in acn],
        epochs, np.mean([h["ensemble_top1"] for h in acn], axis=0))
  # An NA epoch is left out of its seed's line and of the mean at that epoch.
  check(drawn["val_ensemble_top1"]["acn"],
        [(epochs, [0.35, 0.5, 0.6]), ([1, 3], [0.3, 0.7])], epochs, [0.325, 0.5, 0.65])
  check(drawn["health_divergence_ratio_generated"]["acn"],
        [([2, 3], [2.0, 3.0]), ([2, 3], [4.0, 6.0])], [2, 3], [3.0, 4.5])

  curves.unlink()
  monkeypatch.setattr(sys, "argv", ["summarize.py", str(tmp_path), f"--curves={curves}"])
  summarize.main()
  assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "| acn | 2 |" in capsys.readouterr().out


def test_any_set_of_model_dirs_can_be_compared(tmp_path):
  """Model_dirs given one by one: named VARIANT-seedS or not, from several folders."""
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  _run(tmp_path / "a", "dml-seed0", 0.70)
  _run(tmp_path / "b", "dml-seed1", 0.74)
  _run(tmp_path / "b", "my_acn", 0.76)
  by_variant = runs.finished_runs([str(tmp_path / "a" / "dml-seed0"),
                                  str(tmp_path / "b" / "dml-seed1"),
                                  str(tmp_path / "b" / "my_acn")])
  assert sorted(by_variant) == ["dml", "my_acn"] and len(by_variant["dml"]) == 2
  rows = tables.summary_rows(runs.load_runs(
      [str(tmp_path / "a"), str(tmp_path / "b" / "dml-seed1")]))
  assert [row[:2] for row in rows] == [["dml", "2"]]
  assert rows[0][4] == "72.00 ± 2.83"


# -- The main table: paired differences to the baseline and the cost ------------------


def _differences_with_t(t, count):
  """`count` paired differences whose t statistic, mean / (std / sqrt(count)), is `t`:
  a mean shift of t * std / sqrt(count) added to residuals of mean 0 and std 1."""
  residuals = np.arange(count) - (count - 1) / 2
  residuals /= residuals.std(ddof=1)
  return list(t / np.sqrt(count) + residuals)


@pytest.mark.parametrize("t, df, p", [
    # Two-sided critical values of Student's t tables (3 decimals, hence the tolerance).
    (12.706, 1, 0.05), (4.303, 2, 0.05), (2.776, 4, 0.05), (2.228, 10, 0.05),
    (3.499, 7, 0.01), (2.845, 20, 0.01), (1.962, 1000, 0.05)])
def test_paired_t_test_p_values_match_the_tables(t, df, p):
  differences = _differences_with_t(t, df + 1)
  mean, p_value = comparison.paired_t_test(differences)
  assert mean == pytest.approx(t / np.sqrt(df + 1))
  assert p_value == pytest.approx(p, rel=2e-3)
  # Two-sided: the mirrored differences have the same p.
  assert comparison.paired_t_test([-d for d in differences])[1] == pytest.approx(p_value)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 10.0, 300.0])
def test_paired_t_test_p_values_match_the_closed_forms_of_one_and_two_degrees_of_freedom(t):
  # df = 1 is the Cauchy distribution; for df = 2, P(|T| > t) = 1 - t / sqrt(2 + t²).
  assert comparison.paired_t_test(_differences_with_t(t, 2))[1] == pytest.approx(
      1 - 2 / np.pi * np.arctan(t), rel=1e-7, abs=1e-12)
  assert comparison.paired_t_test(_differences_with_t(t, 3))[1] == pytest.approx(
      1 - t / np.sqrt(2 + t * t), rel=1e-7, abs=1e-12)


def test_paired_t_test_by_hand():
  # Differences 1, 2, 3: mean 2, std 1, t = 2 sqrt(3), p = 1 - 2 sqrt(3) / sqrt(14);
  # differences 1, 3: mean 2, std sqrt(2), t = 2, p = 1 - 2 / pi * arctan(2).
  assert comparison.paired_t_test([1.0, 2.0, 3.0]) == (
      2.0, pytest.approx(1 - 2 * 3 ** 0.5 / 14 ** 0.5, rel=1e-9))
  assert comparison.paired_t_test([1.0, 3.0]) == (
      2.0, pytest.approx(1 - 2 / np.pi * np.arctan(2.0), rel=1e-9))


def _finished(root, name, seed, ensemble, mean_classifier, seconds, images_per_second):
  """A results.json with the fields the main table reads (made-up numbers)."""
  model_dir = root / name
  model_dir.mkdir()
  write_json(model_dir / "results.json", {
      "seed": seed, "ensemble_top1": ensemble, "mean_divergence": 0.01,
      "classifiers": [{"top1": mean_classifier + 0.002}, {"top1": mean_classifier - 0.002}],
      "seconds_per_epoch": seconds / 40, "train_seconds": seconds,
      "train_images_per_second": images_per_second})


def test_main_table_pairs_seeds_with_the_baseline_and_shows_the_cost(tmp_path, monkeypatch,
                                                                     capsys):
  dml = {0: (0.815, 0.811), 1: (0.813, 0.810), 2: (0.816, 0.812)}
  noise = {0: (0.8175, 0.815), 1: (0.818, 0.814), 2: (0.8235, 0.818), 3: (0.503, 0.501)}
  for seed, (ensemble, mean) in dml.items():
    _finished(tmp_path, f"dml-seed{seed}", seed, ensemble, mean, 28.0 + seed, 1400.0 - seed)
  for seed, (ensemble, mean) in noise.items():  # Seed 3 has no DML run: left unpaired.
    _finished(tmp_path, f"dml_noise-seed{seed}", seed, ensemble, mean, 50.0 + 2 * seed,
              800.0 + 10 * seed)
  rows = tables.main_rows(runs.load_runs(str(tmp_path)), "dml")
  assert [row[0] for row in rows] == ["dml", "dml_noise"]

  ensemble = 100 * np.array([noise[s][0] - dml[s][0] for s in range(3)])
  mean = 100 * np.array([noise[s][1] - dml[s][1] for s in range(3)])
  # Two degrees of freedom: p = 1 - t / sqrt(2 + t²), t = mean / (std / sqrt(3)).
  t_ensemble = ensemble.mean() / (ensemble.std(ddof=1) / np.sqrt(3))
  t_mean = mean.mean() / (mean.std(ddof=1) / np.sqrt(3))
  assert abs(ensemble.mean() - 0.5) < 1e-9 and abs(mean.mean() - 0.4667) < 1e-3
  noise_ensemble = 100 * np.array([noise[s][0] for s in range(4)])
  noise_mean = 100 * np.array([noise[s][1] for s in range(4)])
  assert rows[1] == [
      "dml_noise", "4",
      f"{noise_ensemble.mean():.2f} ± {noise_ensemble.std(ddof=1):.2f}",
      f"{noise_mean.mean():.2f} ± {noise_mean.std(ddof=1):.2f}", "3",
      "+0.50", f"{1 - t_ensemble / np.sqrt(2 + t_ensemble ** 2):.3f}",
      "+0.47", f"{1 - t_mean / np.sqrt(2 + t_mean ** 2):.3f}",
      f"{np.mean([50, 52, 54, 56]):.0f} ± {np.std([50, 52, 54, 56], ddof=1):.0f}",
      f"{np.mean([800, 810, 820, 830]):.0f} ± {np.std([800, 810, 820, 830], ddof=1):.0f}",
      # Training time over DML's on seeds 0-2 (seed 3 unpaired): (50+52+54) / (28+29+30).
      f"{156 / 87:.2f}"]
  # Ensemble differences 0.25, 0.5, 0.75: t = 2 sqrt(3), p = 1 - 2 sqrt(3) / sqrt(14).
  assert rows[1][6] == "0.074"
  assert rows[0][4:9] == ["–"] * 5  # The baseline against itself.
  assert rows[0][9:] == ["29 ± 1", "1399 ± 1", "1.00"]

  monkeypatch.setattr(sys, "argv", ["summarize.py", str(tmp_path)])
  summarize.main()
  printed = capsys.readouterr().out
  assert printed.index("| dml_noise | 4 |") < printed.index("Per classifier")
  assert "| seeds paired with dml | ensemble − dml | p |" in printed


def test_runs_without_recorded_cost_or_seed_still_summarise(tmp_path):
  """Older results.json files: no train_seconds; a model_dir not named -seedS."""
  for seed, score in enumerate((0.70, 0.74)):
    _run(tmp_path, f"dml-seed{seed}", score)
  _run(tmp_path, "mine", 0.8)
  by_variant = runs.load_runs([str(tmp_path), str(tmp_path / "mine")])
  assert [r["seed"] for r in by_variant["dml"]] == [0, 1] and by_variant["mine"][0]["seed"] is None
  rows = tables.main_rows(by_variant, "dml")
  assert rows[1][0] == "mine" and rows[1][4:] == ["0", "–", "–", "–", "–", "–", "–", "–"]
  assert rows[0][9:] == ["–", "–", "–"]


def test_paired_t_test_of_identical_and_single_differences():
  assert comparison.paired_t_test([0.01, 0.01, 0.01]) == (0.01, 0.0)
  assert comparison.paired_t_test([0.0, 0.0]) == (0.0, 1.0)
  assert comparison.paired_t_test([0.02]) == (0.02, None)


def test_a_seed_run_twice_is_not_paired(tmp_path):
  """The same seed from two folders: which run to pair is ambiguous, so neither is."""
  for folder in ("a", "b"):
    (tmp_path / folder).mkdir()
    _finished(tmp_path / folder, "acn-seed0", 0, 0.8, 0.8, 10.0, 100.0)
  _finished(tmp_path / "a", "acn-seed1", 1, 0.8, 0.8, 10.0, 100.0)
  for seed in (0, 1):
    _finished(tmp_path / "a", f"dml-seed{seed}", seed, 0.79, 0.78, 5.0, 200.0)
  by_variant = runs.load_runs([str(tmp_path / "a"), str(tmp_path / "b")])
  differences = comparison.paired_differences(by_variant["acn"], by_variant["dml"])
  assert differences == {"ensemble": [pytest.approx(0.01)],
                         "mean classifier": [pytest.approx(0.02)]}


def test_the_cost_pairs_only_seeds_whose_runs_shared_a_kind_of_machine(tmp_path):
  """Seed 0's DML ran on an AVX2 machine and its ACN on an AVX-512 one, seed 3's ACN
  with oneDNN capped at AVX2: the ratio is seeds 1 and 2's alone, (90 + 99) / (30 +
  33), and the cell names them."""
  avx2 = {"cpu_model": "AMD EPYC", "isa": ["avx2", "fma"], "machine": "x86_64",
          "cpu_count": 2, "gpus": [], "onednn": True, "speed_variables": {}}
  avx512 = {**avx2, "isa": ["avx2", "fma", "avx512f"]}
  capped = {**avx512, "speed_variables": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
  seconds = {"dml": (60.0, 30.0, 33.0, 31.0), "acn": (100.0, 90.0, 99.0, 120.0)}
  machines = {"dml": (avx2, avx512, avx512, avx512), "acn": (avx512, avx512, avx512, capped)}
  for variant in ("dml", "acn"):
    for seed in range(4):
      _finished(tmp_path, f"{variant}-seed{seed}", seed, 0.8, 0.8, seconds[variant][seed], 1.0)
      path = tmp_path / f"{variant}-seed{seed}" / "results.json"
      write_json(path, {**read_json(path), "machine": machines[variant][seed]})
  by_variant = runs.load_runs(str(tmp_path))
  assert comparison.cost_pairs(by_variant["acn"], by_variant["dml"]) == ([1, 2], 4)
  assert comparison.training_time_ratio(by_variant["acn"], by_variant["dml"]) == pytest.approx(189 / 63)
  rows = {row[0]: row for row in tables.main_rows(by_variant, "dml")}
  assert rows["acn"][-1] == f"{189 / 63:.2f} (seeds 1,2)"
  assert rows["dml"][-1] == "1.00"
