"""Recipes map onto dataclasses; every mistake names its key."""

import re
from pathlib import Path

import pytest
import yaml

from reflectrl.config import ConfigError, RunConfig, load_config, save_config
from reflectrl.recipe_yaml import parse_yaml

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
        ("reflection_tokens: 64\nreflector_sft:\n  max_length: 10\n", "reflector_sft.max_length: max_length=10 leaves no room"),
        ("reflection_tokens: 64\nsft:\n  max_length: 65\n", "sft.max_length: max_length=65 leaves no room"),
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
    for text in ("", "# only a comment\n"):
        with pytest.raises(ConfigError, match=r"sets nothing \(it is empty or only comments\)"):
            load_config(write(tmp_path, text))


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


@pytest.mark.parametrize(
    "text, key",
    [
        ("sft:\n  epochs: .inf\n", "sft.epochs"),
        ("rl:\n  lr: .inf\n", "rl.lr"),
        ("rl:\n  clip: .nan\n", "rl.clip"),
        ("sft:\n  batch_size: true\n", "sft.batch_size"),
        ("rl:\n  lr: true\n", "rl.lr"),
        ("eval:\n  greedy: 1\n", "eval.greedy"),
        ("jobs: true\n", "jobs"),
        ("model:\n  n_layer: true\n", "model.n_layer"),
        ("model:\n  lora: {r: true}\n", "model.lora.r"),
        ("model:\n  lora: {dropout: .nan}\n", "model.lora.dropout"),
        ("seed: 18446744073709551616\n", "seed"),
        ("seed: 4294967296\n", "seed"),
        ("model:\n  seed: -1\n", "model.seed"),
        ("sft:\n  max_length: 9223372036854775808\n", "sft.max_length"),
    ],
)
def test_numbers_are_finite_in_range_and_not_booleans(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"(^|; ){re.escape(key)}: "):
        load_config(write(tmp_path, text))


def test_a_key_given_twice_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="'lr' is given twice"):
        load_config(write(tmp_path, "rl:\n  lr: 0.1\n  iterations: 2\n  lr: 0.2\n"))
    with pytest.raises(ConfigError, match="'rl' is given twice"):
        load_config(write(tmp_path, "rl: {lr: 0.1}\nname: x\nrl: {iterations: 2}\n"))
    with pytest.raises(yaml.YAMLError, match="given twice"):
        parse_yaml("{stage: pickup, stage: full}")


def test_an_exponent_without_a_dot_is_a_number():
    assert parse_yaml("1e-3") == 0.001 and parse_yaml("-2E5") == -200000.0
    assert parse_yaml("1.5e-3") == 0.0015 and parse_yaml("12") == 12 and parse_yaml("e5") == "e5"


def test_unknown_env_and_model_names_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"env\.name: unknown env; known envs: .*taxi"):
        load_config(write(tmp_path, "env:\n  name: nosuch\n"))
    assert load_config(write(tmp_path, "env:\n  name: rl_fixtures:ChainEnv\n")).env.name == "rl_fixtures:ChainEnv"
    with pytest.raises(ConfigError, match=r"^model: name 'no-such-model' is neither .*allow_hub"):
        load_config(write(tmp_path, "model:\n  name: no-such-model\n"))
    with pytest.raises(ConfigError, match=r"^reflector_model: name '/nowhere/at/all'"):
        load_config(write(tmp_path, "reflector_model:\n  name: /nowhere/at/all\n"))
    # a folder that holds no model is named; a model folder, or a hub id the user lets it download,
    # is taken without loading anything
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(ConfigError, match=rf"^model: the folder '{folder}' holds no model: .*config\.json"):
        load_config(write(tmp_path, f"model:\n  name: {folder}\n"))
    (folder / "config.json").write_text("{}")
    assert load_config(write(tmp_path, f"model:\n  name: {folder}\n")).model.name == str(folder)
    assert load_config(write(tmp_path, "model: {name: org/some-model, allow_hub: true}\n")).model.allow_hub


def test_a_run_directory_that_cannot_be_made_is_named_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    for out_dir in ("a_file", "a_file/deeper"):
        with pytest.raises(ConfigError, match=rf"out_dir/name: the run directory cannot be made: {tmp_path / 'a_file'} is a file"):
            load_config(write(tmp_path, f"name: x\nout_dir: {tmp_path / out_dir}\n"))
    assert load_config(write(tmp_path, f"name: x\nout_dir: {tmp_path / 'new' / 'runs'}\n")).run_dir.parent.name == "runs"
    # a name is one folder under out_dir: one that is out_dir itself or climbs out of it is refused
    for name in ("..", ".", "../../elsewhere", "a/b", "a\\\\b", "\"tab\\there\""):
        with pytest.raises(ConfigError, match="name: must be a plain folder name"):
            load_config(write(tmp_path, f"name: {name}\nout_dir: {tmp_path / 'runs'}\n"))
    assert load_config(write(tmp_path, f"name: a b-1.2\nout_dir: {tmp_path / 'runs'}\n")).run_dir.name == "a b-1.2"


def test_quoting_reads_is_a_setting_of_the_autoexplore_oracle_and_leaves_older_data_valid(tmp_path):
    from reflectrl.pipeline import data_fingerprint

    for text, message in (("teacher: {quote_reads: true}\n", "only the oracle teacher of autoexplore"),
                          ("env: {name: autoexplore}\nteacher: {kind: openai, quote_reads: true}\n",
                           "only the oracle teacher of autoexplore"),
                          ("eval: {endpoint: {quote_reads: true}}\n", "eval.endpoint.quote_reads: a setting"),
                          ("env: {name: autoexplore, kwargs: {expert: search}}\nteacher: {quote_reads: true}\n",
                           "the teacher of the search expert")):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, text))
    plain = load_config(write(tmp_path, "env: {name: autoexplore}\n"))
    quoting = load_config(write(tmp_path, "env: {name: autoexplore}\nteacher: {quote_reads: true}\n"))
    # at its default the key is not part of the data step's fingerprint: runs made before it existed stay valid
    assert "quote_reads" not in data_fingerprint(plain)["parts"]["teacher"]
    assert data_fingerprint(quoting)["parts"]["teacher"]["quote_reads"] is True
    assert data_fingerprint(quoting)["hash"] != data_fingerprint(plain)["hash"]


def test_plausible_negatives_change_the_data_step_and_random_ones_leave_older_data_valid(tmp_path):
    from reflectrl.pipeline import data_fingerprint

    with pytest.raises(ConfigError, match=r"data.negatives: Input should be 'random' or 'plausible' \(got 'nearest'\)"):
        load_config(write(tmp_path, "data: {negatives: nearest}\n"))
    plain = load_config(write(tmp_path, "env: {name: autoexplore}\n"))
    plausible = load_config(write(tmp_path, "env: {name: autoexplore}\ndata: {negatives: plausible}\n"))
    assert plain.data.negatives == "random" and "negatives" not in data_fingerprint(plain)["parts"]["data"]
    assert data_fingerprint(plausible)["parts"]["data"]["negatives"] == "plausible"
    assert data_fingerprint(plausible)["hash"] != data_fingerprint(plain)["hash"]


def test_keys_the_algorithm_would_ignore_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"reflector_sft\.shuffle_ids: unknown key"):
        load_config(write(tmp_path, "reflector_sft:\n  shuffle_ids: false\n"))
    for algorithm in ("ppo", "group"):
        for key, value in (("baseline", "mean"), ("replay_size", 10), ("replay_batch", 4)):
            with pytest.raises(ConfigError, match=rf"^rl: {key}: used by algorithm reinforce only, not {algorithm}"):
                load_config(write(tmp_path, f"rl:\n  algorithm: {algorithm}\n  {key}: {value}\n"))
    for batch in (2, 6):
        with pytest.raises(ConfigError, match=rf"rl: batch_episodes \({batch}\) must be a multiple of group_size \(4\)"):
            load_config(write(tmp_path, f"rl:\n  algorithm: group\n  batch_episodes: {batch}\n  group_size: 4\n"))
    reinforce = load_config(write(tmp_path, "rl:\n  algorithm: reinforce\n")).rl
    assert (reinforce.baseline, reinforce.replay_size, reinforce.replay_batch) == ("none", 50, 16)


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo", "group"])
def test_the_recipe_saved_beside_a_run_loads_again(tmp_path, algorithm):
    config = load_config(write(tmp_path, f"rl:\n  algorithm: {algorithm}\nreflector_sft:\n  lr: 0.01\n"))
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config
