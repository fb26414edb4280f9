"""A run's config.json read back: what a file written by an earlier version means.

A field added after a run was written takes the value that reproduces the code
which wrote it (FIELDS_ADDED_LATER). A setting removed from the library is
dropped where the file holds the behaviour the library kept (FIELDS_REMOVED);
any other value of it is an error that names the commit whose code ran it.
"""

import json
from typing import Any, Dict, List, Mapping

from acn_tf import errors
from acn_tf.config.schema import FIELDS, ExperimentConfig
from acn_tf.errors import ConfigError

# Fields added after runs were written, with what a config.json without them means:
# the behaviour of the code that wrote it. A run of that time restores as trained.
FIELDS_ADDED_LATER = {
    "downsampling_padding": "same",
    "weight_decay_mode": "decoupled",
    "use_generator": True,
    "kdcl_target": "min_logit",  # Read by method=kdcl alone, which came with it.
    "divergent_batch_norm_updates": True,
    # ONE's and CL-ILR's (BranchedConfig): no run before them read them.
    **{name: field.default for name, field in FIELDS.items()
       if field.location[0] == "branched"},
}

# Alternatives that lost, removed from the library, with the value that is the
# behaviour the library kept. experiments/RESULTS.md says which commit ran them.
FIELDS_REMOVED = {
    "adv_kd_target": "divergent",
    "adv_normalization": "batch",
    "ras_mask_source": "update",
    "ras_objective": "divergence",
    "divergent_signs": "found",
    "divergent_sizes": "found",
}
# Values of a kept field that were removed with the alternatives.
VALUES_REMOVED = {"divergence": ("sym_kl", "logit_l1")}
# The last commit whose code runs every removed setting.
LAST_COMMIT_WITH_REMOVED = "b6bd82a"


def removed_settings(values: Mapping[str, Any]) -> List[str]:
  """"field=value" for each removed setting that `values` (a config.json) sets to
  anything but the behaviour the library kept."""
  removed = [f"{key}={values[key]!r}" for key, kept in FIELDS_REMOVED.items()
             if key in values and values[key] != kept]
  removed += [f"{key}={values[key]!r}" for key, gone in VALUES_REMOVED.items()
              if values.get(key) in gone]
  return removed


def with_fields_added_later(values: Mapping[str, Any]) -> Dict[str, Any]:
  """`values` (a run's config.json) in the current fields: every field of
  FIELDS_ADDED_LATER that it lacks set to the value its code implied, and every
  field of FIELDS_REMOVED that holds the kept behaviour dropped (another value
  stays, for `config_from_dict` to refuse by name)."""
  kept = {key: value for key, value in values.items()
          if not (key in FIELDS_REMOVED and value == FIELDS_REMOVED[key])}
  return {**{key: value for key, value in FIELDS_ADDED_LATER.items() if key not in kept},
          **kept}


def config_from_dict(values: Mapping[str, Any]) -> ExperimentConfig:
  """The config whose to_dict() (e.g. a run's config.json) is `values`, validated.

  Read as `with_fields_added_later` reads it. Raises ConfigError for a value that
  is not such a dict: a removed setting at another value than the kept one,
  unknown or missing fields, wrong types (JSON turned tuples into lists; they are
  turned back).
  """
  if not isinstance(values, Mapping):
    raise ConfigError(f"expected a JSON object of config fields, got a "
                      f"{type(values).__name__}")
  removed = removed_settings(values)
  if removed:
    raise ConfigError(
        f"it sets {', '.join(removed)}: an alternative removed from acn-tf, which keeps "
        f"only the method's own setting. `git checkout {LAST_COMMIT_WITH_REMOVED}` "
        "has the code that ran it")
  values = with_fields_added_later(values)
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise ConfigError("unknown config fields " + ", ".join(
        f"{key!r}{errors.did_you_mean(key, list(FIELDS))}" for key in unknown))
  missing = [name for name in ("name", "dataset") if name not in values]
  if missing:
    raise ConfigError(f"missing config fields {', '.join(missing)}")
  return ExperimentConfig.from_fields(**{
      key: tuple(value) if isinstance(value, list) else value
      for key, value in values.items()}).validate()


def differing_fields(saved: Mapping[str, Any], config: ExperimentConfig) -> List[str]:
  """The fields where a saved config.json differs from `config`, sorted.

  The comparison is between JSON forms, where tuples have become lists; the
  saved file is read in the current fields (`with_fields_added_later`): a field
  it lacks has the value its code implied, a removed setting at its kept
  behaviour is no difference.
  """
  saved = with_fields_added_later(saved)
  wanted = json.loads(json.dumps(config.to_dict()))
  return [key for key in sorted(set(saved) | set(wanted))
          if saved.get(key) != wanted.get(key)]


def config_differences(saved: Mapping[str, Any], config: ExperimentConfig) -> List[str]:
  """"field (saved X, now Y)" for each field where a saved config.json differs."""
  saved = with_fields_added_later(saved)
  wanted = json.loads(json.dumps(config.to_dict()))
  return [f"{key} (saved {saved.get(key)!r}, now {wanted.get(key)!r})"
          for key in differing_fields(saved, config)]
