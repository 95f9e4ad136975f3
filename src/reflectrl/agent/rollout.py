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
    #: the episode ended here on its own (goal, crash); a bootstrapped return must stop here
    terminated: bool
    #: the episode was cut here by the horizon; the state after it still has a value
    truncated: bool
    reflection: str | None
    action_text: str
    #: the state the step was chosen in and its valid actions, as the env showed them (for transcripts)
    observation: str = ""
    actions: list[str] = field(default_factory=list)
    #: with ``rollout(judge=True)``: the env's good actions in this state (None where its oracle has
    #: none: the step is not judged) and the action the reflection names (None: it names none)
    good: list[int] | None = None
    named: int | None = None

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass
class Episode:
    task: Any
    seed: int
    steps: list[StepRecord] = field(default_factory=list)
    success: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    #: for an episode cut by the horizon: the policy prompt and ids of the state it was cut in
    #: (what a critic bootstraps from); filled only when ``rollout(final_prompts=True)``
    final_prompt: str | None = None
    final_ids: list[str] | None = None
    #: what the env showed after the last step (its verdict: a crash, the answer, out of time)
    final_observation: str = ""

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
    final_prompts: bool = False,
    judge: bool = False,
) -> list[Episode]:
    """Play one episode in each env (``envs[i]`` on ``tasks[i]`` with ``seeds[i]``), batched.

    ``final_prompts``: also write the policy prompt of the state each truncated episode
    was cut in (with its reflection), so a critic can bootstrap the return from there.
    ``judge``: record at every step which actions the env counts as good and which one the
    reflection names (evaluation's transcripts: was the reflection wrong, or not followed?).
    """
    if not len(envs) == len(tasks) == len(seeds):
        raise ValueError(f"rollout needs as many tasks and seeds as envs: {len(envs)}, {len(tasks)}, {len(seeds)}")
    rng = rng or random.Random(0)
    observations = [env.reset(task=task, seed=seed) for env, task, seed in zip(envs, tasks, seeds)]
    episodes = [Episode(task, seed) for task, seed in zip(tasks, seeds)]
    live = list(range(len(envs)))
    cut: list[int] = []
    while live:
        prompts, labels, reflections = _prompts([observations[i] for i in live], policy, reflector,
                                                rng if shuffle_ids else None)
        choices = policy.act(prompts, labels, greedy=greedy, temperature=temperature, generator=generator)
        still = []
        for i, prompt, ids, reflection, choice in zip(live, prompts, labels, reflections, choices):
            action_text = observations[i].actions[choice.index]
            good, named = _judge(envs[i], reflection) if judge else (None, None)
            observation, reward, terminated, truncated, info = envs[i].step(choice.index)
            done = terminated or truncated
            episodes[i].steps.append(StepRecord(
                prompt, ids, choice.index, choice.log_prob, choice.entropy, float(reward), bool(terminated),
                bool(truncated and not terminated), reflection, action_text,
                observations[i].text, list(observations[i].actions), good, named,
            ))
            observations[i] = observation
            if done:
                episodes[i].success = bool(info.get("success", False))
                episodes[i].info = dict(info)
                episodes[i].final_observation = observation.text
                if truncated and not terminated:
                    cut.append(i)
            else:
                still.append(i)
        live = still
    if final_prompts and cut:
        prompts, labels, _ = _prompts([observations[i] for i in cut], policy, reflector, rng if shuffle_ids else None)
        for i, prompt, ids in zip(cut, prompts, labels):
            episodes[i].final_prompt, episodes[i].final_ids = prompt, ids
    return episodes


def _judge(env: TextEnv, reflection: str | None) -> tuple[list[int] | None, int | None]:
    """The env's good actions in its current state (None where its oracle has none) and the one the reflection names."""
    try:
        good = sorted(env.good_actions())
    except RuntimeError:
        good = None
    named = env.reflection_action(reflection, env.observation.actions) if reflection is not None else None
    return good, named


def _prompts(
    observations: list[Any], policy: ActionPolicy, reflector: Reflector | None, rng: random.Random | None
) -> tuple[list[str], list[list[str]], list[str | None]]:
    """The policy prompts of a batch of states: one batched reflection each, then the labelled action list."""
    reflections = reflector.reflect([o.text for o in observations]) if reflector is not None else [None] * len(observations)
    labels = [policy.ids_for(len(o.actions), rng) for o in observations]
    prompts = [policy_prompt(o.text, o.actions, reflection, ids)
               for o, reflection, ids in zip(observations, reflections, labels)]
    return prompts, labels, reflections
