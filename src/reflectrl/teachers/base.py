"""The teacher interface: who writes the reflections that warm up the reflector."""

from __future__ import annotations

from abc import ABC, abstractmethod

from reflectrl.envs.base import Observation


class Teacher(ABC):
    """Writes a short analysis of a state for SFT data.

    ``state.info["oracle"]`` carries the env's privileged facts (never shown to
    the policy); ``history`` is the list of action texts taken so far;
    ``next_good_action`` is the oracle's next action text, a spoiler the
    reflection may explain but must not simply name; ``was_last_action_wrong``
    asks for a corrective reflection (negative examples).
    """

    @abstractmethod
    def reflect(
        self,
        state: Observation,
        history: list[str],
        next_good_action: str,
        was_last_action_wrong: bool,
    ) -> str:
        """Return the reflection text (no markers, no action id)."""
