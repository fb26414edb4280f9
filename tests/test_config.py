"""The configuration schema: sections, names, defaults, checks, and which method
reads which setting."""

import dataclasses
import json
import typing

import keras
import numpy as np
import pytest

from acn_tf.config import command_line, presets, registry, saved_runs, schema as config_lib
from acn_tf.run import builders
from acn_tf.config.schema import ConfigError, ExperimentConfig
from acn_tf.data.pipeline import DatasetInfo
from tiny_models import random_batch


def _leaf_names(cls):
  """Every non-section field name under `cls`, by walking the dataclasses."""
  names = []
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(cls):
    kind = hints[field.name]
    names.extend(_leaf_names(kind) if dataclasses.is_dataclass(kind) else [field.name])
  return names


def test_every_setting_has_one_name_across_the_sections():
  names = _leaf_names(ExperimentConfig)
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
  assert list(config_lib.FIELDS) == names


def test_settings_are_set_and_read_by_name_whichever_section_holds_them():
  config = ExperimentConfig.from_fields(name="x", dataset="digits", wrc_alpha=0.2,
                                        ras_steps=3, epochs=7, temperature=4.0)
  assert config.adversarial.wrc_alpha == 0.2 == config.get("wrc_alpha")
  assert config.adversarial.search.ras_steps == 3
  assert config.optimization.epochs == 7 and config.distillation.temperature == 4.0
  changed = config.replace(ras_epsilon=0.05, adversarial_beta_1=0.9)
  assert changed.adversarial.search.ras_epsilon == 0.05
  assert changed.adversarial.search.ras_steps == 3  # The rest of the section stays.
  assert changed.adversarial.adversarial_beta_1 == 0.9
  # A whole section, then a setting inside it, in one call.
  replaced = config.replace(adversarial=config_lib.AdversarialConfig(), ras_steps=5)
  assert replaced.adversarial.wrc_alpha == config_lib.AdversarialConfig().wrc_alpha
  assert replaced.adversarial.search.ras_steps == 5
  with pytest.raises(ConfigError, match="Unknown config key 'wrc_alpa'"):
    config.replace(wrc_alpa=0.1)


# A typo and the keys a reader would pick as meant (the suggestions are difflib's,
# compared here with what a person expects), or () where no key is near.
_TYPOS = [("wieght_decay", ("weight_decay", "weight_decay_mode")), ("epoch", ("epochs",)),
          ("batchsize", ("batch_size",)), ("temprature", ("temperature",
                                                         "one_temperature",
                                                         "cl_ilr_temperature")),
          ("lr", ())]


@pytest.mark.parametrize("typo, meant", _TYPOS)
def test_an_unknown_key_names_the_nearest_valid_ones_then_all(tmp_path, typo, meant):
  config = registry.get_experiment("digits")
  quoted = [repr(key) for key in meant]
  suggested = (", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1
               else "".join(quoted))
  expected = (f"Unknown config key {typo!r}; did you mean {suggested}? Valid keys: " if meant
              else f"Unknown config key {typo!r}. Valid keys: ")
  from acn_tf.config import command_line
  config_file = tmp_path / "typo.json"
  config_file.write_text(json.dumps({typo: 1}))
  raisers = [lambda: command_line.resolve_config("digits", overrides=[f"{typo}=1"]),
             lambda: command_line.resolve_config("digits", config_file=str(config_file)),
             lambda: config.replace(**{typo: 1}),  # The Python API's way in.
             lambda: config.get(typo)]
  for raiser in raisers:
    with pytest.raises(ConfigError) as raised:
      raiser()
    message = str(raised.value)
    assert expected in message, message
    listed = message.split("Valid keys: ")[1].rstrip(".").split(", ")
    assert set(listed) >= set(config_lib.FIELDS) - {"name"}  # The full list stays.
  values = dict(config.to_dict(), **{typo: 1})
  with pytest.raises(ConfigError) as raised:  # A run's config.json.
    saved_runs.config_from_dict(values)
  assert str(raised.value) == f"unknown config fields {typo!r}" + (
      f"; did you mean {suggested}?" if meant else "")


def test_to_dict_is_flat_and_round_trips_through_json():
  config = registry.get_experiment("fashion_mnist_small").replace(method="acn",
                                                                     ras_steps=2)
  values = json.loads(json.dumps(config.to_dict()))
  assert set(values) == set(config_lib.FIELDS)
  assert values["ras_steps"] == 2 and values["architectures"] == ["resnet8", "resnet8"]
  assert saved_runs.config_from_dict(values) == config


def test_a_saved_config_without_newer_settings_loads_with_their_defaults():
  values = registry.get_experiment("digits").to_dict()
  for newer in ("image_size", "channels", "test_folder"):
    del values[newer]
  assert saved_runs.config_from_dict(values) == registry.get_experiment("digits")


@pytest.mark.parametrize("change, message", [
    (dict(epochs=0), "epochs must be > 0, got 0."),
    (dict(weight_decay=-1.0), "weight_decay must be >= 0, got -1.0."),
    (dict(validation_fraction=1.0), r"validation_fraction must be in \[0, 1\), got 1.0."),
    (dict(momentum=1.5), r"momentum must be in \[0, 1\], got 1.5."),
    (dict(wrc_alpha=2.0), "wrc_alpha must be in .* pixel units"),
    (dict(channels=2), "channels=2 is not one of 1, 3, 0. 1 is grayscale"),
    (dict(divergence="kl"), "divergence='kl' is not one of js, total_variation"),
    (dict(adversarial_beta_1=1.0), r"adversarial_beta_1 must be in \[0, 1\)"),
    (dict(generator_updates=0), "generator_updates must be > 0"),
])
def test_each_declared_range_is_checked(change, message):
  config = registry.get_experiment("digits")
  config.validate()
  with pytest.raises(ConfigError, match=message):
    config.replace(**change).validate()


# -- Which settings each method reads -----------------------------------------------


def _another_value(name: str, value):
  """A valid value other than `value` for the setting `name`."""
  choices = config_lib.FIELDS[name].metadata.get("choices")
  if choices:
    return next(choice for choice in choices if choice != value)
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return value / 2 if value else 0.1
  raise AssertionError(f"no other value for {name}={value!r}")


def _weights_after_a_step(config):
  info = DatasetInfo("digits", 10, (8, 8, 1), 64, 0, 64, "synthetic")
  model = builders.build_model(config, info, [0.5], [0.08], steps=2)
  keras.utils.set_random_seed(0)  # dml_noise's signs: the same in both steps compared.
  model.train_on_batch(*random_batch(32, num_classes=10))
  return [v.numpy() for v in model.classifier_variables]


@pytest.mark.parametrize("method", ["independent", "dml", "dml_noise", "kdcl"])
def test_settings_a_method_does_not_read_change_nothing_in_its_step(method):
  """`fields_unused_by` (which the tuner leaves out of a search) is what the
  step does: every such setting changed at once gives the same weights."""
  base = registry.get_experiment("digits").replace(method=method)
  unused = config_lib.fields_unused_by(method)
  assert {"wrc_alpha", "ras_steps", "ras_epsilon", "divergence"} <= unused
  assert ("kd_weight" in unused) == (method == "independent")
  # dml_noise reads the divergent-batch terms, their label mask and its noise.
  noise_settings = {"adv_weight", "adv_kd_weight", "adv_ce_weight", "ras_label_restrict",
                    "input_noise"}
  assert unused & noise_settings == (set() if method == "dml_noise" else noise_settings)
  changed = base.replace(**{name: _another_value(name, base.get(name))
                            for name in unused}).validate()
  for before, after in zip(_weights_after_a_step(base), _weights_after_a_step(changed)):
    np.testing.assert_array_equal(before, after)
  # And a setting the method does read changes them (the comparison can fail).
  read = base.replace(learning_rate=base.optimization.learning_rate / 2)
  assert any(not np.array_equal(a, b) for a, b in
             zip(_weights_after_a_step(base), _weights_after_a_step(read)))


def test_acn_reads_every_setting_but_the_rivals_own():
  assert config_lib.fields_unused_by("acn") == frozenset(
      {"input_noise", "kdcl_target", "split_after", "one_temperature", "one_rampup_epochs",
       "cl_ilr_temperature", "cl_ilr_hard_weight"})


def test_a_preset_comes_after_the_experiment_and_before_method_and_overrides():
  preset = presets.get_preset("divergence_seeking")
  config = command_line.resolve_config("fashion_mnist_small", "acn", None,
                                       ["ras_epsilon=0.1"], "divergence_seeking")
  expected = registry.get_experiment("fashion_mnist_small").replace(
      method="acn", **{**preset, "ras_epsilon": 0.1})
  assert config == expected
  assert config.adversarial.divergence == "total_variation"  # The preset's, not the default.
  with pytest.raises(ConfigError, match="Unknown preset 'nope'. Known presets: "
                     "divergence_seeking"):
    command_line.resolve_config("digits", preset="nope")


@pytest.mark.parametrize("experiment", registry.experiment_names())
@pytest.mark.parametrize("name", presets.preset_names())
def test_every_preset_gives_its_values_to_every_experiment(name, experiment):
  preset = presets.get_preset(name)
  assert set(preset) <= set(config_lib.field_types())
  config = command_line.resolve_config(experiment, "acn", preset=name).to_dict()
  assert {field: config[field] for field in preset} == dict(preset)


def _adv_weight(**resolve_arguments):
  return command_line.resolve_config("fashion_mnist_small",
                                     **resolve_arguments).distillation.adv_weight


def test_an_experiments_setting_for_one_method_reaches_that_method_alone(tmp_path):
  """fashion_mnist_small gives ACN half the divergent batch's weight and leaves
  dml_noise, which reads the same field, at the library's 1, whichever flag
  names the method; the file, the preset and the overrides still win over it."""
  assert ExperimentConfig.from_fields(name="x", dataset="digits").distillation.adv_weight == 1.0
  assert registry.method_settings("fashion_mnist_small", "acn") == {"adv_weight": 0.5}
  assert _adv_weight(method="acn") == 0.5
  assert _adv_weight(overrides=["method=acn"]) == 0.5
  assert _adv_weight(method="dml_noise") == 1.0
  assert _adv_weight(method="dml_noise", overrides=["method=acn"]) == 0.5
  assert _adv_weight(method="acn", overrides=["method=dml_noise"]) == 1.0
  assert _adv_weight(method="acn", overrides=["adv_weight=0.8"]) == 0.8
  assert _adv_weight(method="acn", preset="divergence_seeking") == 1.0
  for values, expected in (({"method": "acn"}, 0.5), ({"method": "acn", "adv_weight": 2.0}, 2.0),
                           ({"epochs": 3}, 1.0)):
    config_file = tmp_path / "settings.json"
    config_file.write_text(json.dumps(values))
    assert _adv_weight(config_file=str(config_file)) == expected, values
  # Nothing else differs from the experiment run with another method.
  acn = command_line.resolve_config("fashion_mnist_small", "acn")
  assert acn == registry.get_experiment("fashion_mnist_small").replace(method="acn",
                                                                       adv_weight=0.5)
  assert command_line.field_origin(
      "adv_weight", experiment="fashion_mnist_small", method="acn", config_file=None,
      set_by={}) == "--experiment=fashion_mnist_small"


def test_the_python_api_follows_the_same_method_settings():
  from acn_tf import api
  assert api.config("fashion_mnist_small", method="acn").distillation.adv_weight == 0.5
  assert api.config("fashion_mnist_small", method="dml_noise").distillation.adv_weight == 1.0


@pytest.mark.parametrize("settings, message", [
    ({"dml": {"adv_weight": 0.5}}, "method dml does not read"),
    ({"nope": {"adv_weight": 0.5}}, "unknown method 'nope'"),
])
def test_a_method_setting_of_a_method_that_cannot_read_it_is_refused(settings, message):
  with pytest.raises(KeyError, match=message):
    registry.register("never_registered", method_settings=settings)
  assert "never_registered" not in registry.experiment_names()


def test_every_method_has_its_traits_and_they_say_what_it_reads():
  """acn_tf/config/methods.py is the one table of what a method trains: every
  method has an entry, and the settings each reads follow from it."""
  from acn_tf.config import methods
  assert set(methods.METHOD_TRAITS) == set(config_lib.METHODS)
  for method, traits in methods.METHOD_TRAITS.items():
    unused = config_lib.fields_unused_by(method)
    assert ("kd_weight" not in unused) == traits.distills, method
    assert ("adv_weight" not in unused) == traits.divergent_batch, method
    assert ("wrc_alpha" not in unused) == traits.adversarial_phase, method
    config = registry.get_experiment("digits").replace(method=method)
    assert config.uses_adversarial_phase() == traits.adversarial_phase
    assert (config.phase_b().kd_weight > 0) == traits.distills
    if traits.distills:
      with pytest.raises(ConfigError, match=f"method={method} needs at least 2 classifiers"):
        config.replace(architectures=("small_cnn",)).validate()
  with pytest.raises(KeyError, match="METHOD_TRAITS"):
    methods.method_traits("no_such_method")


def test_the_augmented_regime_is_the_small_one_with_the_recipes_augmentation_at_t1():
  """Stage 4b's choice (experiments/RESULTS.md): 4,000 images, crop and flip, T = 1;
  every other setting fashion_mnist_small's, and ACN at the library's weight."""
  small = registry.get_experiment("fashion_mnist_small")
  augmented = registry.get_experiment("fashion_mnist_small_augmented")
  changed = {name for name, value in augmented.to_dict().items()
             if small.to_dict()[name] != value}
  assert changed == {"name", "train_examples", "augmentation", "crop_padding",
                     "temperature", "divergence_temperature"}
  assert [augmented.get(name) for name in ("train_examples", "augmentation",
                                            "crop_padding", "temperature")] == [
      4000, "crop_flip", 2, 1.0]
  acn = command_line.resolve_config("fashion_mnist_small_augmented", "acn")
  assert acn.get("adv_weight") == ExperimentConfig().get("adv_weight") == 1.0
