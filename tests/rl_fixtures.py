"""Shared builders for the RL and pipeline tests: tiny real models saved to disk, small recipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from reflectrl.agent.models import ModelSpec, load_model, save_model
from reflectrl.envs.base import Observation, StepResult, TextEnv
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


class CountingTaxi(OnPassengerTaxi):
    """OnPassengerTaxi that counts how many instances were ever built (envs must be built once per run)."""

    built = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        CountingTaxi.built += 1


class ChainEnv(TextEnv):
    """A corridor of ``length`` rooms: each room has one right door (which one depends on the room) and one
    wrong door, which ends the episode. The only reward, +1, comes after the last room, so the first
    doors are learned only through the return flowing back over several steps.
    """

    name = "chain"
    DOORS = ("open the red door", "open the blue door")

    def __init__(self, length: int = 3) -> None:
        self.length = length
        self.max_steps = length
        self.room = 0

    def tasks(self, split: str) -> list[int]:
        return list(range(8))

    def _right(self) -> int:
        return (1, 0, 1)[self.room % 3]  # blue, red, blue, ...

    def reset(self, task=None, seed=None) -> Observation:
        self.room, self._done = 0, False
        self._obs = Observation(f"You are in room {self.room + 1} of {self.length}.", list(self.DOORS))
        return self._obs

    def step(self, action_index: int) -> StepResult:
        self.check_action(action_index)
        self._require_running()
        if action_index != self._right():
            self._done = True
            return self._obs, 0.0, True, False, {"success": False}
        self.room += 1
        self._done = self.room == self.length
        self._obs = Observation(f"You are in room {self.room + 1} of {self.length}.", list(self.DOORS))
        return self._obs, 1.0 if self._done else 0.0, self._done, False, {"success": self._done}

    def oracle_action(self) -> int:
        return self._right()

    def invalid_step(self, reply: str) -> StepResult:
        self._done = True
        return self._obs, 0.0, True, False, {"success": False}


def chain_texts() -> list[str]:
    return [f"You are in room {i} of 3. {ChainEnv.DOORS[0]} {ChainEnv.DOORS[1]}" for i in range(1, 5)] * 20


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
    model, tokenizer = load_model(ModelSpec(name="tiny", seed=seed, **TINY), texts=None if tokenizer else taxi_texts(),
                                  tokenizer=tokenizer)
    save_model(model, tokenizer, path)
    return path


def write_recipe(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def cli_in_a_fresh_interpreter(commands: list[list[str]], modules: tuple[str, ...],
                               cwd: Path | None = None) -> tuple[list[int], list[str]]:
    """Each command's exit code from ``main``, all run in one new interpreter, and which of ``modules`` it imported."""
    script = ("import json, sys; from reflectrl.cli import main; "
              f"codes = [main(command) for command in {commands!r}]; "
              f"print(json.dumps([codes, [name for name in {modules!r} if name in sys.modules]]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    codes, imported = json.loads(done.stdout.splitlines()[-1])
    return codes, imported
