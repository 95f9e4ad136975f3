"""The one place the prompt format lives.

```
<state text>
 # Analyze:
<reflection>            (omitted, with its marker, in the no-reflection ablation)
<id>. <action>          one line per valid action
 # Action:
<id>
```
The reflector sees ``reflection_prompt(state)`` and writes until the action
marker or EOS; the policy sees ``policy_prompt(...)`` and emits one id token.

A state too long for a model's context is shortened by ``fit_state``, in this
order, never touching its head (the lines up to the one stating the task, which
starts with ``Task:`` or ``Your task is``, else the first line) nor the
reflection and the action list that follow the state:

1. history entries, oldest first (the lines under a header that ends with
   ``history:``), replaced by one line saying how many were left out;
2. the longest section body (lines under a header that ends with ``:``, such
   as a file's contents or a directory listing), cut from its end, with a
   ``[... N more lines cut to fit]`` marker;
3. whatever is left between the head and the end, cut from its start.

Where the head alone is still too long, ``agent.policy.fit_prompt`` then cuts
the reflection from its start (its end states the decision), and last the
head from its start; the action list is never cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from reflectrl.envs.action_parser import action_ids
from reflectrl.errors import UserError

ANALYZE_MARKER = " # Analyze:\n"
ACTION_MARKER = " # Action:\n"
#: the marker text without surrounding whitespace, where generation stops
ACTION_STOP = "# Action:"


def reflection_prompt(state_text: str) -> str:
    """What the reflector reads: the state, then the analyze marker."""
    return state_text.rstrip("\n") + "\n" + ANALYZE_MARKER


def clean_reflection(text: str) -> str:
    """Cut a generated reflection at the action marker and trim whitespace."""
    return text.split(ACTION_STOP)[0].split(ANALYZE_MARKER.strip())[0].strip()


def enumerate_actions(actions: list[str], ids: list[str] | None = None) -> str:
    """The action list, one ``<id>. <action>`` a line."""
    ids = action_ids(len(actions)) if ids is None else ids
    if len(ids) != len(actions):
        raise ValueError(f"{len(ids)} ids for {len(actions)} actions")
    return "".join(f"{label}. {action}\n" for label, action in zip(ids, actions))


def policy_prompt(state_text: str, actions: list[str], reflection: str | None, ids: list[str] | None = None) -> str:
    """What the policy reads; ``reflection=None`` is the no-reflection ablation."""
    head = state_text.rstrip("\n") + "\n"
    if reflection is not None:
        head += ANALYZE_MARKER + clean_reflection(reflection) + "\n"
    return head + enumerate_actions(actions, ids) + ACTION_MARKER


_TASK_LINE = re.compile(r"^\s*(task:|your task is)", re.IGNORECASE)
_CUT_MARKER = re.compile(r"^\[\.\.\. (\d+) more lines cut to fit\]$")


def split_head(state_text: str) -> tuple[str, list[str]]:
    """(the protected head, the other lines): the head ends with the line stating the task."""
    lines = state_text.split("\n")
    end = next((i for i, line in enumerate(lines) if _TASK_LINE.match(line)), 0)
    return "\n".join(lines[:end + 1]), lines[end + 1:]


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """(header index, end index) of each section: a line ending with ``:`` and the body lines up to the next one."""
    headers = [i for i, line in enumerate(lines) if line.rstrip().endswith(":")]
    return [(h, headers[k + 1] if k + 1 < len(headers) else len(lines)) for k, h in enumerate(headers)]


def _cut_body(lines: list[str], header: int, end: int) -> list[str]:
    """Halve a section's body from its end, keeping one marker that counts every line cut so far."""
    body = lines[header + 1:end]
    already = 0
    if body and (found := _CUT_MARKER.match(body[-1])):
        already, body = int(found.group(1)), body[:-1]
    keep = len(body) // 2
    marker = f"[... {already + len(body) - keep} more lines cut to fit]"
    return lines[:header + 1] + body[:keep] + [marker] + lines[end:]


def fit_state(state_text: str, fits: Callable[[str], bool]) -> str:
    """The state, shortened in the documented order until ``fits(state)``; the head always stays (it may not fit)."""
    if fits(state_text):
        return state_text
    head, lines = split_head(state_text)

    def joined(body: list[str]) -> str:
        return "\n".join([head, *body])

    for header, end in _sections(lines):
        if lines[header].rstrip().lower().endswith("history:"):
            entries = lines[header + 1:end]
            for dropped in range(1, len(entries) + 1):
                candidate = lines[:header + 1] + [f"({dropped} earlier entries left out to fit)"] \
                    + entries[dropped:] + lines[end:]
                if fits(joined(candidate)):
                    return joined(candidate)
            lines = candidate
            break
    while bodies := [(end - header - 1, header, end) for header, end in _sections(lines) if end - header - 1 > 1]:
        _, header, end = max(bodies)
        lines = _cut_body(lines, header, end)
        if fits(joined(lines)):
            return joined(lines)
    for start in range(1, len(lines) + 1):
        candidate = ["[... earlier text cut to fit]"] + lines[start:]
        if fits(joined(candidate)):
            return joined(candidate)
    return head


def cut_start(text: str, fits: Callable[[str], bool]) -> str:
    """``text`` with the shortest cut of its start (marked ``[...]``) that fits; ``""`` when nothing does."""
    if fits(text):
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if fits("[...]" + text[middle:]):
            high = middle
        else:
            low = middle + 1
    return "[...]" + text[low:] if low < len(text) else ""


def reflection_prompt_budget(max_length: int, reflection_tokens: int, prefix: int) -> int:
    """Tokens a reflector prompt may take: ``max_length`` less the special prefix, the reflection and its EOS.

    The one budget of the reflector: SFT cuts its rows' prompts to it, and RL and
    evaluation cut the prompts the reflector reads to the same length, the same way.
    """
    budget = max_length - prefix - reflection_tokens - 1
    if budget < 1:
        raise UserError(f"max_length={max_length} leaves no room for a reflector prompt before "
                         f"{reflection_tokens} new tokens; raise max_length or lower reflection_tokens")
    return budget
