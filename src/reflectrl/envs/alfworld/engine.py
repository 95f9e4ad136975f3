"""The ALFWorld text engine, assembled the way ``alfworld`` assembles it.

ALFWorld's text side is TextWorld's ``PddlEnv`` (fast-downward under the hood)
playing a ``game.tw-pddl`` file: a JSON object holding the ALFRED PDDL domain,
the TextWorld grammar (``alfred.twl2``, with ``UNKNOWN GOAL`` replaced by the
task description), the PDDL problem, and ``solvable`` / ``walkthrough`` marks
written by ``alfworld-generate``. alfworld wraps the env with its demangler
(``Tomato_bar_...`` ids -> ``tomato 1``), an infos wrapper, and an expert; we
use the same wrappers with the PLANNER expert, whose plan is fast-downward's
optimal plan from the current state (``policy_commands``), recomputed every
step. Nothing here reimplements the engine: it is the installed packages.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import textworld
from alfworld.agents.environment.alfred_tw_env import (
    AlfredDemangler,
    AlfredExpert,
    AlfredExpertType,
    AlfredInfos,
)
from alfworld.gen import goal_library
from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH
from textworld.envs import PddlEnv

from reflectrl.run_files import read_json_object, write_json_atomic

GAME_FILE = "game.tw-pddl"
TRAJ_DATA_FILE = "traj_data.json"
PROBLEM_FILE = "initial_state.pddl"
#: the placeholder alfworld's grammar carries until a task description is filled in
GOAL_PLACEHOLDER = "UNKNOWN GOAL"
#: the engine's feedback for a command it does not know
NOTHING_HAPPENS = "Nothing happens."


def alfred_domain() -> str:
    """The ALFRED PDDL domain shipped in the alfworld wheel."""
    return Path(ALFRED_PDDL_PATH).read_text()


def alfred_grammar() -> str:
    """The TextWorld grammar (``alfred.twl2``) shipped in the alfworld wheel."""
    return Path(ALFRED_TWL2_PATH).read_text()


def templated_task_description(traj_data: dict[str, Any], rng: random.Random) -> str:
    """The goal sentence alfworld writes for a task, e.g. ``put a tomato in microwave``.

    Same templates as ``alfworld.agents.utils.misc.get_templated_task_desc``,
    but drawn from ``rng`` (alfworld draws from the global ``random``, which
    would make generated files differ from run to run).
    """
    params = traj_data["pddl_params"]
    goal = traj_data["task_type"] + ("_slice" if params.get("object_sliced") else "")
    if goal not in goal_library.gdict:
        raise ValueError(f"unknown ALFRED task type {goal!r}; known: {', '.join(sorted(goal_library.gdict))}")
    template = rng.choice(goal_library.gdict[goal]["templates"])
    return template.format(
        obj=params.get("object_target", "").lower(),
        recep=params.get("parent_target", "").lower(),
        toggle=params.get("toggle_target", "").lower(),
        mrecep=params.get("mrecep_target", "").lower(),
    )


def build_game_data(pddl_problem: str, task_description: str) -> dict[str, Any]:
    """A ``game.tw-pddl`` object, laid out as ``alfworld-generate`` writes it."""
    return {
        "pddl_domain": alfred_domain(),
        "grammar": alfred_grammar().replace(GOAL_PLACEHOLDER, task_description),
        "pddl_problem": pddl_problem,
        "solvable": None,
        "walkthrough": None,
    }


class AlfredEngine:
    """One TextWorld ``PddlEnv`` with alfworld's demangler, infos and planner expert.

    Each instance loads its own copy of fast-downward's shared library (that is
    how ``fast_downward.load_lib`` isolates its global state), so several
    engines can live in one process.
    """

    def __init__(self) -> None:
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, extras=["gamefile", "expert_plan"])
        env = PddlEnv(infos)
        env = AlfredDemangler(env, shuffle=False)
        env = AlfredInfos(env)
        self._env = AlfredExpert(env, expert_type=AlfredExpertType.PLANNER)
        self.game_file: Path | None = None

    def load(self, game_file: Path) -> None:
        """Load a ``game.tw-pddl`` (its ``traj_data.json`` must sit beside it)."""
        game_file = Path(game_file)
        if game_file == self.game_file:
            return
        if not (game_file.parent / TRAJ_DATA_FILE).is_file():
            raise FileNotFoundError(f"{game_file.parent / TRAJ_DATA_FILE} is missing; alfworld's expert needs it")
        self.game_file = None
        self._env.load(str(game_file))
        self.game_file = game_file

    def reset(self) -> Any:
        """Start the loaded game; returns TextWorld's ``GameState``."""
        if self.game_file is None:
            raise RuntimeError("AlfredEngine.reset called before load")
        return self._env.reset()

    def step(self, command: str) -> tuple[Any, float, bool]:
        """Play one command; an unknown one gives the engine's ``Nothing happens.``"""
        return self._env.step(command)


def record_plan(game_file: Path, plan: list[str]) -> None:
    """Mark a game file solvable (or not) with its walkthrough, as ``alfworld-generate`` does."""
    data = read_json_object(game_file)
    data["solvable"] = bool(plan)
    data["walkthrough"] = list(plan) or None
    write_json_atomic(Path(game_file), data)
