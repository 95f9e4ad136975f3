"""SFT sets as JSONL: one (prompt, completion) pair a line, plus the fields to rebuild it.

Five sets come from one list of teacher examples:

- ``reflection``: reflection prompt -> teacher reflection
- ``policy``: policy prompt with the teacher reflection -> action id
- ``policy_noreflect``: policy prompt without reflection -> action id
- ``reflection_pos`` / ``policy_pos``: the first two without negative examples
  (the "without negative examples" ablation)

Policy rows keep ``state``, ``actions``, ``reflection`` and ``action`` so SFT can
re-render them with shuffled ids. ``with_reflections`` gives the ``policy`` set
other reflections (``sft.reflections: reflector``: the reflector's own, each
written by one trained on the other fold of tasks, ``task_fold``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from reflectrl.agent.prompts import policy_prompt, reflection_prompt, split_head
from reflectrl.data.trajectories import Example
from reflectrl.envs.action_parser import action_ids
from reflectrl.errors import UserError
from reflectrl.run_files import check_files, read_json, write_jsonl_atomic

SET_NAMES = ("reflection", "policy", "policy_noreflect", "reflection_pos", "policy_pos")
#: the training tasks are split in this many folds; a state's reflection for the policy is written by a
#: reflector trained on the other folds
REFLECTION_FOLDS = 2


def reflection_row(example: Example) -> dict[str, Any]:
    return {"prompt": reflection_prompt(example.state), "completion": example.reflection, "negative": example.negative,
            "task": example.task}


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
        "task": example.task,
    }


def task_fold(row: dict[str, Any], folds: int = REFLECTION_FOLDS) -> int:
    """The fold of the task a row is about (``sft.reflections: reflector``): a hash of its ``task``; in a
    set written without one, of its state's head (the lines up to the one stating the task)."""
    key = row.get("task") or split_head(row.get("state") or row["prompt"])[0]
    return int(hashlib.sha256(str(key).encode()).hexdigest(), 16) % folds


def with_reflections(rows: list[dict[str, Any]], reflections: list[str]) -> list[dict[str, Any]]:
    """Policy rows reading other reflections; the teacher's stays beside each (``teacher_reflection``)."""
    if len(rows) != len(reflections):
        raise ValueError(f"{len(reflections)} reflections for {len(rows)} rows")
    return [{**row, "prompt": policy_prompt(row["state"], row["actions"], text), "reflection": text,
             "teacher_reflection": row["reflection"]} for row, text in zip(rows, reflections)]


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


def _remake(data_dir: Path) -> str:
    return f"delete {data_dir} to make the data again"


def check_sets(data_dir: str | Path) -> None:
    """Every file of the data step against what it recorded, so that a run stops on a damaged set before any work."""
    check_files(data_dir, _remake(Path(data_dir)))


def read_set(data_dir: str | Path, split: str, name: str) -> list[dict[str, Any]]:
    """One set the data step wrote, checked against the size, hash and row count it recorded.

    A set cut or changed afterwards would otherwise train on other data than the
    run records (half the lines: half the data, silently).
    """
    data_dir = Path(data_dir)
    path = data_dir / split / f"{name}.jsonl"
    check_files(data_dir, _remake(data_dir), [f"{split}/{name}.jsonl"])
    rows = read_jsonl(path)
    written = read_json(data_dir / "done.json")[split][name]
    if len(rows) != written:
        raise UserError(f"{path} has {len(rows)} rows where the data step wrote {written}: it was cut or changed "
                        f"after it was made; {_remake(data_dir)}")
    return rows


def write_sets(sets: dict[str, list[dict[str, Any]]], directory: str | Path) -> None:
    for name, rows in sets.items():
        write_jsonl_atomic(rows, Path(directory) / f"{name}.jsonl")
