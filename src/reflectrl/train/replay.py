"""The paper's replay buffer: the most recent successful episodes.

Successes are rare early in RL; replaying them gives each iteration a second,
positive learning signal. Episodes are stored as plain step records, so the
buffer goes into a checkpoint as JSON.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict
from typing import Any

from reflectrl.agent.rollout import Episode, StepRecord


class ReplayBuffer:
    def __init__(self, capacity: int = 50) -> None:
        if capacity < 0:
            raise ValueError(f"replay capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.episodes: deque[Episode] = deque(maxlen=capacity or None)

    def __len__(self) -> int:
        return len(self.episodes) if self.capacity else 0

    def add(self, episodes: list[Episode]) -> None:
        """Keep only successful episodes; the oldest fall out when full."""
        if self.capacity:
            self.episodes.extend(e for e in episodes if e.success)

    def sample(self, n: int, rng: random.Random) -> list[Episode]:
        if not len(self):
            return []
        return [self.episodes[rng.randrange(len(self.episodes))] for _ in range(n)]

    def clear(self) -> None:
        self.episodes.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "episodes": [
                {"task": e.task, "seed": e.seed, "success": e.success, "steps": [asdict(s) for s in e.steps]}
                for e in self.episodes
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = state["capacity"]
        self.episodes = deque(
            (Episode(e["task"], e["seed"], [StepRecord(**s) for s in e["steps"]], e["success"]) for e in state["episodes"]),
            maxlen=self.capacity or None,
        )
