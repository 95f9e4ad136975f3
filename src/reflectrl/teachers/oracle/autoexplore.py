"""Oracle reflections for AutoExplore, written from the env's privileged facts.

A reflection says what the question is about, where the answering file lies
relative to the current directory and which way leads there, whether the file
just read answers the question, and, for negative examples, why the last
command was a mistake. It ends with the next step in words ("go up one
directory", "read thread.py"); it never names an action id.
"""

from __future__ import annotations

import random
from typing import Any

from reflectrl.envs.base import Observation

_MAX_TOPIC_WORDS = 7

_HERE_UNREAD = (
    "The question asks for {subject}, and {name} right here in {cwd} is where that lives.",
    "{Subject} is what we need; this directory, {cwd}, holds {name}, its likely home.",
    "We are in the right place: {name} in {cwd} should contain {subject}.",
)
_HERE_READ = (
    "{name} has been read and it does contain {subject}, so it answers the question.",
    "The contents of {name} match {subject}; that is the file we were looking for.",
    "Reading {name} showed that it holds {subject}.",
)
_HERE_NAMED = (
    "The question names {name}, and it is right here in {cwd}.",
    "{name}, the file the question asks for, is listed in {cwd}.",
    "We have reached {cwd}, which holds {name}, the requested file.",
)
_BELOW = (
    "The question is about {subject}, which lives under {answer_dir}; {step} is the branch that leads there.",
    "{Subject} belongs in {answer_dir}, so the way goes down through {step}.",
    "To find {subject} we need {answer_dir}, and {step} below {cwd} is on the way.",
)
_ELSEWHERE = (
    "Nothing under {cwd} matches {subject}; the answer is in {answer_dir}, so we have to back out.",
    "{Subject} is not inside {cwd}: it sits in {answer_dir}, outside this branch.",
    "We are off track in {cwd}; {subject} is found in {answer_dir} instead.",
)
_READ_NOT_ANSWER = (
    "The file just read, {read}, does not answer the question.",
    "{read} turned out to be unrelated.",
    "What {read} contains does not match the question.",
)
_NEXT = {
    "up": (
        "Next, go up one directory.",
        "So move up to the parent directory.",
        "The right move is to climb back to the parent folder.",
    ),
    "down": (
        "Next, enter {arg}.",
        "So change into the {arg} directory.",
        "Go down into {arg} now.",
    ),
    "cat": (
        "Next, read {arg} to confirm.",
        "Open {arg} and check its contents.",
        "So look inside {arg} before answering.",
    ),
    "id": (
        "So identify {arg} as the answer.",
        "Now answer with {arg}.",
        "Submit {arg} as the file that answers the question.",
    ),
}
_WRONG = {
    "up": (
        "Going up to {cwd} left the branch that held the answer.",
        "Climbing to {cwd} moved away from the answer, which was below.",
    ),
    "down": (
        "Entering {arg} was a detour: the answer is not inside it.",
        "The move into {arg} led away from the answer.",
    ),
    "cat": (
        "Reading {arg} wasted a step: it is not the file we need.",
        "Opening {arg} did not help, since it is unrelated to the question.",
    ),
    "invalid": (
        "The last reply was not one of the listed commands, which costs an error.",
        "The last reply named no valid command, so the step was wasted with an error.",
    ),
    "other": (
        "The last command did not bring us closer to the answer.",
        "That last move was not on the shortest way to the answer.",
    ),
}


def _short(text: str) -> str:
    words = text.split()
    return " ".join(words[:_MAX_TOPIC_WORDS]) + ("..." if len(words) > _MAX_TOPIC_WORDS else "")


def _subject(facts: dict[str, Any]) -> str:
    """What the question is about, as a short noun phrase."""
    topic, kind = facts["topic"], facts["kind"]
    if kind == "code":
        return f'code described as "{_short(topic)}"'
    if kind == "text" and not topic.startswith("a configuration"):
        return f'the document on "{_short(topic)}"'
    return _short(topic)


def _split_command(command: str) -> tuple[str, str]:
    """``("up"|"down"|"cat"|"id", argument)`` of a command text."""
    verb, _, arg = command.partition(" ")
    if verb == "cd":
        return ("up", "") if arg == ".." else ("down", arg)
    if verb in ("cat", "id"):
        return verb, arg
    raise ValueError(f"autoexplore teacher: {command!r} is not a cd/cat/id command")


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def reflect(
    state: Observation,
    history: list[str],
    next_good_action: str,
    was_last_action_wrong: bool,
    rng: random.Random,
) -> str:
    """Explain where the answer lies and why, judge the last file read, and say the next step in words."""
    if next_good_action not in state.actions:
        raise ValueError(f"autoexplore teacher: next_good_action {next_good_action!r} is not a command of this "
                         f"state ({len(state.actions)} commands)")
    if was_last_action_wrong and not history:
        raise ValueError("autoexplore teacher: was_last_action_wrong=True needs a non-empty history")
    facts = state.info["oracle"]
    subject = _subject(facts)
    fields = {
        "subject": subject, "Subject": _capitalize(subject), "cwd": facts["cwd_display"],
        "answer_dir": facts["answer_dir_display"], "name": facts["target_name"],
    }
    sentences = []
    if was_last_action_wrong:
        sentences.append(_explain_mistake(facts, history[-1], fields, rng))
    verb, arg = _split_command(next_good_action)
    if facts["cwd"] == facts["answer_dir"]:
        templates = _HERE_NAMED if facts["kind"] == "name" else _HERE_READ if facts["target_read"] else _HERE_UNREAD
        sentences.append(rng.choice(templates).format(**fields))
    elif facts["on_path"]:
        step = facts["answer_dir"][len(facts["cwd"]) + 1:] if facts["cwd"] else facts["answer_dir"]
        sentences.append(rng.choice(_BELOW).format(step=step.split("/")[0], **fields))
    else:
        sentences.append(rng.choice(_ELSEWHERE).format(**fields))
    last_read = facts["last_read"]
    if (not was_last_action_wrong and last_read and not facts["last_read_is_target"]
            and history and history[-1].startswith("cat ")):
        sentences.insert(0, rng.choice(_READ_NOT_ANSWER).format(read=last_read.rsplit("/", 1)[-1], **fields))
    sentences.append(rng.choice(_NEXT[verb]).format(arg=arg))
    return " ".join(sentences)


def _explain_mistake(facts: dict[str, Any], last: str, fields: dict[str, str], rng: random.Random) -> str:
    """Why the command ``last`` (the one that led to this state) was wrong, judged from where it led."""
    if last != facts["last_action"]:
        raise ValueError(f"autoexplore teacher: history[-1] is {last!r} but the state came from "
                         f"{facts['last_action']!r}")
    kind, arg = "invalid", ""
    if not last.endswith("(invalid)"):
        kind, arg = _split_command(last)
        if kind == "down" and facts["on_path"] or kind == "cat" and facts["last_read_is_target"] or kind == "id":
            kind = "other"
    return rng.choice(_WRONG[kind]).format(arg=arg, **fields)
