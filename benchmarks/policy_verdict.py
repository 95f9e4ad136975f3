"""Whether an AutoExplore policy that reads reflections follows, on its own training rows, the verdict it
was taught with.

At test time a policy trained on the reflector's own reflections
(``sft.reflections: reflector``) identifies the file it just read whatever its
reflection says of it (``benchmarks/autoexplore_failures.py``), though in its
training rows the teacher reads on after most reflections that call the file
not the answer. This replays the run's SFT policy (before RL) on those very
rows, right after a ``cat``: for each, whether its greedy choice is ``id`` of
the file just read, split by whether the teacher identified it and by whether
the row's reflection judged it not the answer. A policy that identifies on its
own rows after that verdict as often as at test time has not learnt the
branch (more training, or a loss that weighs those rows); one that reads on
there but not at test time meets other states or reflections at test time.
The arm without reflection is replayed on the same rows (its prompts carry no
reflection) as the reference. ``--split val`` replays the validation rows
instead (tasks neither policy trained on, reflections by the recipe's reflector).

Run: ``python benchmarks/policy_verdict.py runs/<name> --threads 2 --out benchmarks/results/policy_verdict-<name>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from autoexplore_failures import NOT_THE_ANSWER, after_a_read
from reflector_judgment import cost, print_and_write
from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.agent.prompts import policy_prompt
from reflectrl.config import load_config
from reflectrl.data.sft_sets import read_set
from reflectrl.envs.action_parser import action_ids
from reflectrl.envs.autoexplore.env import last_command
from reflectrl.pipeline import set_threads
from reflectrl.train.sft import evaluate_sft


def as_identification(row: dict[str, Any]) -> dict[str, Any]:
    """The row relabelled with ``id`` of the file just read, so that action accuracy counts identifications."""
    return {**row, "action": row["actions"].index("id " + last_command(row["state"])[4:])}


def without_reflection(row: dict[str, Any]) -> dict[str, Any]:
    """The row as the policy without reflection reads it (a row's stored prompt carries its reflection)."""
    ids = action_ids(len(row["actions"]))
    return {**row, "reflection": None, "prompt": policy_prompt(row["state"], row["actions"], None, ids)}


def identifications(policy: Path, groups: dict[str, list[dict[str, Any]]], config: Any) -> dict[str, int]:
    """How many rows of each group the policy in ``policy`` (loaded once) answers with ``id`` of the file just read."""
    model, tokenizer = load_model(ModelSpec(**{**config.model.__dict__, "name": str(policy)}))
    counts = {}
    for group, rows in groups.items():
        metrics = evaluate_sft(model, tokenizer, [as_identification(row) for row in rows], "policy", config.sft,
                               config.model.dtype, scoring=config.action_scoring,
                               reflection_tokens=config.reflection_tokens)
        counts[group] = round(metrics["val_action_accuracy"] * len(rows))
    return counts


def replay(run: Path, threads: int | None = None, split: str = "train") -> dict[str, Any]:
    started = time.time()
    config = load_config(run / "config.yaml")
    config.threads = threads or config.threads
    set_threads(config)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in read_set(run / "reflections", split, "policy"):
        if (read := after_a_read(row)) is not None:
            verdict = "judged_not_the_answer" if NOT_THE_ANSWER.search(row["reflection"]) else "not_judged_so"
            groups.setdefault(f"{read}/{verdict}", []).append(row)
    groups = dict(sorted(groups.items()))
    unreflected = {group: [without_reflection(row) for row in rows] for group, rows in groups.items()}
    return {
        "run": str(run), "split": split,
        "rows_right_after_a_cat": {group: len(rows) for group, rows in groups.items()},
        "identified_it": {"sft_reflect": identifications(run / "policy", groups, config),
                          "sft": identifications(run / "policy_noreflect", unreflected, config)},
        **cost(started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory of a recipe with sft.reflections: reflector")
    parser.add_argument("--threads", type=int, help="torch threads (default: the recipe's, meant for jobs beside it)")
    parser.add_argument("--split", choices=("train", "val"), default="train",
                        help="the policies' training rows, or the validation rows of tasks they never trained on")
    parser.add_argument("--out", type=Path, help="write the counts here as JSON")
    args = parser.parse_args()
    print_and_write(replay(args.run, args.threads, args.split), args.out)


if __name__ == "__main__":
    main()
