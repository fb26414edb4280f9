"""experiments/benchmark.py runs and reports what BENCHMARKS.md quotes (not a timing test:
tiny models (small_cnn: its graphs trace in 2/3 of resnet8's time), one step; the numbers
it prints are not checked, only their bookkeeping)."""

import json
import os
import sys

from conftest import ROOT, Command, early_runs


@early_runs
def benchmark_run(directory):
  """The script on three configurations, three rounds each, profiled."""
  return {"json": Command([
      sys.executable, os.path.join(ROOT, "experiments", "benchmark.py"), "--json",
      "--architecture=small_cnn", "--batch_size=8", "--steps=1", "--repeats=3",
      "--configurations=single,dml,acn_k1_filters32", "--override=generator_filters=4",
      "--override=discriminator_filters=4",
      f"--profile_dir={os.path.join(directory, 'profile')}"])}


def test_benchmark_script_reports_medians_and_ratios(benchmark_run):
  completed = benchmark_run["json"]
  completed.succeeded()
  results = json.loads(completed.stdout)
  for name in ("single", "dml", "acn_k1_filters32"):
    rounds = results["rounds"][name]
    assert len(rounds) == 3 and min(rounds) > 0
    assert results[name] == sorted(rounds)[1]  # The median of three.
  assert results["step_time_dml_over_single"] == results["single"] / results["dml"]
  assert (results["step_time_acn_k1_filters32_over_dml"]
          == results["dml"] / results["acn_k1_filters32"])
  assert "step_time_acn_k1_over_dml" not in results  # acn_k1 was not run.
  assert results["input_pipeline"] > 0
  assert results["overrides"] == ["generator_filters=4", "discriminator_filters=4"]


def test_benchmark_script_profiles_each_configuration(benchmark_run):
  """Self-times per op type, read from each configuration's trace, largest first,
  that include the convolutions every configuration runs."""
  results = json.loads(benchmark_run["json"].stdout)
  for name in ("single", "dml", "acn_k1_filters32"):
    self_times = results["op_self_time_ms"][name]
    assert list(self_times.values()) == sorted(self_times.values(), reverse=True)
    assert min(self_times.values()) >= 0
    assert any("Conv2D" in op_type for op_type in self_times)


def test_an_experiments_configurations_are_its_registered_methods():
  """--experiment: each method as the experiment registers it (fashion_mnist_small
  gives ACN half the divergent batch's weight), Phase A from the first step, and
  batches of the dataset's shape."""
  sys.path.insert(0, os.path.join(ROOT, "experiments"))
  import benchmark  # noqa: E402
  from acn_tf.config import command_line, registry
  cases = benchmark.experiment_configurations("fashion_mnist_small")
  assert set(cases) == {"independent", "dml", "dml_noise", "kdcl", "one", "cl_ilr", "acn",
                        "acn_no_generator", "acn_live_generator"}
  registered = registry.get_experiment("fashion_mnist_small", "acn")
  assert cases["acn"] == registered.replace(adv_warmup_epochs=0, augmentation="none")
  assert cases["acn"].distillation.adv_weight == 0.5
  assert cases["acn_no_generator"] == cases["acn"].replace(use_generator=False)
  live = command_line.resolve_config("fashion_mnist_small", "acn", preset="live_generator")
  assert cases["acn_live_generator"] == live.replace(adv_warmup_epochs=0, augmentation="none")
  assert {case.method for case in cases.values()} == {
      "independent", "dml", "dml_noise", "kdcl", "one", "cl_ilr", "acn"}
  assert all(case.architectures == ("resnet8", "resnet8") and case.data.batch_size == 64
             for case in cases.values())
  assert benchmark.DATASET_SHAPES[cases["dml"].data.dataset] == ((28, 28, 1), 10)
