"""Whether an AutoExplore reflector can tell, from what it just read, that the file answers the question.

The reflector of a recipe with ``sft.reflections: reflector`` that never trained
on fold 0 of the training tasks (the run's ``reflector_fold0``, made or reused)
writes its reflection on every state of that fold right after a ``cat``. Counted
by whether the teacher then identified the file read: how often the reflection
judged it not the answer, beside the teacher's own reflection on the same state,
in all and by the kind of question (one that names the file asks only that the
name read be compared with the question's).
A reflector that judges by what it read calls answers answers; one that writes
its training rows' usual opening calls every file the same. The same counts on the
states of the folds it trained on tell a reflector that cannot fit its own
training rows (more training or capacity) from one that fits them but does not
carry the judgment to unseen tasks (more or other data). A reflector variant
is measured in one fold reflector's SFT (minutes) instead of a whole run (hours).

Run: ``python benchmarks/reflector_judgment.py --config configs/autoexplore-smollm2.yaml --set
sft.reflections=reflector --set name=<name> --out benchmarks/results/reflector_judgment-<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from autoexplore_failures import after_a_read, judgments
from reflectrl.agent.models import ModelSpec, load_tokenizer
from reflectrl.cli import _key_values
from reflectrl.config import RunConfig, load_config, to_dict
from reflectrl.cpu import cpu_model
from reflectrl.data.sft_sets import read_set, task_fold
from reflectrl.memory import peak_rss_gb
from reflectrl.pipeline import _write_reflections, fold_reflector, set_threads, step_data, warn_cut_reflections

FOLD = 0


def question_kind(row: dict[str, Any]) -> str:
    """The kind of the row's task (``name``: the question names the file; ``code``, ``text``: it describes
    what the file holds), read from the task as the data set stores it (its repr)."""
    return re.search(r"kind='(\w+)'", row["task"]).group(1)


def judge(config: RunConfig) -> dict[str, Any]:
    if config.env.name != "autoexplore" or config.sft.reflections != "reflector":
        raise SystemExit("reflector_judgment: a recipe of env autoexplore with sft.reflections: reflector")
    started = time.time()
    set_threads(config)
    writer = fold_reflector(config, FOLD)
    data = step_data(config)
    read_rows = [row for row in read_set(data, "train", "policy") if after_a_read(row)]
    rows = [row for row in read_rows if task_fold(row) == FOLD]
    trained_on = [row for row in read_rows if task_fold(row) != FOLD]
    texts = _write_reflections(config, writer, [row["state"] for row in rows])
    trained_on_texts = _write_reflections(config, writer, [row["state"] for row in trained_on])
    by_kind: dict[str, list[tuple[dict[str, Any], str]]] = {}
    examples = {}
    for row, text in zip(rows, texts):
        by_kind.setdefault(question_kind(row), []).append((row, text))
        examples.setdefault(after_a_read(row), {"teacher": row["reflection"], "own": text})
    reflection_rows = read_set(data, "train", "reflection")
    recipe = to_dict(config)
    return {
        "recipe": {key: recipe[key]
                   for key in ("name", "seed", "teacher", "data", "reflector_sft", "reflection_tokens")},
        "fold": FOLD, "writer": str(writer),
        "teacher_reflections_over_budget": warn_cut_reflections(load_tokenizer(ModelSpec(name=str(writer))),
                                                                reflection_rows, config.reflection_tokens),
        "teacher_reflections": len(reflection_rows),
        "after_a_cat": judgments(rows, texts, [row["reflection"] for row in rows]),
        "after_a_cat_by_question_kind": {kind: judgments([row for row, _ in pairs], [text for _, text in pairs],
                                                         [row["reflection"] for row, _ in pairs])
                                          for kind, pairs in sorted(by_kind.items())},
        "after_a_cat_trained_on": judgments(trained_on, trained_on_texts, [row["reflection"] for row in trained_on]),
        "examples": examples,
        **cost(started),
    }


def cost(started: float) -> dict[str, Any]:
    """What the measurement took, and on what: its wall time since ``started`` and peak RSS."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "wall_s": round(time.time() - started, 1), "peak_rss_gb": peak_rss_gb()}


def print_and_write(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=1)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the recipe (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    parser.add_argument("--out", type=Path, help="write the counts here as JSON")
    args = parser.parse_args()
    print_and_write(judge(load_config(args.config, _key_values(args.set, "--set"))), args.out)


if __name__ == "__main__":
    main()
