"""Tables of results.json files: mean ± std over seeds, per variant.

  python experiments/summarize.py runs/fashion_mnist_small [--baseline=dml]
      [--chart=chart.png] [--curves=curves.png]
  python experiments/summarize.py runs/my-dml-seed0 runs/my-dml-seed1 runs/my-acn ...

Each PATH is a folder of model_dirs named VARIANT-seedS (as experiments/study.py
makes them) or a model_dir itself (its variant: its name without -seedS); every
run of a variant is one seed of its row. The main table: per variant, ensemble
and mean classifier top-1, the paired difference to the baseline over the seeds
both have (mean, and the two-sided p of a paired t-test), and the cost: training
seconds per run, training images per second (results.json) and training time in
the baseline's (paired by seed, over the seeds whose two runs had the same kind of
machine). Further tables:
per-classifier top-1 and divergence; each variant's
difference to the baseline against the pooled seed spread; Phase A's health on
the test split after training (results.json, acn_tf/method/health.py); the ACN
variants' Phase A training metrics of the last epoch (history.csv). `--chart`
draws mean ± std bars of ensemble and mean classifier top-1 per variant;
`--curves` the runs' training curves from history.csv, a colour per variant: each
seed a thin line, the mean over seeds a thick one (ensemble top-1 in training
and, where logged, validation; ACN's Phase A health Div(x̃0) / Div(x)).

The statistics, tables and plots are in experiments/summary/.
"""

import argparse

from summary import plots, runs, tables


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", metavar="PATH",
                      help="a folder of VARIANT-seedS model_dirs, or a model_dir")
  parser.add_argument("--baseline", default="dml")
  parser.add_argument("--split", choices=("test", "validation"), default="test",
                      help="validation: the last validated epoch of history.csv")
  parser.add_argument("--chart", default=None, help="PNG file for the bar chart")
  parser.add_argument("--curves", default=None,
                      help="PNG file for the training curves (history.csv) of every "
                      "finished run")
  arguments = parser.parse_args()
  by_variant = runs.load_runs(arguments.paths, arguments.split)
  if not by_variant:
    raise SystemExit("No finished run (results.json) in or under "
                     f"{' '.join(arguments.paths)}.")
  print(f"Against {arguments.baseline}, paired over the seeds both have "
        f"(points of {arguments.split} top-1; p: paired t-test, two-sided):\n")
  print(tables.format_markdown(tables.main_rows(by_variant, arguments.baseline),
                              tables.main_header(arguments.baseline)))
  print("\nPer classifier:\n")
  print(tables.format_markdown(tables.summary_rows(by_variant)))
  comparison = tables.comparison_rows(by_variant, arguments.baseline)
  if comparison:
    print(f"\nDifference to {arguments.baseline} (points of {arguments.split} top-1):\n")
    print(tables.format_markdown(comparison, tables.comparison_header(arguments.baseline)))
  health = tables.health_rows(by_variant)
  if health:
    print("\nPhase A health on the test split after training (mean ± std over seeds):\n")
    print(tables.format_markdown(health, tables.HEALTH_HEADER))
  if arguments.chart:
    plots.draw_chart(by_variant, arguments.chart)
  if arguments.curves:
    plots.draw_curves(runs.finished_runs(arguments.paths), arguments.curves)
  phase_a = tables.phase_a_rows(arguments.paths)
  if phase_a:
    print("\nPhase A in training, last epoch (mean over seeds):\n")
    print(tables.format_markdown(phase_a, tables.PHASE_A_HEADER))


if __name__ == "__main__":
  main()
