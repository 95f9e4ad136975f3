"""SFT of the two players on oracle-teacher data for the real DangerousTaxi, with tiny real models."""

from __future__ import annotations

import re

import pytest
import torch

from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.agent.reflector import Reflector
from reflectrl.config import SFTConfig
from reflectrl.data.sft_sets import build_sets
from reflectrl.data.trajectories import generate_examples
from reflectrl.envs.registry import make_env
from reflectrl.teachers.oracle import OracleTeacher
from reflectrl.train.sft import train_sft

from rl_fixtures import TINY

DIRECTION = re.compile(r"\b(south|north|east|west|pick up|drop off)\b")


def _examples(split: str, episodes: int, seed: int):
    env = make_env("taxi", stage="pickup")
    return list(generate_examples(env, OracleTeacher("taxi", seed), env.tasks(split), episodes, 0.3, 1, seed=seed))


@pytest.fixture(scope="module")
def data():
    train, val = build_sets(_examples("train", 150, 0)), build_sets(_examples("val", 30, 1))
    texts = [r["prompt"] + r["completion"] for r in train["reflection"]]
    torch.manual_seed(0)
    _, tokenizer = load_model(ModelSpec(name="tiny", **TINY), texts=texts)
    return train, val, tokenizer


def _fresh(tokenizer, seed: int):
    torch.manual_seed(seed)
    model, _ = load_model(ModelSpec(name="tiny", **{**TINY, "n_layer": 2, "n_embd": 96, "n_head": 3}),
                          tokenizer=tokenizer)
    return model


def test_policy_sft_reaches_90_percent_action_accuracy_on_held_out_states(tmp_path, data):
    train, val, tokenizer = data
    config = SFTConfig(epochs=4, lr=2e-3, batch_size=32, max_length=512, shuffle_ids=False, eval_every=0)
    metrics = train_sft(_fresh(tokenizer, 1), tokenizer, train["policy"], val["policy"], config, tmp_path, "policy")
    assert metrics["val_action_accuracy"] >= 0.9, metrics
    assert (tmp_path / "sft_metrics.json").exists() and (tmp_path / "logs" / "metrics.jsonl").exists()
    reloaded, _ = load_model(ModelSpec(name=str(tmp_path)))
    assert sum(p.numel() for p in reloaded.parameters()) > 0


def test_reflector_sft_gives_the_oracle_direction_on_most_held_out_states(tmp_path, data):
    train, val, tokenizer = data
    config = SFTConfig(epochs=6, lr=2e-3, batch_size=32, max_length=512, eval_every=0)
    model = _fresh(tokenizer, 2)
    metrics = train_sft(model, tokenizer, train["reflection"], val["reflection"], config, tmp_path, "reflection")
    assert metrics["val_loss"] < 2.0, metrics
    rows = [r for r in val["reflection"] if not r["negative"]][:40]
    reflector = Reflector(model, tokenizer, max_new_tokens=48)
    states = [r["prompt"].split("\n # Analyze:")[0] for r in rows]
    outputs = reflector.reflect(states)
    agree = sum(DIRECTION.findall(out)[-1:] == DIRECTION.findall(row["completion"])[-1:]
                for out, row in zip(outputs, rows))
    assert agree / len(rows) >= 0.6, (agree, outputs[:5])
