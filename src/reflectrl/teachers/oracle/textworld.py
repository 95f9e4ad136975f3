"""Oracle reflections for TextWorld games, written from the env's privileged facts.

The env tracks the game's state with TextWorld's own logic and exposes the
engine's winning policy. A reflection says where we are, where the object the
next step needs is (which container, which room and which way), why the next
command helps, and, for negative examples, why the last command was wrong. It
ends with the next command in words. Counts are spelled out, so no digit can
be mistaken for an action id.
"""

from __future__ import annotations

import random
import re
from typing import Any

from reflectrl.envs.base import Observation

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _amount(n: int) -> str:
    return _NUMBERS[n] if 0 <= n < len(_NUMBERS) else "more than ten"


_LOCATION = (
    "We are in the {location}.",
    "Right now we stand in the {location}.",
    "The current room is the {location}.",
)
_REMAINING = (
    "About {n} commands remain to win.",
    "The task still needs roughly {n} commands.",
    "We are {n} commands away from winning.",
)
_LAST_ONE = (
    "Only one command remains to win.",
    "A single command is left to finish the task.",
)
_CARRIED = (
    "We already carry the {target}.",
    "The {target} is in our inventory.",
)
_HERE = (
    "The {target} is {where}, right here.",
    "Here in the {room}, the {target} is {where}.",
    "The {target} we need is {where}.",
)
_HERE_ROOM = (
    "The {target} is right here in the {room}.",
    "The {target} we need is here with us.",
)
_ELSEWHERE = (
    "The {target} is{where} in the {room}; the way there starts {direction}.",
    "We need the {target}, which is{where} in the {room}, so we head {direction}.",
    "The {target} waits{where} in the {room}, reached by going {direction}.",
)
_WHY = {
    "open": (
        "The {x} is closed, so it has to be opened first.",
        "We cannot get past or into the {x} while it is closed.",
    ),
    "close": ("The {x} has to be closed.", "Closing the {x} is part of the task."),
    "unlock": ("The {x} is locked, and the {y} fits it.", "The {x} stays locked until we use the {y} on it."),
    "take": ("The task needs the {x}, so it should be in our hands.", "We have to carry the {x} for the next steps."),
    "put": ("The goal asks for the {x} to be {prep} the {y}.", "Placing the {x} {prep} the {y} completes a goal."),
    "cook": ("The recipe wants the {x} cooked, and the {y} does that.", "The {x} still has to be cooked with the {y}."),
    "cut": ("The recipe wants the {x} {done}.", "The {x} must be {done} before the meal is made."),
    "prepare": ("Every ingredient is ready, so the meal can be made.", "All the ingredients are prepared now."),
    "eat": ("The meal is ready, and eating it ends the game with a win.", "Only eating the meal is left."),
    "drop": ("The {x} has to be left here.", "Putting the {x} down here is part of the goal."),
    "go": ("The next room we need is to the {direction}.", "Our route continues {direction}."),
}
_NEXT = (
    "So the next command is to {command}.",
    "Next: {command}.",
    "Therefore we should {command} now.",
    "The right move now is to {command}.",
)
_WRONG = {
    "invalid": (
        "The last reply was not one of the listed commands, so the turn was wasted.",
        "Our last answer named no valid command and lost a turn.",
    ),
    "info": (
        "The last command, {last}, only gave information and did not advance the task.",
        "Choosing to {last} just looked around; the task did not move forward.",
    ),
    "setback_drop": (
        "Dropping the {x} undid progress: we still need it.",
        "We let go of the {x}, but the task still needs it.",
    ),
    "setback_close": (
        "Closing the {x} undid progress: it has to stay open.",
        "The {x} should not have been closed again.",
    ),
    "setback_go": (
        "Going {direction} led away from where we need to be.",
        "The move {direction} took us off the route.",
    ),
    "setback": (
        "The last command, {last}, set us back; it now has to be undone.",
        "Choosing to {last} undid part of our progress.",
    ),
    "useless_go": (
        "Going {direction} did not bring us closer to the goal.",
        "The move {direction} was a detour.",
    ),
    "useless_take": (
        "The {x} is not needed for this task, so taking it wasted a turn.",
        "Picking up the {x} did not help: the task does not use it.",
    ),
    "useless": (
        "The last command, {last}, did not bring us closer to the goal.",
        "Choosing to {last} wasted a turn.",
    ),
    "off_plan": (
        "The last command, {last}, helped a little, but it was not the best next step.",
        "Choosing to {last} was not the most direct move.",
    ),
}

_PATTERNS = (
    (re.compile(r"^go (\w+)$"), "go {0}"),
    (re.compile(r"^unlock (.+) with (.+)$"), "unlock the {0} with the {1}"),
    (re.compile(r"^lock (.+) with (.+)$"), "lock the {0} with the {1}"),
    (re.compile(r"^take (.+) from (.+)$"), "take the {0} from the {1}"),
    (re.compile(r"^put (.+) on (.+)$"), "put the {0} on the {1}"),
    (re.compile(r"^insert (.+) into (.+)$"), "put the {0} into the {1}"),
    (re.compile(r"^(cook|slice|dice|chop) (.+) with (.+)$"), "{0} the {1} with the {2}"),
    (re.compile(r"^(prepare|eat) meal$"), "{0} the meal"),
    (re.compile(r"^(open|close|take|drop|eat|examine) (.+)$"), "{0} the {1}"),
)


def in_words(command: str) -> str:
    """A command as a phrase with articles: "take old key from box" -> "take the old key from the box"."""
    for pattern, template in _PATTERNS:
        match = pattern.match(command)
        if match:
            return template.format(*match.groups())
    return command


def reflect(
    state: Observation,
    history: list[str],
    next_good_action: str,
    was_last_action_wrong: bool,
    rng: random.Random,
) -> str:
    """Explain the game's situation and the next good command; explain the last mistake when told there was one."""
    facts = state.info["oracle"]
    if next_good_action not in state.actions:
        raise ValueError(f"textworld teacher: next_good_action {next_good_action!r} is not an admissible command")
    if was_last_action_wrong and facts["last_effect"] is None:
        raise ValueError("textworld teacher: was_last_action_wrong=True but no command has been played yet")
    sentences = []
    if was_last_action_wrong:
        sentences.append(_explain_mistake(facts, rng))
    elif facts["location"]:
        sentences.append(rng.choice(_LOCATION).format(location=facts["location"]))
    where = _target_sentence(facts, next_good_action, rng)
    if where:
        sentences.append(where)
    elif facts["remaining_steps"]:
        n = facts["remaining_steps"]
        sentences.append(rng.choice(_LAST_ONE) if n == 1 else rng.choice(_REMAINING).format(n=_amount(n)))
    why = _why(next_good_action, facts, rng)
    if why:
        sentences.append(why)
    sentences.append(rng.choice(_NEXT).format(command=in_words(next_good_action)))
    return " ".join(sentences)


def _target_sentence(facts: dict[str, Any], command: str, rng: random.Random) -> str:
    """Where the object of the next real (non-movement) step is, when the plan is being followed."""
    target = facts["target"]
    if not target or command != facts["next_command"]:
        return ""
    if target in facts["inventory"]:
        return rng.choice(_CARRIED).format(target=target)
    where = facts["target_where"] or ""
    room = facts["target_room"]
    if room and where == f"in the {room}":
        where = ""
    if facts["route"] and room and room != facts["location"]:
        direction = facts["route"][0].removeprefix("go ")
        return rng.choice(_ELSEWHERE).format(
            target=target, where=f" {where}" if where else "", room=room, direction=direction
        )
    if where:
        return rng.choice(_HERE).format(target=target, where=where, room=room or facts["location"])
    if room == facts["location"]:
        return rng.choice(_HERE_ROOM).format(target=target, room=room)
    return ""


def _why(command: str, facts: dict[str, Any], rng: random.Random) -> str:
    """One sentence on why ``command`` is the right step."""
    words = command.split()
    verb = words[0]
    if verb == "go" and len(words) == 2:
        return rng.choice(_WHY["go"]).format(direction=words[1])
    for pattern, kind in (
        (r"^(?:un)?lock (.+) with (.+)$", "unlock"),
        (r"^take (.+?)(?: from (.+))?$", "take"),
        (r"^put (.+) on (.+)$", "put"),
        (r"^insert (.+) into (.+)$", "put"),
        (r"^cook (.+) with (.+)$", "cook"),
        (r"^(?:slice|dice|chop) (.+) with (.+)$", "cut"),
        (r"^prepare meal$", "prepare"),
        (r"^eat meal$", "eat"),
        (r"^open (.+)$", "open"),
        (r"^close (.+)$", "close"),
        (r"^drop (.+)$", "drop"),
    ):
        match = re.match(pattern, command)
        if match:
            groups = [g for g in match.groups() if g]
            x = groups[0] if groups else ""
            y = groups[1] if len(groups) > 1 else ""
            prep = "on" if verb == "put" else "in"
            done = {"slice": "sliced", "dice": "diced", "chop": "chopped"}.get(verb, verb)
            return rng.choice(_WHY[kind]).format(x=x, y=y, prep=prep, done=done)
    return ""


def _explain_mistake(facts: dict[str, Any], rng: random.Random) -> str:
    """Why the last command was wrong, from how the engine's plan changed after it."""
    effect = facts["last_effect"]
    if effect == "invalid":
        return rng.choice(_WRONG["invalid"])
    last = facts["last_command"] or ""
    words = last.split()
    verb = words[0] if words else ""
    x = " ".join(words[1:])
    if verb in ("examine", "look", "inventory"):
        return rng.choice(_WRONG["info"]).format(last=in_words(last))
    if effect == "setback":
        if verb == "drop":
            return rng.choice(_WRONG["setback_drop"]).format(x=x)
        if verb == "close":
            return rng.choice(_WRONG["setback_close"]).format(x=x)
        if verb == "go":
            return rng.choice(_WRONG["setback_go"]).format(direction=x)
        return rng.choice(_WRONG["setback"]).format(last=in_words(last))
    if effect == "no_progress":
        if verb == "go":
            return rng.choice(_WRONG["useless_go"]).format(direction=x)
        if verb == "take":
            return rng.choice(_WRONG["useless_take"]).format(x=x.split(" from ")[0])
        return rng.choice(_WRONG["useless"]).format(last=in_words(last))
    return rng.choice(_WRONG["off_plan"]).format(last=in_words(last))
