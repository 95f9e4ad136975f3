"""Every user error on the command line is one line naming the key or file, with exit code 2; --debug shows more."""

from __future__ import annotations

import pytest

from reflectrl.cli import main
from reflectrl.config import load_config

from rl_fixtures import save_tiny, write_recipe


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def recipe(tmp_path):
    def make(**values) -> str:
        return str(write_recipe(tmp_path / "recipe.yaml", {"out_dir": str(tmp_path / "runs"),
                                                          "eval": {"episodes": 2}, **values}))
    return make


@pytest.mark.parametrize("values, named", [
    ({"sft": {"batch_size": 0}}, "sft.batch_size"),
    ({"rl": {"lr": -0.001}}, "rl.lr"),
    ({"rl": {"epochs": 2}}, "rl.epochs"),
    ({"data": {"random_action_prob": 1.5}}, "data.random_action_prob"),
    ({"reflection_probability": 2}, "reflection_probability"),
    ({"env": {"name": "taxi", "kwargs": {"stagee": "pickup"}}}, "stagee"),
    ({"env": {"name": "taxi", "kwargs": {"stage": "lunch"}}}, "lunch"),
])
def test_a_bad_recipe_value_is_named(capsys, recipe, values, named):
    assert named in _error(capsys, ["eval", "--config", recipe(**values), "--agent", "random"])


def test_yaml_exponent_without_a_dot_is_a_number(recipe):
    assert load_config(recipe(rl={"lr": "1e-3"})).rl.lr == 0.001


def test_a_bad_set_value_and_a_bad_set_key_are_named(capsys, recipe):
    assert "rl.lr" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--set", "rl.lr=[1,"])
    assert "rl.lrr" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--set", "rl.lrr=1"])


def test_out_must_be_a_file_and_episodes_positive(capsys, recipe, tmp_path):
    assert "is a directory" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main(["play", "--env", "taxi", "--episodes", "0"])
    assert exit_.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_a_truncated_model_names_its_directory(capsys, recipe, tmp_path):
    saved = save_tiny(tmp_path / "policy")
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert str(saved) in _error(capsys, ["eval", "--config", recipe(), "--policy", str(saved)])


def test_a_truncated_run_file_names_itself(capsys, recipe, tmp_path):
    path = recipe(name="broken", data={"episodes": 2})
    assert main(["data", "--config", path]) == 0
    capsys.readouterr()
    fingerprint = tmp_path / "runs" / "broken" / "data" / "fingerprint.json"
    fingerprint.write_text(fingerprint.read_text()[:20])
    assert str(fingerprint) in _error(capsys, ["data", "--config", path])


def test_debug_shows_the_traceback(recipe):
    with pytest.raises(ValueError, match="stagee"):
        main(["--debug", "eval", "--config", recipe(env={"name": "taxi", "kwargs": {"stagee": 1}}), "--agent", "random"])
    with pytest.raises(ValueError, match="stagee"):
        main(["eval", "--debug", "--config", recipe(env={"name": "taxi", "kwargs": {"stagee": 1}}), "--agent", "random"])
