"""Action ids and the one shared parser from free text to an action index.

Ids label the enumerated actions in a prompt: ``0``-``9``, then ``a``-``z``, then
``A``-``Z``, then ``10``-``199``. Each must be one token of the policy's tokenizer
(checked in ``agent.policy``); a tokenizer that splits numbers into digits labels
the actions past its single-character ids with ``EXTRA_ACTION_IDS`` instead. LLM
backends and human players answer in free text; ``parse_action`` maps that text
back to an index, or says why it cannot.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

ACTION_IDS: tuple[str, ...] = tuple(
    list(string.digits) + list(string.ascii_lowercase) + list(string.ascii_uppercase) + [str(i) for i in range(10, 200)]
)

#: letter pairs (``aa``, ``ab``...): the labels a policy whose tokenizer splits numbers into digits
#: (SmolLM2, Llama 2, Qwen) gives actions past its 62 single characters; most are one token there
EXTRA_ACTION_IDS: tuple[str, ...] = tuple(a + b for a in string.ascii_lowercase for b in string.ascii_lowercase)


def action_ids(n: int) -> list[str]:
    """The first ``n`` action ids; an error names the limit when there are too many actions."""
    if n > len(ACTION_IDS):
        raise ValueError(f"{n} actions in one step, but at most {len(ACTION_IDS)} action ids exist")
    return list(ACTION_IDS[:n])


@dataclass(frozen=True)
class ParsedAction:
    """The index a reply names, or ``index=None`` with the reason it names none."""

    index: int | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.index is not None


_KEYWORD = re.compile(r"\b(?:action|choice|option|answer|command|id)\s*(?:id)?\s*(?:is|=|:|#)?\s*([0-9A-Za-z]+)\b", re.I)
_LEADING_ID = re.compile(r"^\s*[\(\[]?([0-9A-Za-z]+)[\)\]]?\s*(?:[.:)\-]|$)")


def _normalize(text: str) -> str:
    return " ".join(text.strip().strip("`'\"").split()).lower()


def parse_action(reply: str, actions: list[str], ids: list[str] | None = None) -> ParsedAction:
    """Map a free-text reply ("3", "3.", "Action 3", "cat setup.py") to an action index.

    ``ids[i]`` is the label shown for ``actions[i]`` (default: ``action_ids``); a
    shuffled labelling is passed explicitly.
    """
    if ids is None:
        ids = action_ids(len(actions))
    if len(ids) != len(actions):
        raise ValueError(f"{len(ids)} ids given for {len(actions)} actions")
    if not isinstance(reply, str) or not reply.strip():
        return ParsedAction(None, "empty reply")
    index_of_id = {label: i for i, label in enumerate(ids)}
    text = reply.strip()
    bare = text.rstrip(".:)!").strip().strip("`'\"")
    if bare in index_of_id:
        return ParsedAction(index_of_id[bare])
    by_text = {_normalize(a): i for i, a in enumerate(actions)}
    if _normalize(bare) in by_text:
        return ParsedAction(by_text[_normalize(bare)])
    keyword = _KEYWORD.search(text)
    if keyword and keyword.group(1) in index_of_id:
        return ParsedAction(index_of_id[keyword.group(1)])
    first_line = text.splitlines()[0]
    leading = _LEADING_ID.match(first_line)
    if leading and leading.group(1) in index_of_id:
        return ParsedAction(index_of_id[leading.group(1)])
    lowered = _normalize(text)
    mentioned = [
        a for a in by_text if re.search(r"(?<![\w./-])" + re.escape(a) + r"(?![\w/-])", lowered)
    ]
    if mentioned:
        longest = max(mentioned, key=len)
        if all(m == longest or m in longest for m in mentioned):
            return ParsedAction(by_text[longest])
        return ParsedAction(None, f"reply names several actions: {sorted(mentioned)}")
    shown = ", ".join(ids[: min(len(ids), 12)]) + (" ..." if len(ids) > 12 else "")
    return ParsedAction(None, f"reply {text[:80]!r} names no valid action id ({shown}) or action text")
