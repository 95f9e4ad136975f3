"""Where AutoExplore episodes fail, and what the training rows show of the move that would have avoided it.

Counts, for each evaluated arm of a run (or of a ``results/<recipe>/`` folder,
which keeps the transcripts): how episodes end; the failures that end in a
wrong ``id``, how many of those right after a ``cat`` of the file identified,
and how many of those right after a reflection that judged that file not the
answer (the teacher's own words for it: "unrelated", "did not help", "does not
answer" ...); the share of good moves; and how often the policy took the action
its reflection named. For every step right after a ``cat``, split by whether the
file read is an answer: how often the policy identified it and how often the
reflection judged it not the answer (what a policy that reads reflections
could act on), and how often the policy identified it all the same. With the run's ``data/`` folder it also counts, in the
training rows of the policy, the teacher's identifications (positive rows)
that follow a ``cat`` of the same file, and the rows whose last command read a
file the teacher then does not identify: the only rows that show the policy
what to do after a wrong file. Where the run wrote the reflector's own
reflections for the policy to learn from (``sft.reflections: reflector``, its
``reflections/`` folder), it also counts, over the rows right after a ``cat``,
how often that reflection and the teacher's judged the file read not the
answer, split by whether the teacher then identified it: what the policy could
learn from the judgment it will be given at test time.

Run: ``python benchmarks/autoexplore_failures.py runs/<name> --out results/<name>/failures.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from reflectrl.data.sft_sets import read_set
from reflectrl.envs.autoexplore.env import last_command
from reflectrl.eval.episodes import evaluated_arms, read_episodes

#: the teacher's phrases (teachers/oracle/autoexplore.py) for "the file just read is not the answer"
NOT_THE_ANSWER = re.compile(r"unrelated|did not help|does not answer|does not match|wasted a step|not the file we need"
                            r"|not the question's sentence")


def _read_path(step: dict[str, Any], name: str) -> str:
    """The repository-relative path of ``name`` read at ``step`` (the screen's working directory starts
    with the repository's own name)."""
    cwd = step["observation"].split("Current working directory: ", 1)[1].split("\n", 1)[0]
    return "/".join([*cwd.split("/")[1:], name])


def steps_after_a_cat(episodes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts = {kind: Counter() for kind in ("answer", "not_answer")}
    for episode in episodes:
        steps = episode["transcript"]
        for read, step in zip(steps, steps[1:]):
            if not read["action_text"].startswith("cat "):
                continue
            name = read["action_text"][4:]
            kind = "answer" if _read_path(read, name) in episode["task"]["targets"] else "not_answer"
            identified = step["action_text"] == "id " + name
            judged_not = bool(NOT_THE_ANSWER.search(step.get("reflection") or ""))
            counts[kind]["steps"] += 1
            counts[kind]["identified_it"] += identified
            counts[kind]["reflection_judged_it_not_the_answer"] += judged_not
            counts[kind]["identified_it_though_judged_not_the_answer"] += identified and judged_not
    keys = ("steps", "identified_it", "reflection_judged_it_not_the_answer", "identified_it_though_judged_not_the_answer")
    return {kind: {key: counts[kind][key] for key in keys} for kind in counts}


def arm_failures(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    failures = [episode for episode in episodes if not episode["success"]]
    wrong_id = after_cat = judged_unrelated = 0
    for episode in failures:
        steps = episode["transcript"]
        last = steps[-1]["action_text"]
        if not last.startswith("id "):
            continue
        wrong_id += 1
        if len(steps) > 1 and steps[-2]["action_text"] == "cat " + last[3:]:
            after_cat += 1
            judged_unrelated += bool(NOT_THE_ANSWER.search(steps[-1].get("reflection") or ""))
    steps = [step for episode in episodes for step in episode["transcript"]]
    named = [step for step in steps if step.get("named") is not None]
    return {
        "episodes": len(episodes),
        "successes": len(episodes) - len(failures),
        "failures_by_outcome": dict(Counter(episode["outcome"] for episode in failures)),
        "wrong_id": wrong_id,
        "wrong_id_right_after_cat_of_it": after_cat,
        "of_those_reflection_judged_it_not_the_answer": judged_unrelated,
        "steps": len(steps),
        # the baselines' transcripts are not judged step by step
        "good_steps": sum(step["action"] in step["good"] for step in steps) if all("good" in step for step in steps)
        else None,
        "steps_whose_reflection_names_a_listed_action": len(named),
        "of_those_policy_took_it": sum(step["named"] == step["action"] for step in named),
        "right_after_a_cat": steps_after_a_cat(episodes),
    }


def training_rows(data: Path) -> dict[str, Any]:
    rows = read_set(data, "train", "policy_noreflect")
    identifications = after_cat = after_other = after_other_negative = 0
    for row in rows:
        last, chosen = last_command(row["state"]), row["actions"][row["action"]]
        if not row["negative"] and chosen.startswith("id "):
            identifications += 1
            after_cat += last == "cat " + chosen[3:]
        if last.startswith("cat ") and chosen != "id " + last[4:]:
            after_other += 1
            after_other_negative += bool(row["negative"])
    return {
        "rows": len(rows),
        "negative_rows": sum(bool(row["negative"]) for row in rows),
        "teacher_identifications": identifications,
        "of_those_right_after_cat_of_it": after_cat,
        "rows_after_a_file_not_identified": after_other,
        "of_those_negative_rows": after_other_negative,
    }


def after_a_read(row: dict[str, Any]) -> str | None:
    """For a policy row right after a ``cat``: ``answer`` when the teacher then identifies the file read,
    else ``not_answer``; None for a row after any other command."""
    last = last_command(row["state"])
    if not last.startswith("cat "):
        return None
    return "answer" if row["actions"][row["action"]] == "id " + last[4:] else "not_answer"


def judgments(rows: list[dict[str, Any]], own: list[str], teacher: list[str]) -> dict[str, dict[str, int]]:
    """Over rows right after a ``cat``, split by ``after_a_read``: how often the reflector's own reflection and
    the teacher's (each a list beside ``rows``) judged the file read not the answer."""
    counts = {kind: Counter() for kind in ("answer", "not_answer")}
    for row, own_text, teacher_text in zip(rows, own, teacher, strict=True):
        kind = after_a_read(row)
        if kind is not None:
            counts[kind]["rows"] += 1
            counts[kind]["own_judged_it_not_the_answer"] += bool(NOT_THE_ANSWER.search(own_text))
            counts[kind]["teacher_judged_it_not_the_answer"] += bool(NOT_THE_ANSWER.search(teacher_text))
    return {kind: {key: counts[kind][key] for key in ("rows", "own_judged_it_not_the_answer",
                                                      "teacher_judged_it_not_the_answer")} for kind in counts}


def reflection_judgments(reflections: Path) -> dict[str, Any]:
    result = {}
    for split in ("train", "val"):
        rows = read_set(reflections, split, "policy")
        result[split] = judgments(rows, [row["reflection"] for row in rows], [row["teacher_reflection"] for row in rows])
    return result


def count(run: Path) -> dict[str, Any]:
    arms = evaluated_arms(run)
    result: dict[str, Any] = {"run": str(run), "arms": {arm: arm_failures(read_episodes(path))
                                                         for arm, path in sorted(arms.items())}}
    if (run / "data").is_dir():
        result["training_rows"] = training_rows(run / "data")
    if (run / "reflections" / "done.json").exists():  # a run's folder (a results folder keeps it gzipped)
        result["reflections_after_a_cat"] = reflection_judgments(run / "reflections")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory, or a results/<recipe>/ folder")
    parser.add_argument("--out", type=Path, help="write the counts here as JSON")
    args = parser.parse_args()
    result = count(args.run)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
