"""Action ids and the one shared parser from free text to an action index.

Ids label the enumerated actions in a prompt: ``0``-``9``, then ``a``-``z``, then
``A``-``Z``, then ``10``-``199`` (``ACTION_IDS``), then plain numbers from ``200`` on,
so a step may list any number of actions. Only the policy's id head needs each id
to be one token of its tokenizer (checked in ``agent.policy``, which refuses more
actions than it has such ids); a tokenizer that splits numbers into digits labels
the actions past its single-character ids with ``EXTRA_ACTION_IDS`` instead. LLM
backends and human players answer in free text; ``parse_action`` maps that text
back to an index, or says why it cannot.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

ACTION_IDS: tuple[str, ...] = tuple(
    list(string.digits) + list(string.ascii_lowercase) + list(string.ascii_uppercase) + [str(i) for i in range(10, 200)]
)

#: letter pairs (``aa``, ``ab``...): the labels a policy whose tokenizer splits numbers into digits
#: (SmolLM2, Llama 2, Qwen) gives actions past its 62 single characters; most are one token there
EXTRA_ACTION_IDS: tuple[str, ...] = tuple(a + b for a in string.ascii_lowercase for b in string.ascii_lowercase)


#: the labels past a list of single-token ids are the plain numbers from this one on: ``200``, ``201``, ...
FIRST_PLAIN_ID = 200


def action_ids(n: int, first: Sequence[str] = ACTION_IDS) -> list[str]:
    """Labels for ``n`` actions: ``first`` in order, then ``200``, ``201``, ... for any number of actions.

    ``first`` holds no number from 200 on (``ACTION_IDS`` and ``EXTRA_ACTION_IDS`` hold none), so the
    labels stay distinct.
    """
    if n < 0:
        raise ValueError(f"the number of actions must be >= 0, got {n}")
    shown = list(first[:n])
    return shown + [str(FIRST_PLAIN_ID + k) for k in range(n - len(shown))]


@dataclass(frozen=True)
class ParsedAction:
    """The index a reply names, or ``index=None`` with the reason it names none."""

    index: int | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.index is not None


#: a label after a keyword ("Action 3", "the answer is (b)", "option: **c**"): groups are the markup before
#: it, the label, the markup after it. A label is not followed by a name character ("c.py", "3.5" are no labels)
_KEYWORD = re.compile(
    r"\b(?:action|choice|option|answer|command|id)(?:\s+id)?(?:\s*(?:\bis\b|[=:#])\s*|\s+)"
    r"(?!(?:is|id)\b\s*[=:#]?\s*[*_`'\"(\[]*[0-9A-Za-z])"
    r"([*_`'\"(\[]*)([0-9A-Za-z]+)(?![\w/-]|\.\w)([*_`'\")\]]*)", re.I)
#: a label opening the first line ("3.", "(b)", "a) push", "2: go north", "4 - look")
_LEADING_ID = re.compile(r"\s*[*_`'\"(\[]*([0-9A-Za-z]+)[*_`'\"]*(?:[)\]]|\s*(?::(?!\w)|\.(?!\w)|-\s|$))")
#: what follows a word, not a label: "the answer is a config file"
_MORE_WORDS = re.compile(r"\s+\w")
_QUOTES = "`'\""
#: a reply that is only an id: "3", "3.", "(3)", "`b`"
_BARE_ID = re.compile(r"[`'\"]?[\(\[]?([0-9A-Za-z]+)[\)\]]?[.:!)]?[`'\"]?")


def _squash(text: str) -> str:
    """``text`` with runs of whitespace collapsed, so a reply's line breaks or double spaces do not matter."""
    return " ".join(text.split())


def _exact(reply: str, actions: list[str], ignore_case: bool) -> ParsedAction | None:
    """The action whose whole text the reply is (whitespace and surrounding quotes aside); None if there is none.

    With ``ignore_case``, texts that differ only by case make the reply ambiguous rather than picking one.
    """
    def key(text: str) -> str:
        return _squash(text).casefold() if ignore_case else _squash(text)

    if not ignore_case and reply in actions:
        return ParsedAction(actions.index(reply))
    for candidate in (key(reply), key(reply.strip(_QUOTES))):
        found = sorted({i for i, action in enumerate(actions) if key(action) == candidate})
        if len(found) == 1:
            return ParsedAction(found[0])
        if found:
            return ParsedAction(None, f"reply {reply[:80]!r} matches several actions: {[actions[i] for i in found]}")
    return None


def _mentions(text: str, actions: list[str]) -> list[tuple[int, int, int]]:
    """Where action texts occur in ``text`` as whole phrases: ``(start, end, action index)``.

    Same case first; only if no action text occurs in the reply's own case, case-insensitively.
    Whitespace inside a phrase may differ. A phrase ends where no name character (word, ``/``,
    ``-``, or ``.`` followed by one) goes on, so ``cat a.py`` is not found in ``cat a.py.bak``;
    an occurrence inside a longer one (``id a`` inside ``id a b``) does not count.
    """
    found: list[tuple[int, int, int]] = []
    folded = text.casefold()
    for flags in (0, re.IGNORECASE):
        for index, action in enumerate(actions):
            words = action.split()
            if not words or not all(word.casefold() in folded for word in words):
                continue
            pattern = r"(?<![\w./-])" + r"\s+".join(map(re.escape, words)) + r"(?!\.?[\w/-])"
            found += [(m.start(), m.end(), index) for m in re.finditer(pattern, text, flags)]
        if found:
            break
    outermost, reach = set(), -1
    for start, end in sorted({(start, end) for start, end, _ in found}, key=lambda span: (span[0], -span[1])):
        if end > reach:  # a span ending within an earlier-starting one lies inside it
            outermost.add((start, end))
            reach = end
    return [(start, end, index) for start, end, index in found if (start, end) in outermost]


def _presents_label(text: str, keyword: re.Match) -> bool:
    """Whether a keyword's letter label reads as a label: marked up ("(a)", "**a**") or not followed by more
    words, since "the answer is a config file" uses the word "a". A number after a keyword is always a label."""
    before, label, after = keyword.groups()
    return not label.isalpha() or bool(before and after) or not _MORE_WORDS.match(text, keyword.end())


def _ids_named(text: str, index_of_id: dict[str, int]) -> list[int]:
    """The actions a reply names by label: after a keyword ("Action 3", "answer: b"), else at the start of its
    first line ("3."). Several different ones make the reply ambiguous."""
    named = {index_of_id[keyword.group(2)] for keyword in _KEYWORD.finditer(text)
             if keyword.group(2) in index_of_id and _presents_label(text, keyword)}
    if not named and text.strip():
        leading = _LEADING_ID.match(text.splitlines()[0])
        if leading and leading.group(1) in index_of_id:
            named.add(index_of_id[leading.group(1)])
    return sorted(named)


def last_mentioned(text: str, actions: list[str]) -> int | None:
    """The action whose text ``text`` quotes last (an analysis names its conclusion last), or None."""
    mentions = _mentions(text, actions) if text else []
    return max(mentions)[2] if mentions else None


def parse_action(reply: str, actions: list[str], ids: list[str] | None = None) -> ParsedAction:
    """Map a free-text reply ("3", "3.", "Action 3", "cat setup.py") to an action index.

    ``ids[i]`` is the label shown for ``actions[i]`` (default: ``action_ids``); a
    shuffled labelling is passed explicitly. An action's own text always names
    that action, even when it reads like an id form (AutoExplore's ``id 3`` for a
    file named ``3``): a reply is matched against whole action texts first, and id
    forms are looked for only outside the action texts it quotes; an id that
    contradicts the quoted text makes the reply invalid. Texts that differ only by
    case (``cat README``, ``cat readme``) stay distinct; case is ignored only where
    that leaves one action. A label counts only where the reply presents one: after
    a keyword or opening the reply, and not as part of a name (``c.py``) or, for a
    letter, a word (``the answer is a config file``); two different labels make the
    reply ambiguous, so invalid.
    """
    if ids is None:
        ids = action_ids(len(actions))
    if len(ids) != len(actions):
        raise ValueError(f"{len(ids)} ids given for {len(actions)} actions")
    if not isinstance(reply, str) or not reply.strip():
        return ParsedAction(None, "empty reply")
    index_of_id = {label: i for i, label in enumerate(ids)}
    text = reply.strip()
    exact = _exact(text, actions, ignore_case=False)
    if exact is not None:
        return exact
    bare = _BARE_ID.fullmatch(text)
    if bare and bare.group(1) in index_of_id:
        return ParsedAction(index_of_id[bare.group(1)])
    exact = _exact(text, actions, ignore_case=True)
    if exact is not None:
        return exact
    mentions = _mentions(text, actions)
    outside = list(text)
    for start, end, _ in mentions:
        outside[start:end] = " " * (end - start)
    named = sorted({index for _, _, index in mentions})
    labelled = _ids_named("".join(outside), index_of_id)
    if len(labelled) > 1:
        return ParsedAction(None, f"reply names several ids: {[ids[i] for i in labelled]}")
    by_id = labelled[0] if labelled else None
    if by_id is not None and (not named or by_id in named):
        return ParsedAction(by_id)
    if by_id is not None:
        return ParsedAction(None, f"reply names id {ids[by_id]} ({actions[by_id]!r}) but the action text(s) "
                                  f"{[actions[i] for i in named]}")
    if len(named) == 1:
        return ParsedAction(named[0])
    if named:
        return ParsedAction(None, f"reply names several actions: {[actions[i] for i in named]}")
    shown = ", ".join(ids[: min(len(ids), 12)]) + (" ..." if len(ids) > 12 else "")
    return ParsedAction(None, f"reply {text[:80]!r} names no valid action id ({shown}) or action text")
