"""Episode transcripts: what every evaluation keeps, one JSON line per episode.

A record holds the task, its level, the outcome (``success`` or how the
episode failed, named by the env's ``failure_kind``), the return and, per
step, the observation, the reflection, the listed actions, the chosen action
with its probability, and the reward; then what the env showed after the last
step. ``format_episode`` renders one for a person (``reflectrl show``), and
``failure_breakdown`` counts how failed episodes end, per level; where the steps
were judged (the good actions and the action each reflection names, recorded by
evaluation), ``player_breakdown`` tells a wrong reflection from one the policy
did not follow.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import textwrap
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflectrl.envs.base import TextEnv
from reflectrl.eval.baselines import EpisodeResult
from reflectrl.errors import UserError
from reflectrl.run_files import parse_jsonl_tolerant, read_jsonl_tolerant

if TYPE_CHECKING:  # the trainer's types: reading transcripts needs neither torch nor a model
    from reflectrl.agent.rollout import Episode

EPISODES_FILE = "episodes.jsonl"
SAMPLED_EPISODES_FILE = "episodes_sampled.jsonl"
SUCCESS = "success"


def task_json(task: Any) -> Any:
    """A task as JSON: its own ``to_json``, a dataclass's fields, a plain value as is, else its repr."""
    if hasattr(task, "to_json"):
        return task.to_json()
    if dataclasses.is_dataclass(task) and not isinstance(task, type):
        return dataclasses.asdict(task)
    try:
        json.dumps(task)
    except (TypeError, ValueError):
        return repr(task)
    return task


def _json_safe(value: Any) -> Any:
    """An env's info dict as JSON (numpy scalars and other objects become their str)."""
    return json.loads(json.dumps(value, default=str))


def _record(env: TextEnv, level: str, task: Any, seed: int | None, success: bool, episode_return: float,
            truncated: bool, steps: list[dict[str, Any]], final_observation: str, info: dict[str, Any]) -> dict[str, Any]:
    record = {
        "level": level, "task": task_json(task), "seed": seed, "success": bool(success),
        "return": float(episode_return), "steps": len(steps), "end": "truncated" if truncated else "terminated",
        "invalid": sum(step["action"] is None for step in steps), "transcript": steps,
        "final": {"observation": final_observation, "info": _json_safe(info)},
    }
    record["outcome"] = SUCCESS if success else env.failure_kind(record)
    return record


def rollout_record(env: TextEnv, level: str, episode: Episode) -> dict[str, Any]:
    """The record of a model's episode (``agent.rollout``): probabilities are those it was chosen with."""
    steps = [{"observation": s.observation, "reflection": s.reflection, "actions": s.actions, "action": s.action,
              "action_text": s.action_text, "probability": round(math.exp(s.log_prob), 4), "reward": s.reward,
              **({"good": s.good} if s.good is not None else {}),
              **({"named": s.named} if s.good is not None and s.reflection is not None else {})}
             for s in episode.steps]
    truncated = bool(episode.steps) and episode.steps[-1].truncated
    return _record(env, level, episode.task, episode.seed, episode.success, episode.episode_return, truncated,
                   steps, episode.final_observation, episode.info)


def agent_record(env: TextEnv, level: str, task: Any, seed: int | None, result: EpisodeResult) -> dict[str, Any]:
    """The record of a sequential agent's episode (``eval.baselines.play_episode``)."""
    return _record(env, level, task, seed, result.success, result.episode_return, result.truncated,
                   result.transcript, result.final_observation, result.info)


def episodes_file(arm_dir: str | Path, sampled: bool = False) -> Path | None:
    """An evaluated arm's transcripts: ``episodes.jsonl``, or its gzipped copy (as ``results/`` keeps them)."""
    name = SAMPLED_EPISODES_FILE if sampled else EPISODES_FILE
    for path in (Path(arm_dir) / name, Path(arm_dir) / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def evaluated_arms(run_dir: str | Path, sampled: bool = False) -> dict[str, Path]:
    """A run directory's evaluated arms, by name, each with its transcripts (``eval/<arm>/``)."""
    found = {arm_dir.name: episodes_file(arm_dir, sampled) for arm_dir in sorted(Path(run_dir, "eval").glob("*"))}
    return {arm: path for arm, path in found.items() if path is not None}


#: what every record holds (``_record``): pairing, counting and ``format_episode`` read these
RECORD_KEYS = ("level", "task", "seed", "success", "return", "steps", "outcome", "transcript", "final")


def read_episodes(path: str | Path) -> list[dict[str, Any]]:
    """The records of an ``episodes.jsonl`` (or ``.jsonl.gz``); none when it does not exist. A file that is
    not transcripts (bad gzip, a line that is not a record) is refused, naming the file and line."""
    path = Path(path)
    if path.suffix != ".gz":
        records = read_jsonl_tolerant(path)
    elif not path.exists():
        return []
    else:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                records = parse_jsonl_tolerant(handle.read(), path)
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise UserError(f"{path} is not a readable gzipped episodes file: {error}") from None
    for number, record in enumerate(records, 1):
        missing = [key for key in RECORD_KEYS if key not in record] if isinstance(record, dict) else RECORD_KEYS
        if missing:
            raise UserError(f"{path}: record {number} is not an episode transcript (it lacks "
                            f"{', '.join(missing)}); name an episodes file that an evaluation wrote")
        fault = _record_fault(record)
        if fault is not None:
            raise UserError(f"{path}: record {number} is damaged: {fault}; name an episodes file that an "
                            f"evaluation wrote")
    return records


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_index(value: Any, length: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < length


#: a record's fields that readers use, each with what it must be
_RECORD_FIELDS: dict[str, tuple[str, Any]] = {
    "level": ("a string", lambda v: isinstance(v, str)),
    "seed": ("an integer or null", lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool))),
    "success": ("true or false", lambda v: isinstance(v, bool)),
    "return": ("a number", _is_number),
    "steps": ("a count", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "outcome": ("a string", lambda v: isinstance(v, str)),
    "transcript": ("a list of steps", lambda v: isinstance(v, list)),
    "final": ("an object with the final observation", lambda v: isinstance(v, dict)
              and isinstance(v.get("observation"), str)),
}
_STEP_FIELDS: dict[str, tuple[str, Any]] = {
    "observation": ("a string", lambda v: isinstance(v, str)),
    "reflection": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "actions": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v)),
    "action_text": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "reward": ("a number", _is_number),
}


def _record_fault(record: dict[str, Any]) -> str | None:
    """What in a record's fields would mislead or break a reader (``format_episode``, counting, pairing), or
    None; checked on reading, so that a hand-edited or damaged file is refused by name, not half-read."""
    for key, (expected, valid) in _RECORD_FIELDS.items():
        if not valid(record[key]):
            return f"{key!r} is {json.dumps(record[key])[:60]}, not {expected}"
    for number, step in enumerate(record["transcript"], 1):
        if not isinstance(step, dict):
            return f"step {number} is {json.dumps(step)[:60]}, not an object"
        for key, (expected, valid) in _STEP_FIELDS.items():
            if key not in step:
                return f"step {number} lacks {key!r}"
            if not valid(step[key]):
                return f"step {number}'s {key!r} is {json.dumps(step[key])[:60]}, not {expected}"
        if "action" not in step or ("named" in step and "good" not in step):
            return f"step {number} lacks {'action' if 'action' not in step else 'good'!r}"
        actions = len(step["actions"])
        if step["action"] is not None and not _is_index(step["action"], actions):
            return f"step {number}'s 'action' is {json.dumps(step['action'])[:60]}, not null or an index " \
                   f"into its {actions} actions"
        if step.get("probability") is not None and not _is_number(step["probability"]):
            return f"step {number}'s 'probability' is {json.dumps(step['probability'])[:60]}, not a number or null"
        if "good" in step and not (isinstance(step["good"], list) and all(_is_index(i, actions) for i in step["good"])):
            return f"step {number}'s 'good' is {json.dumps(step['good'])[:60]}, not a list of indexes into its actions"
        if step.get("named") is not None and not _is_index(step["named"], actions):
            return f"step {number}'s 'named' is {json.dumps(step['named'])[:60]}, not null or an index into its actions"
    return None


def failure_breakdown(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per level, how many episodes ended each way (``success`` included), most frequent first."""
    levels: dict[str, Counter] = {}
    for record in records:
        levels.setdefault(record["level"], Counter())[record["outcome"]] += 1
    return {level: dict(counts.most_common()) for level, counts in levels.items()}


#: whose step a failed episode first went wrong on (``player_breakdown``)
BLAME = ("reflector", "policy", "both", "unnamed")


def _blame(step: dict[str, Any]) -> str:
    """Whose is a wrong step: the reflector's (it named a bad action, which the policy took), the
    policy's (it left a good named action), both (a bad named action, left for another bad one), or
    ``unnamed`` (the reflection named no action)."""
    named, good = step["named"], step["good"]
    if named is None:
        return "unnamed"
    if named in good:
        return "policy"
    return "reflector" if step["action"] == named else "both"


def player_breakdown(records: list[dict[str, Any]]) -> dict[str, Counter]:
    """Per level, of episodes played with reflections on judged steps (``rollout(judge=True)``):
    steps, how many the reflection named a good action on (``reflection_good``), the policy took the
    named action on (``followed``), the action taken was good on (``action_good``); failed episodes
    (``failed``) and, for each, whose step it first went wrong on (``BLAME``)."""
    levels: dict[str, Counter] = {}
    for record in records:
        judged = [step for step in record["transcript"] if "good" in step and "named" in step]
        if not judged:
            continue
        counts = levels.setdefault(record["level"], Counter())
        for step in judged:
            counts["steps"] += 1
            counts["reflection_good"] += step["named"] in step["good"]
            counts["followed"] += step["named"] is not None and step["action"] == step["named"]
            counts["action_good"] += step["action"] in step["good"]
        if not record["success"]:
            counts["failed"] += 1
            wrong = next((step for step in judged if step["action"] not in step["good"]), None)
            if wrong is not None:
                counts[_blame(wrong)] += 1
    return levels


def _indent(text: str, prefix: str = "    ") -> str:
    return textwrap.indent(text.rstrip("\n"), prefix)


def _short(text: str, lines: int) -> str:
    kept = text.rstrip("\n").split("\n")
    return "\n".join(kept[:lines] + ([f"[... {len(kept) - lines} more lines]"] if len(kept) > lines else []))


def _judged(step: dict[str, Any]) -> str:
    """``names: move north (good)``, or what it should have named."""
    named = "no action" if step["named"] is None else step["actions"][step["named"]]
    verdict = "good" if step["named"] in step["good"] else \
        "not good; good: " + ", ".join(step["actions"][i] for i in step["good"])
    return f"names: {named} ({verdict})"


def format_episode(record: dict[str, Any], max_lines: int | None = None) -> str:
    """One episode for a person: the task, then per step what the agent saw, thought and did, then the end.

    ``max_lines`` shortens each observation (the report's examples); ``None`` prints them whole.
    """
    head = (f"level {record['level']} | task {json.dumps(record['task'])[:120]} | seed {record['seed']} | "
            f"{record['outcome']} | return {record['return']:+.2f} | {record['steps']} steps")
    out = [head]
    for number, step in enumerate(record["transcript"], 1):
        observation = step["observation"] if max_lines is None else _short(step["observation"], max_lines)
        out.append(f"--- step {number}")
        out.append(_indent(observation))
        if step.get("reflection") is not None:
            out.append("  reflection: " + " ".join(step["reflection"].split()))
            if "named" in step:
                out.append("  " + _judged(step))
        if max_lines is None:
            out.append("  actions: " + " | ".join(step["actions"]))
        chosen = step["action_text"] if step["action"] is not None else f"{step['action_text']!r} (named no action)"
        probability = f" (p={step['probability']:.2f})" if step.get("probability") is not None else ""
        out.append(f"  >>> {chosen}{probability}   reward {step['reward']:+.3f}")
    final = record["final"]["observation"]
    out.append("--- end")
    out.append(_indent(final if max_lines is None else _short(final, max_lines)))
    return "\n".join(out)
