"""Two-player episodes, B environments in lock-step.

Each round: the frozen reflector writes one analysis per live env (one batched
generation), the policy scores every valid action of every live env (one
forward), each env steps; finished envs drop out of the batch. The same loop
serves data collection for RL and evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from reflectrl.agent.policy import ActionPolicy
from reflectrl.agent.prompts import policy_prompt
from reflectrl.agent.reflector import Reflector
from reflectrl.envs.base import TextEnv


@dataclass
class StepRecord:
    """What the learner needs to recompute this step's log-prob under the current policy."""

    prompt: str
    ids: list[str]
    action: int
    log_prob: float
    entropy: float
    reward: float
    done: bool
    reflection: str | None
    action_text: str


@dataclass
class Episode:
    task: Any
    seed: int
    steps: list[StepRecord] = field(default_factory=list)
    success: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def episode_return(self) -> float:
        return sum(step.reward for step in self.steps)

    def __len__(self) -> int:
        return len(self.steps)


def rollout(
    envs: list[TextEnv],
    tasks: list[Any],
    seeds: list[int],
    policy: ActionPolicy,
    reflector: Reflector | None = None,
    greedy: bool = False,
    temperature: float = 1.0,
    shuffle_ids: bool = False,
    rng: random.Random | None = None,
    generator: torch.Generator | None = None,
) -> list[Episode]:
    """Play one episode in each env (``envs[i]`` on ``tasks[i]`` with ``seeds[i]``), batched."""
    if not len(envs) == len(tasks) == len(seeds):
        raise ValueError(f"rollout needs as many tasks and seeds as envs: {len(envs)}, {len(tasks)}, {len(seeds)}")
    rng = rng or random.Random(0)
    observations = [env.reset(task=task, seed=seed) for env, task, seed in zip(envs, tasks, seeds)]
    episodes = [Episode(task, seed) for task, seed in zip(tasks, seeds)]
    live = list(range(len(envs)))
    while live:
        states = [observations[i].text for i in live]
        reflections = reflector.reflect(states) if reflector is not None else [None] * len(live)
        labels = [policy.ids_for(len(observations[i].actions), rng if shuffle_ids else None) for i in live]
        prompts = [
            policy_prompt(observations[i].text, observations[i].actions, reflection, ids)
            for i, reflection, ids in zip(live, reflections, labels)
        ]
        choices = policy.act(prompts, labels, greedy=greedy, temperature=temperature, generator=generator)
        still = []
        for i, prompt, ids, reflection, choice in zip(live, prompts, labels, reflections, choices):
            action_text = observations[i].actions[choice.index]
            observation, reward, terminated, truncated, info = envs[i].step(choice.index)
            done = terminated or truncated
            episodes[i].steps.append(StepRecord(
                prompt, ids, choice.index, choice.log_prob, choice.entropy, float(reward), done, reflection, action_text,
            ))
            observations[i] = observation
            if done:
                episodes[i].success = bool(info.get("success", False))
                episodes[i].info = dict(info)
            else:
                still.append(i)
        live = still
    return episodes


def returns_to_go(rewards: list[float], gamma: float = 1.0) -> list[float]:
    """Monte-Carlo return from each step to the episode's end."""
    out, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out
