"""Shared builders for the RL and pipeline tests: tiny real models saved to disk, small recipes."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from reflectrl.agent.models import ModelSpec, load_model, save_model
from reflectrl.envs.registry import make_env
from reflectrl.envs.taxi import DangerousTaxi, decode
from reflectrl.eval.baselines import RandomAgent, play_episode
from reflectrl.teachers.oracle import OracleTeacher

TINY = dict(n_layer=2, n_embd=64, n_head=2, n_positions=512, vocab_size=1024)


class OnPassengerTaxi(DangerousTaxi):
    """Taxi pickup starting on the passenger's cell: picking up at once is the whole task."""

    def tasks(self, split: str) -> list[int]:
        return [s for s in super().tasks(split) if decode(s)[:2] == _depot_of(s)]


def _depot_of(state: int) -> tuple[int, int]:
    from reflectrl.envs.taxi import depot_cell

    return depot_cell(decode(state)[2])




def taxi_texts(episodes: int = 40) -> list[str]:
    """Observation texts and teacher reflections to train the tiny tokenizer on."""
    teacher = OracleTeacher("taxi", seed=0)
    texts = []
    for stage in ("pickup", "dropoff", "full"):
        env = make_env("taxi", stage=stage)
        for seed in range(episodes // 3):
            def keep(observation, action, reward):
                texts.append(observation.text)
                texts.append(teacher.reflect(observation, [], observation.actions[env.oracle_action()], False))
            play_episode(env, RandomAgent(seed), seed=seed, on_step=keep)
    return texts


def save_tiny(path: Path, seed: int = 0, tokenizer=None) -> Path:
    torch.manual_seed(seed)
    model, tokenizer = load_model(ModelSpec(name="tiny", **TINY), texts=None if tokenizer else taxi_texts(),
                                  tokenizer=tokenizer)
    save_model(model, tokenizer, path)
    return path


def write_recipe(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path
