"""Curriculum over env levels (Taxi stages, AutoExplore depths).

Two ways to move on:

- ``schedule`` (the paper): each level gets a share of the iterations in
  proportion to its weight (by default its number of training tasks);
- ``success`` (beyond the paper): move to the next level when the moving
  success rate over the last ``window`` episodes passes ``threshold``, or
  after ``max_iterations_per_level`` iterations.

The RL loop clears the replay buffer whenever the level changes, as in the paper.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from reflectrl.config import CurriculumConfig


@dataclass
class Curriculum:
    levels: list[dict[str, Any]]
    kind: str = "schedule"
    boundaries: list[int] = field(default_factory=list)
    threshold: float = 0.8
    window: int = 64
    max_iterations_per_level: int = 0
    level: int = 0
    iterations_on_level: int = 0
    recent: deque = field(default_factory=deque)

    @classmethod
    def from_config(cls, config: CurriculumConfig, total_iterations: int, sizes: list[int] | None = None) -> "Curriculum":
        """``sizes`` (train tasks per level) sets the schedule when ``config.weights`` is empty."""
        levels = config.levels or [{}]
        weights = config.weights or sizes or [1.0] * len(levels)
        if len(weights) != len(levels):
            raise ValueError(f"curriculum.weights has {len(weights)} entries for {len(levels)} levels")
        if any(w <= 0 for w in weights):
            raise ValueError(f"curriculum.weights must be positive, got {weights}")
        total = float(sum(weights))
        boundaries, running = [], 0.0
        for weight in weights[:-1]:
            running += weight
            boundaries.append(round(total_iterations * running / total))
        return cls(
            levels=levels,
            kind=config.kind,
            boundaries=boundaries,
            threshold=config.threshold,
            window=config.window,
            max_iterations_per_level=config.max_iterations_per_level,
        )

    @property
    def current(self) -> dict[str, Any]:
        return self.levels[self.level]

    def update(self, iteration: int, successes: list[bool]) -> bool:
        """Record an iteration's outcomes (``iteration`` = iterations done); True when the level changes."""
        self.iterations_on_level += 1
        self.recent.extend(successes)
        while len(self.recent) > self.window:
            self.recent.popleft()
        if self.level == len(self.levels) - 1:
            return False
        if self.kind == "schedule":
            move = iteration >= self.boundaries[self.level]
        else:
            full = len(self.recent) >= self.window
            rate = sum(self.recent) / max(len(self.recent), 1)
            capped = self.max_iterations_per_level and self.iterations_on_level >= self.max_iterations_per_level
            move = (full and rate >= self.threshold) or bool(capped)
        if move:
            self.level += 1
            self.iterations_on_level = 0
            self.recent.clear()
        return move

    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level, "iterations_on_level": self.iterations_on_level, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level = state["level"]
        self.iterations_on_level = state["iterations_on_level"]
        self.recent = deque(state["recent"])
