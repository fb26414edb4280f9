"""The Markdown tables of a summary: the main one (accuracy, paired difference
to the baseline, cost), per classifier, the difference against the seed spread,
Phase A's health after training and Phase A's last training epoch."""

import os
import statistics
from typing import Dict, List, Sequence, Union

from summary import comparison, runs


def mean_std(values: Sequence[float]) -> str:
  """Top-1 values in percent: mean ± sample std (the value alone for one run)."""
  if len(values) == 1:
    return f"{100 * values[0]:.2f}"
  return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def p_value(p) -> str:
  """A p-value cell: three decimals, "< 0.001" below that, "–" for none."""
  if p is None:
    return "–"
  return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cost(values: Sequence, digits: int) -> str:
  """Mean ± std of the values that were recorded (older runs have none)."""
  values = [value for value in values if value is not None]
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.{digits}f}"
  return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _ratio_cell(variant: List[dict], baseline: List[dict]) -> str:
  """training_time_ratio, naming the seeds it pairs when some of those both have
  were left out (run on machines of different kinds, or without their seconds)."""
  ratio = comparison.training_time_ratio(variant, baseline)
  if ratio is None:
    return "–"
  paired, both = comparison.cost_pairs(variant, baseline)
  if len(paired) == both:
    return f"{ratio:.2f}"
  return f"{ratio:.2f} (seeds {','.join(map(str, paired))})"


# -- The main table: accuracy, paired difference to the baseline, cost -------------


def main_rows(by_variant: Dict[str, List[dict]], baseline: str = "dml") -> List[List[str]]:
  """One row per variant: seeds, ensemble and mean classifier top-1 (mean ± std),
  the paired difference to `baseline` in points with its p, for each of the two,
  then training seconds per run, training images per second and the training
  time in the baseline's (`comparison.training_time_ratio`)."""
  rows = []
  for variant in sorted(by_variant, key=runs.display_order):
    results = by_variant[variant]
    scores = runs.scores(results)
    row = [variant, str(len(results)), mean_std(scores["ensemble"]),
           mean_std(scores["mean classifier"])]
    if variant == baseline or baseline not in by_variant:
      row += ["–"] * 5
    else:
      differences = comparison.paired_differences(results, by_variant[baseline])
      row.append(str(len(differences["ensemble"])))
      for kind in ("ensemble", "mean classifier"):
        if not differences[kind]:
          row += ["–", "–"]
          continue
        mean, p = comparison.paired_t_test(differences[kind])
        row += [f"{100 * mean:+.2f}", p_value(p)]
    row += [_cost([r.get("train_seconds") for r in results], 0),
            _cost([r.get("train_images_per_second") for r in results], 0)]
    row.append(_ratio_cell(results, by_variant.get(baseline, [])))
    rows.append(row)
  return rows


def main_header(baseline: str = "dml") -> List[str]:
  return ["variant", "seeds", "ensemble top-1 (%)", "mean classifier top-1 (%)",
          f"seeds paired with {baseline}", f"ensemble − {baseline}", "p",
          f"mean classifier − {baseline}", "p", "train s / run", "train images / s",
          f"train time / {baseline}'s"]


# -- Further tables -------------------------------------------------------------------


def summary_rows(by_variant: Dict[str, List[dict]]) -> List[List[str]]:
  """One row per variant: seeds, per-classifier top-1, mean top-1, ensemble top-1,
  test divergence, seconds per epoch."""
  rows = []
  for variant in sorted(by_variant, key=runs.display_order):
    results = by_variant[variant]
    count = len(results[0]["classifiers"])
    per_classifier = [mean_std([r["classifiers"][i]["top1"] for r in results])
                      for i in range(count)]
    mean_top1 = [statistics.mean(c["top1"] for c in r["classifiers"]) for r in results]
    rows.append([
        variant,
        str(len(results)),
        " / ".join(per_classifier),
        mean_std(mean_top1),
        mean_std([r["ensemble_top1"] for r in results]),
        f"{statistics.mean(r['mean_divergence'] for r in results):.4f}",
        f"{statistics.median(r['seconds_per_epoch'] for r in results):.1f}",
    ])
  return rows


HEADER = ["variant", "seeds", "top-1 per classifier (%)", "mean classifier top-1 (%)",
          "ensemble top-1 (%)", "divergence (JS)", "s / epoch (median)"]


# What the search did, in training: Div at x̃0 and at x̃, and the share kept.
PHASE_A_METRICS = ("divergence_x0", "divergence_search", "kept_fraction")
PHASE_A_HEADER = ["variant", "seeds", "Div at x̃0 (JS)", "Div at x̃ (JS)", "kept fraction"]


def phase_a_rows(root: Union[str, Sequence[str]]) -> List[List[str]]:
  """Mean over seeds of the last epoch's Phase A metrics, per ACN variant
  (finished runs only, as in `runs.load_runs`)."""
  histories = {variant: [runs.last_epoch(model_dir) for model_dir in model_dirs
                         if os.path.exists(os.path.join(model_dir, "history.csv"))]
               for variant, model_dirs in runs.finished_runs(root).items()}
  rows = []
  for variant in sorted(histories, key=runs.display_order):
    epochs = [h for h in histories[variant] if all(k in h for k in PHASE_A_METRICS)]
    if not epochs:
      continue
    rows.append([variant, str(len(epochs))] + [
        f"{statistics.mean(h[key] for h in epochs):.4f}" for key in PHASE_A_METRICS])
  return rows


# Phase A health after training on the test split (results.json "phase_a_health").
HEALTH_FIGURES = (("divergence_real", "Div(x)", 4), ("divergence_generated", "Div(x̃0)", 4),
                  ("divergence_searched", "Div(x̃)", 4),
                  ("divergence_ratio_generated", "Div(x̃0) / Div(x)", 2),
                  ("divergence_ratio_searched", "Div(x̃) / Div(x)", 2),
                  ("kept_searched", "kept fraction (x̃)", 3),
                  ("discriminator_real_accuracy", "d accuracy, real", 2),
                  ("discriminator_fake_accuracy", "d accuracy, generated", 2),
                  ("residual_linf", "|x̃0 − x|∞", 3))
HEALTH_HEADER = ["variant", "seeds", *[label for _, label, _ in HEALTH_FIGURES]]


def health_rows(by_variant: Dict[str, List[dict]]) -> List[List[str]]:
  """Mean ± std over seeds of each health figure, per ACN variant."""
  rows = []
  for variant in sorted(by_variant, key=runs.display_order):
    healths = [r["phase_a_health"] for r in by_variant[variant] if r.get("phase_a_health")]
    if not healths:
      continue
    row = [variant, str(len(healths))]
    for key, _, digits in HEALTH_FIGURES:
      values = [h[key] for h in healths if h.get(key) is not None]
      if not values:
        row.append("–")
      elif len(values) == 1:
        row.append(f"{values[0]:.{digits}f}")
      else:
        row.append(f"{statistics.mean(values):.{digits}f} ± "
                   f"{statistics.stdev(values):.{digits}f}")
    rows.append(row)
  return rows


def comparison_rows(by_variant: Dict[str, List[dict]], baseline: str) -> List[List[str]]:
  """Each variant minus `baseline` (points of top-1), and the pooled seed spread
  sqrt((s_a^2 + s_b^2) / 2) it must exceed to say more than the seeds do."""
  if baseline not in by_variant or len(by_variant[baseline]) < 2:
    return []
  reference = runs.scores(by_variant[baseline])
  rows = []
  for variant in sorted(by_variant, key=runs.display_order):
    scores = runs.scores(by_variant[variant])
    if variant == baseline or len(by_variant[variant]) < 2:
      continue
    row = [variant, str(len(by_variant[variant]))]
    for kind in ("ensemble", "mean classifier"):
      difference = 100 * (statistics.mean(scores[kind]) - statistics.mean(reference[kind]))
      pooled = 100 * ((statistics.variance(scores[kind]) +
                       statistics.variance(reference[kind])) / 2) ** 0.5
      row += [f"{difference:+.2f}", f"{pooled:.2f}",
              "yes" if abs(difference) > pooled else "no"]
    rows.append(row)
  return rows


def comparison_header(baseline: str) -> List[str]:
  return ["variant", "seeds", f"ensemble − {baseline}", "pooled std", "beyond spread",
          f"mean classifier − {baseline}", "pooled std", "beyond spread"]


def format_markdown(rows: List[List[str]], header: Sequence[str] = HEADER) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)
