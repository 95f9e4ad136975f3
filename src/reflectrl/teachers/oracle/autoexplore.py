"""Oracle reflections for AutoExplore, written from the env's privileged facts.

A reflection says what the question is about, where the answering file lies
relative to the current directory and which way leads there, whether the file
just read answers the question, and, for negative examples, why the last
command was a mistake. It ends with the next step in words ("go up one
directory", "read thread.py"); it never names an action id.

With the env's search expert (``expert="search"``) a reflection says only what
the screen supports: whether the file just read shows the question's passage,
which unread name shares words with the question, what is left to explore.

With ``quote_reads`` a reflection right after a ``cat`` starts from the
evidence: it quotes the line of what was shown nearest the question, then says
whether that line is the question's sentence. A verdict written first must be
decided before anything of the file is repeated; after the quote, the reflector
compares two strings both in view.
"""

from __future__ import annotations

import random
from typing import Any

from reflectrl.envs.autoexplore.env import RESULT_HEADING
from reflectrl.envs.autoexplore.search import shows_topic, words
from reflectrl.envs.base import Observation

_MAX_TOPIC_WORDS = 7
#: a quoted line of what ``cat`` showed is cut after this many words
_MAX_QUOTE_WORDS = 12

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
_QUOTE = (
    '{read} shows "{line}".',
    'Reading {read} showed "{line}".',
)
_QUOTE_NOTHING = (
    "{read} shows nothing.",
    "Reading {read} showed nothing.",
)
_IS_SENTENCE = "That is the question's sentence."
_NOT_SENTENCE = "That is not the question's sentence."
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


_SHOWS = (
    "Reading {read} turned up {subject}.",
    "What {read} shows includes {subject}.",
    "The file {read} shows {subject}.",
)
_SHOWS_NOT = (
    "The file {read} shows nothing like {subject}.",
    "No {subject_plain} in what {read} shows.",
    "What {read} shows has no {subject_plain}.",
)
_FOUND_HERE = (
    "So {file} is the file that answers the question.",
    "That settles it: {file} is the answer.",
)
_FOUND_ELSEWHERE = (
    "The answer was already seen in {file}, back in {where}.",
    "Reading {file} in {where} showed it earlier.",
)
_READ_SHARED = (
    "The unread file {name} shares {shared} with the question.",
    "Of the unread names here, {name} matches the question best ({shared}).",
)
_READ_PLAIN = (
    "No unread name here shares a word with the question, so {name} is as good a guess as any.",
    "Nothing here is named after the question; {name} is next among the unread files.",
)
_ENTER_SHARED = (
    "The directory {name} shares {shared} with the question.",
    "The name of {name} matches the question ({shared}), so it is the place to look.",
)
_ENTER_PLAIN = (
    "Every file in {cwd} has been read; {name} is still unexplored.",
    "Nothing is left to read in {cwd}, but {name} has not been explored.",
)
_ENTER_NAMED = (
    "There is no {file} in {cwd}; {name} is still unexplored.",
    "No {file} in {cwd}, so look in {name}, not yet visited.",
)
_BACK = (
    "Nothing is left to check in {cwd}: every file has been read and every directory visited.",
    "All of {cwd} has been searched, so the answer must be elsewhere.",
)
_BACK_NAMED = (
    "There is no {file} anywhere under {cwd}.",
    "Neither {cwd} nor its directories hold {file}.",
)
_SEARCH_NEXT_CAT = (
    "Next, read {arg}.",
    "Open {arg} and check its contents.",
    "So look inside {arg}.",
)
_SEARCH_WRONG = {
    "up": (
        "Going up to {cwd} left more promising entries behind.",
        "Climbing to {cwd} abandoned entries still worth checking.",
    ),
    "down": (
        "Entering {arg} passed over a more promising entry.",
        "The directory {arg} was not the best place to look next.",
    ),
    "cat": (
        "Reading {arg} was not the best bet.",
        "Opening {arg} passed over a more promising file.",
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


def nearest_line(shown: str, topic: str) -> str | None:
    """The line of what ``cat`` showed that holds the question's passage, else the one sharing the most words
    with it (the first of equals); None when nothing was shown. An outline's heading is not a line of the file."""
    lines = [line.strip() for line in shown.splitlines() if line.strip() and not line.startswith("Outline (")]
    if not lines:
        return None
    wanted = set(words(topic))
    # max keeps the first of equals
    return next((line for line in lines if shows_topic(line, topic)),
                max(lines, key=lambda line: len(wanted & set(words(line)))))


def _quoted_read(state: Observation, facts: dict[str, Any], rng: random.Random) -> list[str]:
    """The evidence of the file just read, then the verdict on it: ``quote_reads``' first two sentences."""
    read = facts["last_read"].rsplit("/", 1)[-1]
    line = nearest_line(state.text.split(RESULT_HEADING, 1)[-1], facts["topic"])
    if line is None:
        return [rng.choice(_QUOTE_NOTHING).format(read=read), _NOT_SENTENCE]
    cut = line.split()
    if len(cut) > _MAX_QUOTE_WORDS:
        line = " ".join(cut[:_MAX_QUOTE_WORDS]) + "..."
    verdict = _IS_SENTENCE if facts["last_read_shows"] else _NOT_SENTENCE
    return [rng.choice(_QUOTE).format(read=read, line=line), verdict]


def reflect(
    state: Observation,
    history: list[str],
    next_good_action: str,
    was_last_action_wrong: bool,
    rng: random.Random,
    quote_reads: bool = False,
) -> str:
    """Explain where the answer lies and why, judge the last file read, and say the next step in words."""
    if next_good_action not in state.actions:
        raise ValueError(f"autoexplore teacher: next_good_action {next_good_action!r} is not a command of this "
                         f"state ({len(state.actions)} commands)")
    if was_last_action_wrong and not history:
        raise ValueError("autoexplore teacher: was_last_action_wrong=True needs a non-empty history")
    facts = state.info["oracle"]
    if facts.get("expert") == "search" and facts["move"]["reason"] != "shortest":
        return _reflect_search(facts, history, next_good_action, was_last_action_wrong, rng)
    subject = _subject(facts)
    fields = {
        "subject": subject, "Subject": _capitalize(subject), "cwd": facts["cwd_display"],
        "answer_dir": facts["answer_dir_display"], "name": facts["target_name"],
    }
    read_now = facts["last_read"] is not None and bool(history) and history[-1].startswith("cat ")
    quoting = quote_reads and facts["kind"] != "name" and read_now
    sentences = _quoted_read(state, facts, rng) if quoting else []
    if was_last_action_wrong and not quoting:
        sentences.append(_explain_mistake(facts, history[-1], fields, rng))
    verb, arg = _split_command(next_good_action)
    if facts["cwd"] == facts["answer_dir"]:
        templates = _HERE_NAMED if facts["kind"] == "name" else _HERE_READ if facts["target_read"] else _HERE_UNREAD
        if not (quoting and facts["last_read_is_target"]):  # the verdict has just said it
            sentences.append(rng.choice(templates).format(**fields))
    elif facts["on_path"]:
        step = facts["answer_dir"][len(facts["cwd"]) + 1:] if facts["cwd"] else facts["answer_dir"]
        sentences.append(rng.choice(_BELOW).format(step=step.split("/")[0], **fields))
    else:
        sentences.append(rng.choice(_ELSEWHERE).format(**fields))
    if not was_last_action_wrong and not quoting and read_now and not facts["last_read_is_target"]:
        sentences.insert(0, rng.choice(_READ_NOT_ANSWER).format(read=facts["last_read"].rsplit("/", 1)[-1], **fields))
    sentences.append(rng.choice(_NEXT[verb]).format(arg=arg))
    return " ".join(sentences)


def _last_command(facts: dict[str, Any], last: str) -> tuple[str, str]:
    """``(kind, argument)`` of ``last``, the command that led to this state (``("invalid", "")`` for a reply
    that named none); a history that does not end with the env's last command is refused."""
    if last != facts["last_action"]:
        raise ValueError(f"autoexplore teacher: history[-1] is {last!r} but the state came from "
                         f"{facts['last_action']!r}")
    return ("invalid", "") if last.endswith("(invalid)") else _split_command(last)


def _explain_mistake(facts: dict[str, Any], last: str, fields: dict[str, str], rng: random.Random) -> str:
    """Why the command ``last`` (the one that led to this state) was wrong, judged from where it led."""
    kind, arg = _last_command(facts, last)
    if kind == "down" and facts["on_path"] or kind == "cat" and facts["last_read_is_target"] or kind == "id":
        kind = "other"
    return rng.choice(_WRONG[kind]).format(arg=arg, **fields)


def _quoted(words: list[str]) -> str:
    return " and ".join(f"'{word}'" for word in words[:2])


def _reflect_search(
    facts: dict[str, Any], history: list[str], next_good_action: str, was_last_action_wrong: bool,
    rng: random.Random,
) -> str:
    """A search expert's reflection: judge what was read, say why the next entry is the most promising."""
    move = facts["move"]
    subject = _subject(facts)
    fields = {"subject": subject, "subject_plain": subject.removeprefix("the "), "cwd": facts["cwd_display"]}
    sentences = []
    last = history[-1] if history else None
    read_last = last is not None and last.startswith("cat ") and facts["last_read"] is not None
    if was_last_action_wrong and not (read_last and facts["last_read_shows"]):
        kind, arg = _last_command(facts, last)
        templates = _WRONG["invalid"] if kind == "invalid" else _SEARCH_WRONG.get(kind, _WRONG["other"])
        sentences.append(rng.choice(templates).format(arg=arg, **fields))
    if read_last and facts["kind"] != "name":
        read = facts["last_read"].rsplit("/", 1)[-1]
        sentences.append(rng.choice(_SHOWS if facts["last_read_shows"] else _SHOWS_NOT).format(read=read, **fields))
    verb, arg = _split_command(next_good_action)
    reason = move["reason"]
    named = facts["target_name"]
    if reason == "found":
        file = move["file"].rsplit("/", 1)[-1]
        if verb == "id":
            templates, extra = _FOUND_HERE, {}
        else:
            templates = _FOUND_ELSEWHERE
            extra = {"where": move["where"]}
        sentences.append(rng.choice(templates).format(file=file, **extra, **fields))
    elif reason == "named":
        sentences.append(rng.choice(_HERE_NAMED).format(name=named, **fields))
    elif reason in ("read", "enter"):
        shared = move["shared"]
        if shared:
            templates = _READ_SHARED if reason == "read" else _ENTER_SHARED
        elif reason == "read":
            templates = _READ_PLAIN
        else:
            templates = _ENTER_NAMED if facts["kind"] == "name" else _ENTER_PLAIN
        sentences.append(rng.choice(templates).format(name=arg, shared=_quoted(shared), file=named, **fields))
    else:
        templates = _BACK_NAMED if facts["kind"] == "name" else _BACK
        sentences.append(rng.choice(templates).format(file=named, **fields))
    sentences.append(rng.choice(_SEARCH_NEXT_CAT if verb == "cat" else _NEXT[verb]).format(arg=arg))
    return " ".join(sentences)
