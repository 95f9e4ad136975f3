"""How a reader without privileged knowledge looks for the answering file: by names, then by evidence.

The shortest-path oracle walks straight to the target, so its reflections
teach guessing: nothing the agent can see tells it which file of a directory
answers. The search expert uses only what the agent sees. It reads the unread
entry whose name shares the most words with the question (``relevance``),
identifies a file once reading it showed the question's sentence
(``shows_topic``), and otherwise moves on: the next candidate, a subdirectory,
or back up. Every one of its moves can be explained from the screen.
"""

from __future__ import annotations

import posixpath
import re

#: words that say nothing about which file answers ("the class described as ...")
_STOP_WORDS = frozenset(
    "the and for with from into that this are its which file implements class function module described "
    "was not has have use used using when then than can".split()
)
_SUFFIXES = ("ing", "ers", "er", "es", "s", "ed")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")
#: a shared word prefix counts for half a word ("thread" in threading.py for "threads")
_PREFIX_WEIGHT = 0.5
_MIN_PREFIX = 4


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words(text: str) -> dict[str, str]:
    """The informative words of ``text`` (names split at ``_``, ``.``, ``-`` and camelCase), stem -> word."""
    found: dict[str, str] = {}
    for word in _SPLIT.split(_CAMEL.sub(r"\1 \2", text).lower()):
        if len(word) > 2 and word not in _STOP_WORDS:
            found.setdefault(_stem(word), word)
    return found


def shared_words(name: str, topic: str) -> tuple[list[str], list[str]]:
    """The question's words that the entry ``name`` (extension dropped) shares, as the question writes them:
    (whole words, words sharing a prefix), one per word of the name."""
    mine = words(posixpath.splitext(name)[0])
    theirs = words(topic)
    whole = [theirs[stem] for stem in mine if stem in theirs]
    partial = []
    for stem in mine:
        if stem not in theirs and len(stem) >= _MIN_PREFIX:
            other = next((o for o in theirs if len(o) >= _MIN_PREFIX and (o.startswith(stem) or stem.startswith(o))), None)
            if other is not None:
                partial.append(theirs[other])
    return whole, partial


def relevance(name: str, topic: str) -> float:
    """How well an entry's name matches the question: shared words, prefixes counting half."""
    whole, partial = shared_words(name, topic)
    return len(whole) + _PREFIX_WEIGHT * len(partial)


def _normalized(text: str) -> str:
    return " ".join(text.replace("``", "`").replace('"', "'").split()).lower()


def shows_topic(shown: str, topic: str) -> bool:
    """Whether what ``cat`` showed holds the question's passage (case and spacing aside)."""
    return _normalized(topic) in _normalized(shown)
