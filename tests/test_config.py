"""Config: shipped configs, YAML round trips, and one-line errors for unknown keys, types and ranges."""

import os

import pytest

from mt.config import CONFIG_DIR, Config, ModelConfig, TrainConfig, resolve_config_path
from mt.errors import UserError


SHIPPED = sorted(n[:-5] for n in os.listdir(CONFIG_DIR) if n.endswith(".yaml"))


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_by_name(name):
    config = Config.load(name)
    assert isinstance(config.model, ModelConfig) and isinstance(config.train, TrainConfig)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_states_its_whole_model(name):
    """A shipped config is a model as it was measured: a key it leaves out would follow the defaults
    when they move (as tie_embeddings would have, and tied the rnn-base-cpu reference)."""
    import dataclasses

    import yaml

    with open(resolve_config_path(name), encoding="utf-8") as f:
        stated = set(yaml.safe_load(f)["model"])
    assert {field.name for field in dataclasses.fields(ModelConfig)} <= stated


def test_a_saved_config_loads_back_equal(tmp_path):
    config = Config.load("quickstart")
    config.train.max_minutes, config.model.cell = 7.5, "gru"
    path = str(tmp_path / "snapshot.yaml")
    config.save(path)
    assert Config.load(path) == config


def test_keys_left_out_keep_their_defaults(tmp_path):
    config = Config.load(write(tmp_path, "model:\n  cell: gru\n"))
    assert config.model.cell == "gru" and config.model.dec_units == ModelConfig().dec_units
    assert config.train == TrainConfig()


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    # PyYAML reads 1e-3 (no decimal point) as a string; a user means the number
    config = Config.load(write(tmp_path, "train:\n  learning_rate: 1e-3\n  max_minutes: 2E1\n"))
    assert config.train.learning_rate == pytest.approx(0.001) and config.train.max_minutes == 20.0


@pytest.mark.parametrize("text, words", [
    ("optimizer: {}\n", ["unknown section", "optimizer"]),
    ("model:\n  cells: lstm\n", ["unknown setting", "cells", "c.yaml"]),
    ("train:\n  learning_rate: fast\n", ["train.learning_rate", "expected float", "fast"]),
    ("train:\n  max_steps: 1.5\n", ["train.max_steps", "expected int"]),
    ("train:\n  max_steps: true\n", ["train.max_steps", "expected int"]),
    ("model:\n  input_feeding: 1\n", ["model.input_feeding", "expected bool"]),
    ("model:\n  cell: transformer\n", ["model.cell", "lstm, gru, rnn"]),
    ("model:\n  attention: dot\n  enc_units: 100\n  dec_units: 512\n", ["dot", "2 x enc_units"]),
    ("model:\n  dropout: 1.0\n", ["model.dropout"]),
    ("train:\n  label_smoothing: -0.1\n", ["train.label_smoothing"]),
    ("train:\n  batch_tokens: 0\n", ["train.batch_tokens", "positive"]),
    ("train:\n  patience: -1\n", ["train.patience", "0 or more"]),
    ("train:\n  precision: float8\n", ["train.precision"]),
    ("train:\n  schedule: step\n", ["train.schedule", "cosine"]),
    ("- a\n- b\n", ["expected a mapping"]),
    ("model: [1, 2]\n", ["expected a mapping"]),
    ("model: {cell: lstm\n", ["not valid YAML"]),
])
def test_bad_configs_are_one_line_errors_naming_the_setting(tmp_path, text, words):
    with pytest.raises(UserError) as error:
        Config.load(write(tmp_path, text))
    message = str(error.value)
    assert "\n" not in message
    assert all(word in message for word in words), message


def test_an_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(UserError, match="quickstart") as error:
        resolve_config_path("no-such-config")
    assert "no-such-config" in str(error.value)


def test_none_gives_the_defaults():
    assert Config.load(None) == Config()


def test_a_decay_in_a_config_takes_its_budget_from_the_command_line(tmp_path):
    """A YAML may name a budgeted schedule and leave the budget to `--max-minutes`/`--max-steps`: loading
    it is no error, and the train command checks the budget once the overrides are in."""
    from mt.resume import configured

    path = write(tmp_path, "train:\n  schedule: cosine\n  warmup_steps: 10\n")
    assert Config.load(path).train.schedule == "cosine"
    assert configured(Config, path, {"max_minutes": 20.0}).train.max_minutes == 20.0
    with pytest.raises(UserError, match="train.schedule cosine decays to the end of the budget"):
        configured(Config, path, {})
