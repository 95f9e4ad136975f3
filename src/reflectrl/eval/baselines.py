"""Agents that need no model: random, oracle, and a human at the keyboard.

They share one tiny interface, ``act(env, observation) -> (index | None, reply)``;
``None`` means the reply named no valid action, and the caller applies the
env's invalid-action step. Model agents are batched and live in ``agent.rollout``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from reflectrl.agent.prompts import enumerate_actions
from reflectrl.envs.action_parser import parse_action
from reflectrl.envs.base import Observation, TextEnv
from reflectrl.errors import UserError


class Agent(Protocol):
    """What ``play_episode`` and ``evaluate_agent`` drive: every sequential agent, the endpoint one included.

    ``env`` is passed so privileged agents (the oracle) can ask it; an agent that
    sees only what a model would see ignores it, but takes it all the same.
    """

    def act(self, env: TextEnv, observation: Observation) -> tuple[int | None, str]: ...


class RandomAgent:
    """Uniform over the valid actions: the floor every learned agent must beat."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def act(self, env: TextEnv, observation: Observation) -> tuple[int | None, str]:
        index = self.rng.randrange(len(observation.actions))
        return index, observation.actions[index]


class OracleAgent:
    """The env's privileged best action: the ceiling."""

    def act(self, env: TextEnv, observation: Observation) -> tuple[int | None, str]:
        index = env.oracle_action()
        return index, observation.actions[index]


class HumanAgent:
    """Reads an action id (or action text) typed by a person, who sees the state first, as a model does."""

    def __init__(self, read: Callable[[str], str] = input) -> None:
        self.read = read

    def act(self, env: TextEnv, observation: Observation) -> tuple[int | None, str]:
        print(observation.text)
        print(enumerate_actions(observation.actions), end="")
        while True:
            try:
                reply = self.read("action> ")
            except EOFError:
                raise UserError("the input ended before the episode did: no action was chosen") from None
            parsed = parse_action(reply, observation.actions)
            if parsed.valid:
                return parsed.index, reply
            print(f"  {parsed.error}; type one of the ids above")


@dataclass
class EpisodeResult:
    success: bool
    episode_return: float
    steps: int
    invalid_actions: int
    actions: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    #: one entry per step, as ``eval.episodes`` writes it: observation, actions, choice, reward
    transcript: list[dict[str, Any]] = field(default_factory=list)
    final_observation: str = ""
    #: the horizon ended the episode (not the env's own end: a goal, a crash, an answer)
    truncated: bool = False


def play_episode(
    env: TextEnv,
    agent: Agent,
    task: Any = None,
    seed: int | None = None,
    on_step: Callable[[Observation, str, float], None] | None = None,
) -> EpisodeResult:
    """One episode of a sequential agent; ``on_step(obs, action_text, reward)`` sees every step."""
    observation = env.reset(task=task, seed=seed)
    total, steps, invalid, taken, transcript = 0.0, 0, 0, [], []
    info: dict[str, Any] = {}
    done = False
    while not done:
        index, reply = agent.act(env, observation)
        if index is None:
            invalid += 1
            action_text = reply
            next_obs, reward, terminated, truncated, info = env.invalid_step(reply)
        else:
            action_text = observation.actions[index]
            next_obs, reward, terminated, truncated, info = env.step(index)
        if on_step is not None:
            on_step(observation, action_text, reward)
        transcript.append({"observation": observation.text, "reflection": None, "actions": list(observation.actions),
                           "action": index, "action_text": action_text, "probability": None, "reward": float(reward)})
        taken.append(action_text)
        total += reward
        steps += 1
        observation = next_obs
        done = terminated or truncated
    return EpisodeResult(bool(info.get("success", False)), total, steps, invalid, taken, info, transcript,
                         observation.text, bool(truncated and not terminated))
