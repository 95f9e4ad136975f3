"""How often reading the right file shows the sentence an AutoExplore code question quotes.

A code question quotes a docstring's first sentence of its target ("Which file
implements the class described as ..."). If ``cat`` never shows that sentence,
reading a file cannot confirm it or rule it out, and the agent (reflector or
policy) can only guess from file names. For each ``cat_view`` ("head": the
first lines; "outline": a Python file's definitions) this counts the code tasks
of the default corpus whose sentence is visible in what ``cat`` shows of at
least one target (compared case-insensitively, whitespace collapsed, quotes as
the question writes them). The other kinds quote what the head shows (a
table's header, a document's first heading) or rephrase it (config keys).

Writes ``benchmarks/results/autoexplore_evidence.json``: per view, ``tasks``,
``visible`` and ``share``, over all splits and over the SmolLM2 recipe's test
tasks (depth <= 1). Run: ``python benchmarks/autoexplore_evidence.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from reflectrl.envs.autoexplore.corpus import default_tasks
from reflectrl.envs.autoexplore.search import shows_topic
from reflectrl.envs.autoexplore.tasks import Task
from reflectrl.envs.autoexplore.tree import CAT_VIEWS
from reflectrl.memory import peak_rss_gb

RESULTS = Path(__file__).parent / "results" / "autoexplore_evidence.json"


def visible(task: Task, view: str) -> bool:
    """Whether ``cat`` in ``view`` shows the question's sentence for at least one of its targets."""
    tree = task.tree(outlines=True)
    return any(shows_topic(tree.preview(target, view), task.topic) for target in task.targets)


def count(tasks: list[Task]) -> dict[str, dict[str, Any]]:
    """Per view, over the code tasks: tasks, visible, share."""
    code = [task for task in tasks if task.kind == "code"]
    out: dict[str, dict[str, Any]] = {}
    for view in CAT_VIEWS:
        seen = sum(visible(task, view) for task in code)
        out[view] = {"tasks": len(code), "visible": seen, "share": round(seen / len(code), 3) if code else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    tasks = default_tasks()
    recipe_test = [t for t in tasks if t.split == "test" and t.depth <= 1]
    result = {
        "all_tasks": count(tasks),
        "recipe_test_depth_le_1": count(recipe_test),
        "n_tasks": len(tasks),
        "n_recipe_test_depth_le_1": len(recipe_test),
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": peak_rss_gb(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
