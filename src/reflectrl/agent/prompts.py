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
"""

from __future__ import annotations

from reflectrl.envs.action_parser import action_ids

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
