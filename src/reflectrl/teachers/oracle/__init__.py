"""Oracle teachers: reflections written from an env's privileged information.

Each env has its own module here with a function
``reflect(state, history, next_good_action, was_last_action_wrong, rng) -> str``;
``OracleTeacher`` picks it by env name.
"""

from __future__ import annotations

import importlib
import random

from reflectrl.envs.base import Observation
from reflectrl.errors import UserError
from reflectrl.teachers.base import Teacher

_WRITERS = {
    "taxi": "reflectrl.teachers.oracle.taxi",
    "autoexplore": "reflectrl.teachers.oracle.autoexplore",
    "alfworld": "reflectrl.teachers.oracle.alfworld",
    "textworld": "reflectrl.teachers.oracle.textworld",
    "babyai": "reflectrl.teachers.oracle.babyai",
}


class OracleTeacher(Teacher):
    """Privileged teacher for one env; ``seed`` fixes its choice of phrasing."""

    def __init__(self, env_name: str, seed: int = 0, quote_reads: bool = False) -> None:
        if env_name not in _WRITERS:
            raise UserError(f"no oracle teacher for env {env_name!r}; known: {', '.join(sorted(_WRITERS))}")
        if quote_reads and env_name != "autoexplore":
            raise UserError(f"quote_reads: the {env_name} teacher has no reads to quote (autoexplore only)")
        self.env_name = env_name
        self._write = importlib.import_module(_WRITERS[env_name]).reflect
        self._options = {"quote_reads": True} if quote_reads else {}
        self._rng = random.Random(seed)

    def reflect(
        self,
        state: Observation,
        history: list[str],
        next_good_action: str,
        was_last_action_wrong: bool,
    ) -> str:
        if "oracle" not in state.info:
            raise ValueError(f"{self.env_name}: observation has no privileged 'oracle' info for the oracle teacher")
        return self._write(state, history, next_good_action, was_last_action_wrong, self._rng, **self._options)
