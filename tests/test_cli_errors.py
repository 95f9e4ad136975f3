"""Every user error on the command line is one line naming the key or file, with exit code 2; --debug shows more."""

from __future__ import annotations

import io

import pytest

from reflectrl.agent.models import ModelNotFoundError, ModelSpec
from reflectrl.agent.policy import ActionTokenError
from reflectrl.cli import UsageError, main
from reflectrl.config import ConfigError, load_config
from reflectrl.envs import registry
from reflectrl.errors import UserError
from reflectrl.pipeline import StaleOutputError
from reflectrl.teachers.openai_compat import EndpointError

from rl_fixtures import ChainEnv, save_tiny, write_recipe


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
    ({"env": {"name": "taxi", "kwargs": {"max_steps": "ten"}}}, "argument 'max_steps' must be int, got \"ten\""),
    ({"env": {"name": "taxi", "kwargs": {"max_steps": True}}}, "argument 'max_steps' must be int, got true"),
    ({"env": {"name": "autoexplore", "kwargs": {"tasks_path": 5}}},
     "argument 'tasks_path' must be str or PathLike[str] or None, got 5"),
    ({"env": {"name": "autoexplore", "kwargs": {"hide_unrelated_prob": [0.5]}}},
     "argument 'hide_unrelated_prob' must be float, got [0.5]"),
])
def test_a_bad_recipe_value_is_named(capsys, recipe, values, named):
    assert named in _error(capsys, ["eval", "--config", recipe(**values), "--agent", "random"])


def test_a_run_directory_under_a_file_and_a_model_folder_without_tokenizer_are_named(capsys, recipe, tmp_path):
    (tmp_path / "notes.txt").write_text("a user's file")
    assert "notes.txt is a file" in _error(capsys, ["run", "--config", recipe(), "--set", f"out_dir={tmp_path}/notes.txt"])
    assert (tmp_path / "notes.txt").read_text() == "a user's file"
    model = save_tiny(tmp_path / "model")
    for path in model.glob("tokenizer*"):
        path.unlink()
    line = _error(capsys, ["run", "--config", recipe(), "--set", f"model.name={model}"])
    assert f"saved in {model}" in line and "turns text into no tokens" in line


def test_yaml_exponent_without_a_dot_is_a_number(recipe):
    assert load_config(recipe(rl={"lr": "1e-3"})).rl.lr == 0.001


def test_a_bad_set_value_and_a_bad_set_key_are_named(capsys, recipe):
    assert "rl.lr" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--set", "rl.lr=[1,"])
    assert "rl.lrr" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--set", "rl.lrr=1"])


def test_out_must_be_a_file_and_episodes_positive(capsys, recipe, tmp_path):
    assert f"--out: {tmp_path} is a folder" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random",
                                                               "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main(["play", "--env", "taxi", "--episodes", "0"])
    assert exit_.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_a_truncated_model_names_its_directory(capsys, recipe, tmp_path):
    saved = save_tiny(tmp_path / "policy")
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()  # what saving printed
    assert str(saved) in _error(capsys, ["eval", "--config", recipe(), "--policy", str(saved)])


def test_a_model_that_reads_fewer_positions_than_the_prompt_budget_is_named(capsys, recipe, tmp_path):
    from reflectrl.agent.models import load_model
    from reflectrl.agent.reflector import Reflector

    saved = save_tiny(tmp_path / "policy")  # 512 positions, against the recipe's sft.max_length of 1024
    capsys.readouterr()  # what saving printed
    line = _error(capsys, ["eval", "--config", recipe(), "--agent", "model", "--policy", str(saved)])
    assert "the policy's model reads at most 512 positions, fewer than its prompt budget max_length=1024" in line
    assert "set the recipe's sft.max_length to 512 or less" in line
    model, tokenizer = load_model(ModelSpec(name=str(saved)))
    with pytest.raises(UserError, match="the reflector's model reads at most 512 positions"):
        Reflector(model, tokenizer, max_length=1024)
    with pytest.raises(ConfigError, match=r"sft.max_length: 1024 positions, more than the tiny model reads "
                                          r"\(model.n_positions: 512\)"):
        load_config(recipe(model={"name": "tiny", "n_positions": 512}))


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


def test_a_set_value_is_as_strict_as_the_recipe(capsys, recipe):
    for pair, named in (("sft.epochs=.inf", "sft.epochs"), ("rl.iterations=true", "rl.iterations"),
                        ("seed=18446744073709551616", "seed")):
        assert named in _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--set", pair])
    assert "given twice" in _error(capsys, ["eval", "--config", recipe(), "--agent", "random",
                                            "--set", "env.kwargs={stage: pickup, stage: full}"])


def test_an_unknown_env_fails_before_anything_is_written(capsys, recipe, tmp_path):
    assert "env.name" in _error(capsys, ["run", "--config", recipe(name="r", env={"name": "nosuch"})])
    assert not (tmp_path / "runs").exists()


def test_a_user_envs_arguments_are_checked_against_its_own_annotations(capsys, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "chain", ChainEnv)
    line = _error(capsys, ["play", "--env", "chain", "--agent", "random", "--env-arg", "length=[3]"])
    assert line.startswith("error: env 'chain': argument 'length' must be int, got [3]")

    def unreadable(length: "NotImportableHere" = 3) -> ChainEnv:  # noqa: F821 - an annotation nothing defines
        return ChainEnv(length)

    monkeypatch.setitem(registry._REGISTRY, "loose", unreadable)
    assert registry.make_env("loose", length=2).length == 2  # an annotation that cannot be read checks nothing


def test_bad_paths_on_the_command_line_are_named(capsys, recipe, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("")
    assert f"{out} is a file" in _error(capsys, ["rl", "--config", recipe(), "--policy", str(tmp_path), "--out", str(out)])
    # outputs under a file are named before the evaluation or summary that would fill them
    line = _error(capsys, ["eval", "--config", recipe(), "--agent", "random", "--out", f"{out}/metrics.json"])
    assert line.startswith(f"error: --out: {out} is a file, so {out}/metrics.json cannot be made under it")
    assert f"--cache-dir: {out} is a file" in _error(capsys, ["eval", "--config", recipe(), "--agent", "endpoint",
                                                              "--cache-dir", str(out)])
    assert f"--out: {out} is a file" in _error(capsys, ["summarize", str(tmp_path), "--out", str(out)])
    assert out.read_text() == ""
    missing = tmp_path / "no-policy"
    assert str(missing) in _error(capsys, ["eval", "--config", recipe(), "--policy", str(missing)])
    (tmp_path / "notes").mkdir()
    assert f"the folder {tmp_path / 'notes'} holds no model: a model folder has a config.json" in \
        _error(capsys, ["eval", "--config", recipe(), "--policy", str(tmp_path / "notes")])
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("{not json\n")
    assert f"{tasks}: line 1" in _error(capsys, ["play", "--env", "autoexplore", "--agent", "random",
                                                 "--env-arg", f"tasks_path={tasks}"])


@pytest.mark.parametrize("error", [ConfigError, UsageError, StaleOutputError, ActionTokenError, EndpointError,
                                   ModelNotFoundError])
def test_errors_a_user_can_fix_are_user_errors(error):
    assert issubclass(error, UserError)


class BrokenChain(ChainEnv):
    """A chain whose first step fails as the machine or a bug fails, not as a user's mistake does."""

    def __init__(self, failure: str = "runtime") -> None:
        super().__init__()
        self.failure = failure

    def step(self, action_index: int):
        raise RuntimeError("CUDA out of memory") if self.failure == "runtime" else KeyError("internal")


@pytest.mark.parametrize("failure, kind", [("runtime", RuntimeError), ("key", KeyError)])
def test_a_failure_that_is_not_the_users_keeps_its_traceback(capsys, monkeypatch, failure, kind):
    monkeypatch.setitem(registry._REGISTRY, "broken", BrokenChain)
    with pytest.raises(kind):
        main(["play", "--env", "broken", "--agent", "random", "--env-arg", f"failure={failure}"])
    assert "error:" not in capsys.readouterr().err


def test_a_human_player_sees_each_state_before_choosing(capsys, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "chain", ChainEnv)
    monkeypatch.setattr("sys.stdin", io.StringIO("1\n0\n1\n"))
    assert main(["play", "--env", "chain", "--agent", "human"]) == 0
    screens = capsys.readouterr().out.split("action> ")
    assert len(screens) == 4
    for room, screen in enumerate(screens[:3], 1):
        # the state the choice is made in, then its actions, and no state after them
        assert screen.endswith(f"You are in room {room} of 3.\n0. open the red door\n1. open the blue door\n")
    assert "success=1.00" in screens[-1]


def test_a_human_players_input_that_ends_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "chain", ChainEnv)
    monkeypatch.setattr("sys.stdin", io.StringIO("1\n"))
    assert "input ended" in _error(capsys, ["play", "--env", "chain", "--agent", "human"])


def test_plausible_negatives_on_an_env_without_a_plausibility_measure_are_refused_and_leave_no_data(capsys, recipe,
                                                                                                   tmp_path):
    line = _error(capsys, ["data", "--config", recipe(name="r"), "--set", "data.negatives=plausible"])
    assert "has no plausibility measure" in line and "data.negatives: random" in line
    assert not (tmp_path / "runs" / "r" / "data" / "done.json").exists()
