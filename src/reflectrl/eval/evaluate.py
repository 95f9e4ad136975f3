"""Evaluation on held-out tasks, the same way for every arm.

Every agent (random, oracle, a checkpoint with or without its reflector, an
OpenAI-compatible endpoint) plays the same held-out tasks of each curriculum
level; results carry a Wilson 95% interval so small differences are not
over-read.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from reflectrl.envs.base import TextEnv, check_action_limit
from reflectrl.envs.registry import make_env
from reflectrl.errors import UserError
from reflectrl.eval.baselines import Agent, EpisodeResult, play_episode
from reflectrl.eval.episodes import agent_record, rollout_record
from reflectrl.eval.intervals import wilson_interval


@dataclass
class Metrics:
    success: float
    success_ci: tuple[float, float]
    episode_return: float
    steps: float
    invalid_rate: float | None
    episodes: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["return"] = data.pop("episode_return")
        data["success_ci"] = list(self.success_ci)
        return data


def summarize(results: list[EpisodeResult], answers_freely: bool = True) -> Metrics:
    """``answers_freely``: the agent's replies may name no action (an LLM, a person); a model that picks
    from the list never does, and its invalid rate is None, not a measured 0."""
    n = len(results)
    wins = sum(r.success for r in results)
    total_steps = sum(r.steps for r in results)
    return Metrics(
        success=wins / n if n else 0.0,
        success_ci=wilson_interval(wins, n),
        episode_return=statistics.fmean(r.episode_return for r in results) if n else 0.0,
        steps=total_steps / n if n else 0.0,
        invalid_rate=sum(r.invalid_actions for r in results) / max(total_steps, 1) if answers_freely else None,
        episodes=n,
    )


@dataclass
class EvalPlan:
    """Which tasks each level is evaluated on."""

    env_name: str
    env_kwargs: dict[str, Any]
    levels: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    split: str = "test"
    episodes: int = 100
    seed: int = 0
    repeat_tasks: bool = True
    #: play each task this many times in a row (with new seeds): the sampled protocol's repeats
    repeats: int = 1

    @classmethod
    def from_config(cls, config: Any, sampled: bool = False) -> "EvalPlan":
        """The plan of a run's ``eval`` section (a ``RunConfig``).

        ``sampled``: the authors' protocol, every held-out task (up to ``eval.episodes``
        of them) played ``eval.sampled_repeats`` times.
        """
        plan = cls(config.env.name, config.env.kwargs, config.eval.levels or [{}], config.eval.split,
                   config.eval.episodes, seed=config.seed + 12345, repeat_tasks=config.eval.repeat_tasks)
        if sampled:
            plan.repeat_tasks, plan.repeats = False, config.eval.sampled_repeats
        return plan

    def level_name(self, level: dict[str, Any]) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(level.items())) or "all"

    def envs(self, level: dict[str, Any], n: int = 1) -> list[TextEnv]:
        return [make_env(self.env_name, **{**self.env_kwargs, **level}) for _ in range(n)]

    def tasks(self, env: TextEnv) -> list[tuple[Any, int]]:
        """(task, seed) pairs: every held-out task once, cycled with new seeds up to ``episodes``
        (without ``repeat_tasks``: each task at most once), each then ``repeats`` times."""
        tasks = env.tasks("val") + env.tasks("test") if self.split == "heldout" else env.tasks(self.split)
        if not tasks:
            raise UserError(f"{self.env_name}: the {self.split} split has no tasks")
        n = self.episodes if self.repeat_tasks else min(self.episodes, len(tasks))
        return [(tasks[i % len(tasks)], self.seed + i * self.repeats + r) for i in range(n) for r in range(self.repeats)]


def _group_key(task: Any) -> str | None:
    depth = getattr(task, "depth", None)
    if depth is None and isinstance(task, dict):
        depth = task.get("depth")
    return None if depth is None else f"depth={depth}"


def _report(plan: EvalPlan, per_level: dict[str, list[tuple[Any, EpisodeResult]]],
            answers_freely: bool = True) -> dict[str, Any]:
    """Overall and per-level metrics; a level whose tasks have several depths also gets one entry per depth."""
    everything = [r for pairs in per_level.values() for _, r in pairs]
    out = summarize(everything, answers_freely).to_json()
    levels: dict[str, Any] = {}
    for name, pairs in per_level.items():
        levels[name] = summarize([r for _, r in pairs], answers_freely).to_json()
        groups: dict[str, list[EpisodeResult]] = {}
        for task, result in pairs:
            key = _group_key(task)
            if key is not None:
                groups.setdefault(key, []).append(result)
        if len(groups) < 2:
            continue  # one depth: its entry would repeat the level's
        for key in sorted(groups):
            levels[f"{name}/{key}" if len(per_level) > 1 else key] = summarize(groups[key], answers_freely).to_json()
    out["levels"] = levels
    return out


def evaluate_agent(plan: EvalPlan, make_agent: Callable[[], Agent], desc: str = "eval",
                   episodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Sequential agents (random, oracle, endpoint), one episode at a time.

    ``episodes``: a list that receives every episode's transcript record (``eval.episodes``).
    """
    per_level = {}
    for level in plan.levels:
        env = plan.envs(level)[0]
        agent = make_agent()
        pairs = []
        for task, seed in tqdm(plan.tasks(env), desc=f"{desc} {plan.level_name(level)}", leave=False):
            result = play_episode(env, agent, task=task, seed=seed)
            pairs.append((task, result))
            if episodes is not None:
                episodes.append(agent_record(env, plan.level_name(level), task, seed, result))
        per_level[plan.level_name(level)] = pairs
    return _report(plan, per_level)


def evaluate_model(
    plan: EvalPlan,
    policy_path: str | Path,
    reflector_path: str | Path | None = None,
    batch_size: int = 32,
    greedy: bool = True,
    temperature: float = 1.0,
    dtype: str = "float32",
    max_length: int | None = None,
    reflection_tokens: int = 64,
    reflection_temperature: float = 0.0,
    desc: str = "eval",
    scoring: str = "id",
    reflector_dtype: str | None = None,
    reflector_max_length: int | None = None,
    episodes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A saved policy (and optional reflector) played in lock-step batches, on the accelerator when there is one.

    ``greedy`` takes each step's most likely action; otherwise actions are sampled at
    ``temperature``. The reflector decodes greedily at ``reflection_temperature=0``.
    ``scoring``: how the policy scores actions, as it was trained (``ActionPolicy``).
    ``max_length`` is the policy's prompt budget (default: every position its model reads);
    ``reflector_dtype`` and ``reflector_max_length`` the reflector's (default: the policy's), as in its SFT.
    ``episodes``: a list that receives every episode's transcript record (``eval.episodes``).
    """
    # the models' modules here: evaluating an agent (an endpoint, random, oracle) loads no transformers
    from reflectrl.agent.models import ModelSpec, default_device, load_model
    from reflectrl.agent.policy import ActionPolicy
    from reflectrl.agent.reflector import Reflector
    from reflectrl.agent.rollout import rollout

    device = default_device()
    model, tokenizer = load_model(ModelSpec(name=str(policy_path), dtype=dtype))
    policy = ActionPolicy(model.eval().to(device), tokenizer, max_length=max_length, dtype=dtype, scoring=scoring)
    if policy.max_actions is not None:
        for level in plan.levels:
            check_action_limit(plan.envs(level)[0], policy.max_actions, f"the policy in {policy_path}")
    reflector = None
    if reflector_path is not None:
        reflector = Reflector.from_pretrained(reflector_path, dtype=reflector_dtype or dtype,
                                              max_new_tokens=reflection_tokens, temperature=reflection_temperature,
                                              seed=plan.seed, device=device,
                                              max_length=reflector_max_length or max_length)
    generator = torch.Generator().manual_seed(plan.seed)
    per_level = {}
    for level in plan.levels:
        envs = plan.envs(level, batch_size)
        pairs = []
        jobs = plan.tasks(envs[0])
        for start in tqdm(range(0, len(jobs), batch_size), desc=f"{desc} {plan.level_name(level)}", leave=False):
            chunk = jobs[start:start + batch_size]
            if reflector is not None:
                reflector.reseed(plan.seed + start)
            played = rollout(envs[:len(chunk)], [t for t, _ in chunk], [s for _, s in chunk], policy, reflector,
                               greedy=greedy, temperature=temperature, rng=random.Random(plan.seed + start),
                               generator=generator, judge=episodes is not None)
            pairs += [(e.task, EpisodeResult(e.success, e.episode_return, len(e), 0, [s.action_text for s in e.steps]))
                      for e in played]
            if episodes is not None:
                episodes += [rollout_record(envs[0], plan.level_name(level), e) for e in played]
        per_level[plan.level_name(level)] = pairs
    return _report(plan, per_level, answers_freely=False)
