"""Recipes map onto dataclasses; every mistake names its key."""

from pathlib import Path

import pytest

from reflectrl.config import ConfigError, RunConfig, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_values_land_in_nested_dataclasses(tmp_path):
    config = load_config(write(tmp_path, "name: x\nrl:\n  lr: 0.001\n  iterations: 7\nmodel:\n  n_layer: 2\n"))
    assert isinstance(config, RunConfig)
    assert config.rl.lr == 0.001 and config.rl.iterations == 7 and config.model.n_layer == 2
    assert config.run_dir == Path("runs/x")


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"rl\.learning_rate"):
        load_config(write(tmp_path, "rl:\n  learning_rate: 0.1\n"))
    with pytest.raises(ConfigError, match="bogus"):
        load_config(write(tmp_path, "bogus: 1\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("rl:\n  lr: fast\n", "rl.lr"),
        ("rl:\n  iterations: 2.5\n", "rl.iterations"),
        ("rl:\n  algorithm: a2c\n", "rl.algorithm"),
        ("sft:\n  shuffle_ids: maybe\n", "sft.shuffle_ids"),
        ("env: taxi\n", "env"),
        ("ablations: some\n", "ablations"),
        ("curriculum:\n  levels: [{stage: pickup}, {stage: full}]\n  weights: [1]\n", "curriculum: weights"),
        ("curriculum:\n  weights: [0]\n", "curriculum: weights"),
    ],
)
def test_bad_values_are_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_overrides_and_missing_file(tmp_path):
    config = load_config(write(tmp_path, "name: x\n"), {"rl.iterations": 3, "eval.episodes": 5})
    assert config.rl.iterations == 3 and config.eval.episodes == 5
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_recipes_are_valid(path):
    assert load_config(path).name


@pytest.mark.parametrize("threads", [1, 2])
def test_step_commands_run_at_the_recipes_thread_count(tmp_path, threads):
    """`reflectrl data/sft/rl/eval` apply `threads` as `run` does: an SFT result moves with the thread count."""
    import torch

    from reflectrl.cli import main

    recipe = write(tmp_path, f"name: t\nout_dir: {tmp_path / 'runs'}\nthreads: {threads}\n"
                             "env: {name: taxi}\ndata: {episodes: 2}\n")
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert main(["data", "--config", str(recipe)]) == 0
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
