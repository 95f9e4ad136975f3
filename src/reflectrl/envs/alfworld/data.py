"""Finding games: the official ALFWorld data when present, else reflectrl's generated set.

The official data (``alfworld-download``) lives in ``$ALFWORLD_DATA/json_2.1.1``
(default ``~/.cache/alfworld``), one folder per trial with ``traj_data.json``,
``initial_state.pddl`` and ``game.tw-pddl``. ``collect_problem_dirs`` walks a
split the way ``AlfredTWEnv.collect_game_files`` does (skipping movable and
sliced trials, other task types, and games marked unsolvable) and adds the
paper's filter on the target object and receptacle. A trial without a
``game.tw-pddl`` is turned into one from its PDDL problem and task, the way
``alfworld-generate`` does, written into reflectrl's cache (never into the
user's data folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

from reflectrl.envs.alfworld.engine import (
    GAME_FILE,
    GOAL_PLACEHOLDER,
    PROBLEM_FILE,
    TRAJ_DATA_FILE,
    build_game_data,
    templated_task_description,
)
from reflectrl.envs.alfworld.problems import SPLIT_DIRS
from reflectrl.errors import UserError
from reflectrl.run_files import read_json_object, write_json_atomic

OFFICIAL_DATA_HINT = (
    "To use the official ALFWorld games: pip install alfworld, run alfworld-download, and set "
    "ALFWORLD_DATA to the folder it filled (the one holding json_2.1.1)."
)


def cache_root() -> Path:
    """reflectrl's cache for ALFWorld: ``$REFLECTRL_CACHE/alfworld`` or ``~/.cache/reflectrl/alfworld``."""
    base = os.environ.get("REFLECTRL_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "reflectrl"
    return root / "alfworld"


def official_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The official json_2.1.1 folder, or None when there is none.

    ``data_dir`` (else ``$ALFWORLD_DATA``, else alfworld's default
    ``~/.cache/alfworld``) may be the download folder or json_2.1.1 itself.
    """
    if data_dir is None:
        data_dir = os.environ.get("ALFWORLD_DATA") or Path.home() / ".cache" / "alfworld"
    base = Path(data_dir).expanduser()
    for candidate in (base / "json_2.1.1", base):
        if any((candidate / split_dir).is_dir() for split_dir in SPLIT_DIRS.values()):
            return candidate
    return None


#: the ``pddl_params`` a trial's goal sentence is written from (``templated_task_description``)
TRIAL_PARAMS = ("object_target", "parent_target", "toggle_target", "mrecep_target")


def _trial_fault(traj_data: dict[str, Any]) -> str | None:
    """What in a trial's ``traj_data.json`` the task filters and the goal sentence cannot read, or None."""
    if not isinstance(traj_data.get("task_type"), str):
        return f"'task_type' is {json.dumps(traj_data.get('task_type'))[:60]}, not a string"
    params = traj_data.get("pddl_params")
    if not isinstance(params, dict):
        return f"'pddl_params' is {json.dumps(params)[:60]}, not an object"
    for key in TRIAL_PARAMS:
        if key in params and not isinstance(params[key], str):
            return f"'pddl_params.{key}' is {json.dumps(params[key])[:60]}, not a string"
    return None


def _matches(traj_data: dict[str, Any], task_type: str | None, object_type: str | None, receptacle_type: str | None) -> bool:
    params = traj_data.get("pddl_params", {})
    if task_type is not None and traj_data.get("task_type") != task_type:
        return False
    if object_type is not None and params.get("object_target", "").lower() != object_type.lower():
        return False
    if receptacle_type is not None and params.get("parent_target", "").lower() != receptacle_type.lower():
        return False
    return True


def collect_problem_dirs(
    data_root: Path,
    split: str,
    task_type: str | None,
    object_type: str | None,
    receptacle_type: str | None,
) -> list[Path]:
    """Trial folders of a split that fit the filters, sorted (so task lists are stable)."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_DIRS)}")
    split_root = Path(data_root) / SPLIT_DIRS[split]
    found = []
    for traj_path in sorted(split_root.rglob(TRAJ_DATA_FILE)):
        directory = traj_path.parent
        relative = str(directory.relative_to(split_root))
        if "movable" in relative or "Sliced" in relative:
            continue
        traj_data = read_json_object(traj_path)
        fault = _trial_fault(traj_data)
        if fault is not None:
            raise UserError(f"{traj_path}: {fault} (ALFRED's traj_data.json format); fix or remove this trial folder")
        if not _matches(traj_data, task_type, object_type, receptacle_type):
            continue
        game_path = directory / GAME_FILE
        if game_path.is_file():
            if read_json_object(game_path).get("solvable") is False:
                continue
        elif not (directory / PROBLEM_FILE).is_file():
            continue
        found.append(directory)
    return found


def _game_field(path: Path, game_data: dict[str, Any], key: str) -> str:
    value = game_data.get(key)
    if not isinstance(value, str):
        raise UserError(f"{path}: a game file's {key!r} must be a string (TextWorld's PDDL game format)")
    return value


def game_file_for(problem_dir: Path, cache: Path) -> Path:
    """The ``game.tw-pddl`` to load for a trial folder.

    The folder's own file when it has one with a task description filled in;
    otherwise one built from ``initial_state.pddl`` + ``traj_data.json`` into
    ``cache`` (with ``traj_data.json`` beside it, which alfworld's expert reads).
    """
    problem_dir = Path(problem_dir)
    traj_path = problem_dir / TRAJ_DATA_FILE
    if not traj_path.is_file():
        raise FileNotFoundError(f"{problem_dir} is not an ALFWorld trial folder: {TRAJ_DATA_FILE} is missing")
    own = problem_dir / GAME_FILE
    game_data = read_json_object(own) if own.is_file() else None
    if game_data is not None and GOAL_PLACEHOLDER not in _game_field(own, game_data, "grammar"):
        return own
    traj_data = read_json_object(traj_path)
    if game_data is not None:
        pddl_problem = _game_field(own, game_data, "pddl_problem")
    elif (problem_dir / PROBLEM_FILE).is_file():
        pddl_problem = (problem_dir / PROBLEM_FILE).read_text()
        game_data = None
    else:
        raise FileNotFoundError(f"{problem_dir} has neither {GAME_FILE} nor {PROBLEM_FILE}")
    digest = hashlib.sha1(str(problem_dir.resolve()).encode()).hexdigest()[:16]
    target_dir = Path(cache) / "official" / digest
    target = target_dir / GAME_FILE
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    description = templated_task_description(traj_data, random.Random(digest))
    built = build_game_data(pddl_problem, description)
    if game_data is not None:
        built.update({k: game_data[k] for k in ("solvable", "walkthrough") if k in game_data})
    write_json_atomic(target_dir / TRAJ_DATA_FILE, traj_data)
    write_json_atomic(target, built)
    return target
