"""The environment protocol every reflectrl env follows.

Small and gymnasium-like, but text in / text out with a finite, changing list
of valid actions each step: that is what lets the policy enumerate every action
in one prompt and score them all with a single forward pass.
"""

from __future__ import annotations

import operator
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from reflectrl.envs.action_parser import last_mentioned
from reflectrl.errors import UserError


@dataclass
class Observation:
    """What an agent sees: the state text (without the action list) and the valid actions."""

    text: str
    actions: list[str]
    info: dict[str, Any] = field(default_factory=dict)


class ActionBound(NamedTuple):
    """The most actions one step of an env can list, and the state that lists them (for messages)."""

    count: int
    where: str


class InvalidActionError(ValueError):
    """An action index outside the current action list."""


StepResult = tuple[Observation, float, bool, bool, dict[str, Any]]

#: envs whose tasks are engine seeds give each split its own disjoint seed range
SEED_SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SEED_SPLIT_SPAN = 1_000_000


def seed_split_tasks(env_name: str, split: str, counts: dict[str, int]) -> list[int]:
    """The first ``counts[split]`` seeds of the split's range."""
    if split not in SEED_SPLIT_OFFSETS:
        raise ValueError(f"{env_name}: unknown split {split!r}; choose train, val or test")
    offset = SEED_SPLIT_OFFSETS[split]
    return list(range(offset, offset + counts[split]))


class TextEnv(ABC):
    """Base class of all reflectrl environments.

    Subclasses set ``name`` and ``max_steps`` and implement ``reset``, ``step``,
    ``oracle_action``, ``invalid_step`` and ``tasks``; they keep the current
    observation in ``self._obs`` and set ``self._done`` when an episode ends (or
    override ``observation``). When an episode ends, the ``info`` dict returned
    by ``step`` holds ``success`` (bool).

    ``reset(task, seed)`` must be deterministic: resetting with the same task and
    seed and replaying the same actions reproduces the same episode (negative
    example generation relies on that).
    """

    name: str = "text-env"
    max_steps: int = 20
    _obs: Observation | None = None
    _done: bool = False

    @abstractmethod
    def reset(self, task: Any = None, seed: int | None = None) -> Observation:
        """Start an episode on ``task`` (or a task drawn with ``seed`` when None)."""

    @abstractmethod
    def step(self, action_index: int) -> StepResult:
        """Apply the action at ``action_index`` of the current observation's list."""

    @abstractmethod
    def oracle_action(self) -> int:
        """The privileged best next action (index into the current action list)."""

    def good_actions(self) -> list[int]:
        """Every action as good as the oracle's (indices); negative examples never call one of them wrong.

        Override where ties are common (Taxi's two shortest moves); the default is the oracle's action alone.
        """
        return [self.oracle_action()]

    def plausibility(self) -> list[float] | None:
        """How tempting each listed action looks to an agent without the oracle's knowledge (higher: more),
        or None when the env has no such measure.

        Negative examples with ``data.negatives: plausible`` take the most tempting wrong action: the
        mistakes a trained policy makes, which a randomly drawn wrong action rarely is.
        """
        return None

    def reflection_action(self, reflection: str, actions: list[str]) -> int | None:
        """The action a reflection tells the agent to take (index into ``actions``), or None if it names none.

        Evaluation records it beside the good actions at every step, so a report can tell a
        wrong reflection from a policy that did not follow a right one. The default takes the
        listed action whose text the reflection quotes last; envs whose teacher words moves
        differently (Taxi's "drive north now") override it.
        """
        return last_mentioned(reflection, actions)

    def failure_kind(self, episode: dict[str, Any]) -> str:
        """How a failed episode ended, in a few words a report counts: ``horizon``, ``invalid reply`` or ``ended``.

        ``episode`` is its transcript record (``eval.episodes``: ``end``, ``transcript``,
        ``final.info``); envs override this to name their own ways of failing.
        """
        if episode["end"] == "truncated":
            return "horizon"
        if episode["transcript"] and episode["transcript"][-1]["action"] is None:
            return "invalid reply"
        return "ended"

    @abstractmethod
    def invalid_step(self, reply: str) -> StepResult:
        """Apply the env's penalty for a reply that names no valid action."""

    @abstractmethod
    def tasks(self, split: str) -> list[Any]:
        """The fixed task list of a split: ``train``, ``val`` or ``test``."""

    def action_bound(self) -> ActionBound | None:
        """The most actions one step of this env's tasks can list, or None when the env does not know.

        Envs whose action lists grow with their data (AutoExplore's directories) state it, so that a policy
        that can label only so many actions is refused before any work rather than mid-run.
        """
        return None

    def draw_train_task(self, seed: int | None, stream: random.Random, none_left: str) -> Any:
        """The task of a ``reset()`` given none: a train task drawn with ``seed``, else from the env's own
        ``stream``; ``none_left`` says why a train split can be empty (an error when it is)."""
        train = self.tasks("train")
        if not train:
            raise UserError(f"{self.name}: reset() without a task needs a train task; {none_left}")
        return (random.Random(seed) if seed is not None else stream).choice(train)

    @property
    def observation(self) -> Observation:
        """The current observation (the last one returned by reset/step)."""
        if self._obs is None:
            raise RuntimeError(f"{self.name}: call reset() before using the env")
        return self._obs

    def _require_running(self) -> None:
        """Raise unless an episode is in progress: step() after the end or before reset() is a bug."""
        if self._obs is None or self._done:
            raise RuntimeError(f"{self.name}: the episode is over (or never started); call reset()")

    def check_action(self, action_index: int) -> None:
        """Raise a clear error for an index outside the current action list."""
        n = len(self.observation.actions)
        try:
            index = operator.index(action_index)
        except TypeError:
            index = -1
        if isinstance(action_index, bool) or not 0 <= index < n:
            raise InvalidActionError(
                f"{self.name}: action index {action_index!r} is not valid; "
                f"this step has {n} actions (0..{n - 1})"
            )


def check_action_limit(env: TextEnv, limit: int | None, labeller: str) -> None:
    """Refuse an env whose steps can list more actions than ``limit`` labels; call it before any work.

    ``limit``: the most actions the policy can label in one step (``ActionPolicy.max_actions``: the
    tokenizer's single-token ids under ``action_scoring: id``; None, any number, under ``text``);
    ``labeller`` names the policy or tokenizer in the message. An env that states no bound passes.
    """
    bound = env.action_bound()
    if limit is None or bound is None or bound.count <= limit:
        return
    raise UserError(
        f"{env.name}: {bound.where} lists {bound.count} actions in one step, but {labeller} has only {limit} "
        f"single-token action ids for action_scoring: id; use action_scoring: text (any number of actions) "
        f"or build the tasks from trees without that directory"
    )
