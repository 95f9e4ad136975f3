"""SFT sets as JSONL: one (prompt, completion) pair a line, plus the fields to rebuild it.

Five sets come from one list of teacher examples:

- ``reflection``: reflection prompt -> teacher reflection
- ``policy``: policy prompt with the teacher reflection -> action id
- ``policy_noreflect``: policy prompt without reflection -> action id
- ``reflection_pos`` / ``policy_pos``: the first two without negative examples
  (the "without negative examples" ablation)

Policy rows keep ``state``, ``actions``, ``reflection`` and ``action`` so SFT can
re-render them with shuffled ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from reflectrl.agent.prompts import policy_prompt, reflection_prompt
from reflectrl.data.trajectories import Example
from reflectrl.envs.action_parser import action_ids
from reflectrl.errors import UserError
from reflectrl.run_files import write_jsonl_atomic

SET_NAMES = ("reflection", "policy", "policy_noreflect", "reflection_pos", "policy_pos")


def reflection_row(example: Example) -> dict[str, Any]:
    return {"prompt": reflection_prompt(example.state), "completion": example.reflection, "negative": example.negative}


def policy_row(example: Example, with_reflection: bool) -> dict[str, Any]:
    reflection = example.reflection if with_reflection else None
    return {
        "prompt": policy_prompt(example.state, example.actions, reflection),
        "completion": action_ids(len(example.actions))[example.action],
        "state": example.state,
        "actions": example.actions,
        "reflection": reflection,
        "action": example.action,
        "negative": example.negative,
    }


def build_sets(examples: Iterable[Example]) -> dict[str, list[dict[str, Any]]]:
    sets: dict[str, list[dict[str, Any]]] = {name: [] for name in SET_NAMES}
    for example in examples:
        sets["reflection"].append(reflection_row(example))
        sets["policy"].append(policy_row(example, True))
        sets["policy_noreflect"].append(policy_row(example, False))
        if not example.negative:
            sets["reflection_pos"].append(sets["reflection"][-1])
            sets["policy_pos"].append(sets["policy"][-1])
    return sets


def read_jsonl(path: str | Path, required: tuple[str, ...] = ("prompt", "completion")) -> list[dict[str, Any]]:
    """Read an SFT set; a bad line is an error naming the file and line."""
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict) or any(key not in row for key in required):
                raise UserError(f"{path}:{number}: a row needs the keys {', '.join(required)}")
            rows.append(row)
    return rows


def write_sets(sets: dict[str, list[dict[str, Any]]], directory: str | Path) -> None:
    for name, rows in sets.items():
        write_jsonl_atomic(rows, Path(directory) / f"{name}.jsonl")
