"""From the command line to a config: overrides, config files, the registry.

The order of precedence is written once, in `layers`: over a base (the named
experiment, with its settings for the method the run ends with, or a trained
run's own config), a JSON config file, then a preset (acn_tf/config/presets.py),
then --method, then `field=value` overrides, each checked against the schema of
acn_tf/config/schema.py. `resolve_config` (what `run.py` calls) and
`resolve_for_run` (a command about a trained run, --mode=eval or export) apply
the layers; `final_method` and `field_origin` read them from the top, for the
experiment's method settings and for the messages that name the flag at fault.
"""

import json
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from acn_tf.config.presets import get_preset
from acn_tf.config.registry import experiment_names, get_experiment
from acn_tf.config.schema import DATASET_HELP, ConfigError, ExperimentConfig, apply_overrides


def parse_override_strings(items: Sequence[str]) -> Dict[str, str]:
  """Parses ["key=value", ...] into a dict, rejecting malformed items."""
  parsed = {}
  for item in items:
    key, separator, value = item.partition("=")
    if not separator or not key.strip():
      raise ConfigError(f"Override {item!r} is not of the form key=value "
                        "(e.g. --override=epochs=10).")
    parsed[key.strip()] = value.strip()
  return parsed


class _DuplicateKey(ValueError):
  def __init__(self, key: str, where: str):
    super().__init__(key)
    self.key, self.where = key, where


def _refuse_duplicate_keys(pairs):
  """json's object_pairs_hook: a JSON object as a dict, unless a key repeats
  (json.loads would silently keep the last value)."""
  values = {}
  for key, value in pairs:
    if key in values:
      raise _DuplicateKey(key, f"values {values[key]!r} and {value!r}")
    values[key] = value
  return values


def load_config_file(path: str) -> Dict[str, Any]:
  """Reads a JSON object of field values (e.g. a tuner's best_config.json).

  Every way the file can be unusable is a ConfigError naming the flag and the file.
  """
  flag = f"--config_file={path}"
  example = 'e.g. {"learning_rate": 0.05, "epochs": 30} or a search\'s best_config.json'
  if not os.path.exists(path):
    raise ConfigError(f"{flag}: no such file. Give the path of a JSON object of config "
                      f"fields, {example}.")
  if os.path.isdir(path):
    raise ConfigError(f"{flag} is a directory, not a JSON file; give the file itself, "
                      f"{example}.")
  try:
    with open(path, encoding="utf-8") as handle:
      text = handle.read()
  except UnicodeDecodeError:
    raise ConfigError(f"{flag} is not a UTF-8 text file: expected a JSON object of config "
                      f"fields, {example}.") from None
  except OSError as error:
    raise ConfigError(f"{flag} cannot be read ({error.strerror or error}); check that it "
                      "is a readable file.") from None
  try:
    values = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
  except _DuplicateKey as duplicate:
    raise ConfigError(f"{flag} gives the key {duplicate.key!r} more than once "
                      f"({duplicate.where}); which value is meant is ambiguous. Keep one "
                      f"{duplicate.key!r}.") from None
  except json.JSONDecodeError as error:
    raise ConfigError(f"{flag} is not valid JSON ({error.msg}, line {error.lineno} column "
                      f"{error.colno}); expected a JSON object of config fields, "
                      f"{example}.") from None
  if not isinstance(values, dict):
    raise ConfigError(f"{flag} holds a JSON {type(values).__name__}, not an object of "
                      f"config fields; expected {example}.")
  return values


class Layer(NamedTuple):
  """Values of some fields and the flag that gave them, as the user typed it
  (None for the overrides, whose flag is each field's own)."""
  flag: Optional[str]
  values: Mapping[str, Any]


def layers(config_file: Optional[str], file_values: Mapping[str, Any], preset: Optional[str],
           method: Optional[str], overrides: Mapping[str, Any]) -> List[Layer]:
  """What a command sets over its base, lowest precedence first: the config
  file's fields, the preset's, --method, the overrides."""
  return [Layer(f"--config_file={config_file}", file_values),
          Layer(f"--preset={preset}", get_preset(preset) if preset else {}),
          Layer(f"--method={method}", {"method": method} if method else {}),
          Layer(None, overrides)]


def final_method(command: Sequence[Layer]) -> Optional[str]:
  """The method the layers end with (None: the base's own)."""
  for layer in reversed(command):
    if layer.values.get("method"):
      return str(layer.values["method"])
  return None


def apply_layers(config: ExperimentConfig, command: Sequence[Layer]) -> ExperimentConfig:
  """`config` with each layer applied in turn, validated; a config file's error
  names the file."""
  for layer in command:
    try:
      config = apply_overrides(config, layer.values)
    except ConfigError as error:
      if layer.flag is None or not layer.flag.startswith("--config_file="):
        raise
      raise ConfigError(f"{layer.flag}: {error}") from None
  return config.validate()


def resolve_config(experiment: Optional[str],
                   method: Optional[str] = None,
                   config_file: Optional[str] = None,
                   overrides: Sequence[str] = (),
                   preset: Optional[str] = None) -> ExperimentConfig:
  """The base, then the config file, then the preset, then --method, then overrides.

  The base is the registered `experiment` when one is named; without it, the
  config file is a whole experiment of its own: its fields over
  ExperimentConfig's defaults, so it (or an override) must give `dataset`.
  The file's `name` names the experiment (and the default model_dir); without
  one, a named base keeps its name and a file alone is named after the file
  (my_experiment.json: "my_experiment").
  """
  if not experiment and not config_file:
    raise ConfigError(
        "--experiment or --config_file is required: --experiment=NAME runs a registered "
        f"experiment ({', '.join(experiment_names())}); --config_file=FILE.json runs the "
        'experiment that file defines, e.g. {"name": "flowers", "dataset": '
        '"folder:/data/flowers/train", "test_fraction": 0.2, "image_size": 64}.')
  file_values: Dict[str, Any] = load_config_file(config_file) if config_file else {}
  name = file_values.pop("name", None)
  if name is not None and (not isinstance(name, str) or not name.strip()):
    raise ConfigError(f"--config_file={config_file}: name must be a non-empty string, got "
                      f"{name!r}.")
  parsed_overrides = parse_override_strings(overrides)
  command = layers(config_file, file_values, preset, method, parsed_overrides)
  if experiment:
    # The experiment's settings for one method (registry.register) depend on the
    # method the run ends with, whichever flag names it.
    config = get_experiment(experiment, final_method(command))
  else:
    if "dataset" not in file_values and "dataset" not in parsed_overrides:
      raise ConfigError(
          f"--config_file={config_file} gives no dataset, and no --experiment gives one: "
          f'add "dataset": one of {DATASET_HELP}, to the file, or name a registered '
          f"experiment as its base with --experiment=NAME ({', '.join(experiment_names())}).")
    stem = os.path.splitext(os.path.basename(config_file))[0]
    dataset = file_values.get("dataset", parsed_overrides.get("dataset"))
    config = ExperimentConfig.from_fields(
        name=stem, dataset=dataset if isinstance(dataset, str) else "")
  if name is not None:
    config = config.replace(name=name.strip())
  return apply_layers(config, command)


def resolve_for_run(run: ExperimentConfig,
                    experiment: Optional[str],
                    method: Optional[str] = None,
                    config_file: Optional[str] = None,
                    overrides: Sequence[str] = (),
                    preset: Optional[str] = None) -> ExperimentConfig:
  """The config a command describes for the trained run whose config is `run`.

  With --experiment or --config_file the command names its base, and the config
  is resolve_config's, as when it trained; without either (`--mode=eval
  --model_dir=M --method=acn`), the base is the run's own config and --method
  and the overrides are applied over it (an experiment's settings for one
  method, registry.register, are then the run's values, not the new method's).
  """
  if experiment or config_file:
    return resolve_config(experiment, method, config_file, overrides, preset)
  return apply_layers(run, layers(None, {}, preset, method, parse_override_strings(overrides)))


def field_origin(field: str, *, experiment: Optional[str], method: Optional[str],
                 config_file: Optional[str], set_by: Mapping[str, str],
                 preset: Optional[str] = None) -> str:
  """The flag that gave `field` its value in resolve_config, as the user typed it.

  `set_by` maps the fields the overrides set to their flags (--override=KEY=VALUE,
  or a shorthand such as --mixed_precision=...). The top layer that sets the
  field gave it (`layers`); below them the base: a config file without
  --experiment gives its name (from its file name) and the defaults, else the
  experiment.
  """
  file_values = dict(load_config_file(config_file)) if config_file else {}
  if config_file and not experiment:
    file_values.setdefault("name", None)
  for layer in reversed(layers(config_file, file_values, preset, method, set_by)):
    if field in layer.values:
      return layer.flag or set_by[field]
  if experiment:
    return f"--experiment={experiment}"
  return f"--config_file={config_file}"
