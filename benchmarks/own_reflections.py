"""How often the reflections the policy learns from name the teacher's move (``sft.reflections: reflector``).

With the teacher's reflections the policy learns to do what a reflection says;
this counts, in a run's ``reflections/`` folder, how often the reflector's own
reflection (written by the reflector that never trained on the task, or on a
validation state by the recipe's reflector) names the teacher's move, how
often it names no listed command, and how often the teacher's did, read by the
env's ``reflection_action``, as the report's "Reflector or policy" table reads.

Run: ``python benchmarks/own_reflections.py runs/<name> --out results/<name>/own_reflections.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reflectrl.config import load_config
from reflectrl.data.sft_sets import read_set
from reflectrl.envs.registry import make_env


def count(run: Path) -> dict[str, Any]:
    config = load_config(run / "config.yaml")
    env = make_env(config.env.name, **config.env.kwargs)
    splits = {}
    for split in ("train", "val"):
        rows = read_set(run / "reflections", split, "policy")
        own = [env.reflection_action(row["reflection"], row["actions"]) for row in rows]
        teacher = [env.reflection_action(row["teacher_reflection"], row["actions"]) for row in rows]
        splits[split] = {"rows": len(rows),
                         "own_names_teacher_move": sum(a == row["action"] for a, row in zip(own, rows)),
                         "own_names_no_listed_command": sum(a is None for a in own),
                         "teacher_names_teacher_move": sum(a == row["action"] for a, row in zip(teacher, rows))}
    return {"run": str(run), "splits": splits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory holding reflections/ and config.yaml")
    parser.add_argument("--out", type=Path, help="write the counts here as JSON")
    args = parser.parse_args()
    result = count(args.run)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
