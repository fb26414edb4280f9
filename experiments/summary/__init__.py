"""What experiments/summarize.py prints and draws, one concern a module.

  runs.py        the run directories: which runs finished, their results by variant
  comparison.py  a variant against the baseline: pairing by seed and machine, the
                 paired t-test, the training-time ratio
  tables.py      the Markdown tables
  plots.py       the bar chart and the training curves

experiments/ is the import root (as when a script of it runs): `from summary import runs`.
"""
