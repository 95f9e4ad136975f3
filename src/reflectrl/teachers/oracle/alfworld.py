"""Oracle reflections for ALFWorld, written from the engine's facts and the planner's plan.

A reflection says where the target object is (or, before it has been seen,
where such things usually are and which place is the best bet; with the
search expert, which places were checked and which usual ones are left), whether it is
in hand, where it has to go, whether a receptacle must be opened or the object
heated/cooled/cleaned first, and, for a negative example, why the last action
did not help. It ends with the next step in words (a paraphrase of the
planner's command, never the command itself or its id).
"""

from __future__ import annotations

import random
import re
from typing import Any

from reflectrl.envs.base import Observation

_GO = ("head to the {r}", "walk over to the {r}", "go over to the {r}", "make my way to the {r}")
_GO_SEARCH = ("go and check the {r}", "take a look at the {r}", "head to the {r} to search it")
_OPEN = ("open the {r}", "open the {r} to get at what is inside", "pull the {r} open")
_CLOSE = ("close the {r}", "shut the {r}")
_TAKE = ("pick up the {o}", "grab the {o} from the {r}", "take the {o} {off}")
_PUT = ("put the {o} {at}", "place the {o} {at}", "set the {o} down {at}")
_DROP = ("put the {o} down here", "set the {o} back down {at}", "get rid of the {o} by leaving it {at}")
_TREAT = {
    "heat": ("heat the {o} with the {r}", "warm the {o} up in the {r}"),
    "cool": ("cool the {o} in the {r}", "chill the {o} with the {r}"),
    "clean": ("clean the {o} in the {r}", "rinse the {o} at the {r}"),
}
_USE = ("turn on the {o}", "switch the {o} on")
_NEXT = ("So next I should {step}.", "The next step is to {step}.", "Now I will {step}.", "I should {step} now.")
#: receptacles one puts things in (the rest, tables, shelves, counters..., one puts things on)
_CONTAINERS = ("fridge", "microwave", "cabinet", "drawer", "safe", "box", "sinkbasin", "bathtubbasin", "garbagecan",
               "laundryhamper", "coffeemachine", "toaster", "cart")


def _a(noun: str) -> str:
    """``a tomato``, ``an egg``."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _at(receptacle: str | None) -> str:
    """``in the fridge 1`` / ``on the countertop 1``, as the engine's feedback says."""
    if not receptacle:
        return "somewhere"
    kind = receptacle.rsplit(" ", 1)[0]
    return f"{'in' if kind in _CONTAINERS else 'on'} the {receptacle}"


def _pick(rng: random.Random, options: tuple[str, ...], **names: str) -> str:
    return rng.choice(options).format(**names)


def _places(names: list[str]) -> str:
    """``the a``, ``the a or the b``, ``the a, the b or the c``."""
    items = [f"the {name}" for name in names]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _next_step(command: str, oracle: dict[str, Any], rng: random.Random) -> str:
    """The planner's command in words."""
    if match := re.fullmatch(r"go to (.+)", command):
        searching = not oracle.get("target_seen") and oracle.get("holding") is None
        return _pick(rng, _GO_SEARCH if searching else _GO, r=match.group(1))
    if match := re.fullmatch(r"open (.+)", command):
        return _pick(rng, _OPEN, r=match.group(1))
    if match := re.fullmatch(r"close (.+)", command):
        return _pick(rng, _CLOSE, r=match.group(1))
    if match := re.fullmatch(r"take (.+) from (.+)", command):
        recep = match.group(2)
        off = f"{'out of' if recep.rsplit(' ', 1)[0] in _CONTAINERS else 'off'} the {recep}"
        return _pick(rng, _TAKE, o=match.group(1), r=recep, off=off)
    if match := re.fullmatch(r"move (.+) to (.+)", command):
        obj, recep = match.groups()
        wrong_object = oracle.get("target_type") and not obj.startswith(oracle["target_type"] + " ")
        return _pick(rng, _DROP if wrong_object else _PUT, o=obj, at=_at(recep))
    if match := re.fullmatch(r"(heat|cool|clean) (.+) with (.+)", command):
        verb, obj, recep = match.groups()
        return _pick(rng, _TREAT[verb], o=obj, r=recep)
    if match := re.fullmatch(r"use (.+)", command):
        return _pick(rng, _USE, o=match.group(1))
    return f"carry on with {command}"


def _situation(oracle: dict[str, Any], rng: random.Random) -> str:
    """Where the target is, whether it is held, where it goes, what stands in the way."""
    kind = oracle.get("target_type") or "object"
    target = oracle.get("target_object")
    location = oracle.get("target_location")
    goal = oracle.get("goal_receptacle")
    held = oracle.get("holding")
    here = oracle.get("agent_at")
    states = oracle.get("receptacle_states", {})
    treatment = oracle.get("treatment")
    if held and held != target:
        return rng.choice((
            f"I am holding the {held}, which the task does not need, so my hands are not free for {_a(kind)}.",
            f"The {held} in my hands is useless here; I need them free to carry {_a(kind)}.",
        ))
    if target is None:
        return f"My goal is to {oracle.get('goal', 'finish the task')}."
    if held == target:
        if treatment and not treatment["done"] and treatment["appliance"]:
            return rng.choice((
                f"I have the {target}, but it must be {treatment['state']} before it goes {_at(goal)}, "
                f"which is what the {treatment['appliance']} is for.",
                f"The {target} is in my hands; first it has to become {treatment['state']} using the "
                f"{treatment['appliance']}.",
            ))
        if goal and here == goal and states.get(goal) == "closed":
            return rng.choice((
                f"I am at the {goal} with the {target}, but the {goal} is closed.",
                f"The {goal} is shut, so the {target} cannot go in yet.",
            ))
        if goal:
            return rng.choice((
                f"I am carrying the {target}, and it belongs {_at(goal)}.",
                f"With the {target} in hand, all that is left is getting it {_at(goal)}.",
                f"The {target} is in my hands; the task wants it {_at(goal)}.",
            ))
        return f"I am holding the {target}; now I can {oracle.get('goal', 'finish the task')}."
    if oracle.get("expert") == "search" and not oracle.get("target_seen"):
        return _search_situation(oracle, rng)
    if location == goal and treatment and not treatment["done"]:
        return f"The {target} is {_at(goal)} but is not {treatment['state']} yet, so I have to take it out again."
    if here == location and location:
        if states.get(location) == "closed":
            return rng.choice((
                f"The {target} should be inside the {location} in front of me, but it is closed.",
                f"I am at the {location}, where the {target} is, but it has to be opened first.",
            ))
        return rng.choice((
            f"The {target} is right here, {_at(location)}.",
            f"I can see the {target} {_at(location)} in front of me.",
        ))
    if oracle.get("target_seen"):
        return rng.choice((
            f"I already saw the {target} {_at(location)}, and it has to end up in the {goal or 'right place'}.",
            f"The {target} was {_at(location)}; I need to fetch it for the {goal or 'task'}.",
        ))
    likely = [place for place in oracle.get("likely_places", []) if place != goal]
    if likely and location in likely:
        others = [place for place in likely if place != location][:1]
        options = _places([location] + others)
        return rng.choice((
            f"I have not seen {_a(kind)} yet; they are usually kept in places like {options}, and the {location} "
            "is the best bet.",
            f"{_a(kind).capitalize()} is most likely at {options}; I will try the {location} first.",
            f"No {kind} in sight so far, but the usual spots are {options}, so the {location} is worth checking.",
        ))
    return rng.choice((
        f"I have not found {_a(kind)} yet; the {location} is where I expect it.",
        f"The task needs {_a(kind)}, and the {location} is the place to look.",
    ))


def _search_situation(oracle: dict[str, Any], rng: random.Random) -> str:
    """Before any target has been seen, for the search expert: what was checked and where such things usually are."""
    kind = oracle.get("target_type") or "object"
    searched = oracle.get("searched", [])
    unchecked = [place for place in oracle.get("likely_places", []) if place not in searched][:3]
    parts = []
    if searched:
        parts.append(rng.choice((
            f"I found no {kind} at {_places(searched[-2:])}.",
            f"There was no {kind} at {_places(searched[-2:])}.",
        )))
    else:
        parts.append(rng.choice((f"I have not seen {_a(kind)} yet.", f"No {kind} in sight so far.")))
    if unchecked:
        parts.append(rng.choice((
            f"{_a(kind).capitalize()} is usually kept at {_places(unchecked)}.",
            f"Still to check among the usual places for {_a(kind)}: {_places(unchecked)}.",
        )))
    else:
        parts.append(f"None of the usual places had {_a(kind)}, so I search the rest of the room.")
    return " ".join(parts)


def _why_wrong(oracle: dict[str, Any], history: list[str], rng: random.Random) -> str | None:
    """Why the last action did not help (None when it was in fact the planner's choice)."""
    last = oracle.get("last_command") or (history[-1] if history else None)
    if last is None:
        return None
    if oracle.get("last_invalid"):
        return rng.choice((
            "My last reply was not a valid command, so nothing happened and a step was lost.",
            "That last answer named no available action; nothing happened.",
        ))
    if last == oracle.get("last_expert_command"):
        return None
    kind = oracle.get("target_type") or "object"
    goal = oracle.get("goal_receptacle") or "goal"
    target_places = set(oracle.get("target_locations", {}).values())
    if match := re.fullmatch(r"(?:go to|open) (.+)", last):
        if match.group(1) in target_places:
            return None
    if match := re.fullmatch(r"go to (.+)", last):
        place = match.group(1)
        if place == goal and oracle.get("holding") is None:
            return rng.choice((
                f"Going to the {place} was premature: I have nothing to put in it yet.",
                f"Visiting the {place} first did not help, since I am not carrying {_a(kind)}.",
            ))
        return rng.choice((
            f"Going to the {place} was a detour: there is no {kind} for me there.",
            f"The {place} was the wrong place to go; it does not help with the {kind}.",
            f"Walking to the {place} wasted a step.",
        ))
    if match := re.fullmatch(r"open (.+)", last):
        return rng.choice((
            f"Opening the {match.group(1)} did not help; nothing in it is needed.",
            f"The {match.group(1)} held nothing useful, so opening it was a wasted step.",
        ))
    if match := re.fullmatch(r"close (.+)", last):
        return f"Closing the {match.group(1)} did nothing for the task."
    if match := re.fullmatch(r"take (.+) from (.+)", last):
        obj, place = match.groups()
        if obj.startswith(kind + " "):
            return f"Taking the {obj} back out of the {place} undid my progress."
        return rng.choice((
            f"Picking up the {obj} was a mistake: the task needs {_a(kind)}, not {_a(obj.rsplit(' ', 1)[0])}.",
            f"I grabbed the {obj}, which is not what the task asks for.",
        ))
    if match := re.fullmatch(r"move (.+) to (.+)", last):
        obj, place = match.groups()
        if obj.startswith(kind + " "):
            return rng.choice((
                f"Putting the {obj} {_at(place)} was wrong: it has to go {_at(goal)}.",
                f"The {place} is not where the {obj} belongs.",
            ))
        return f"Moving the {obj} around did not bring me closer to the goal."
    if re.fullmatch(r"(heat|cool|clean) .+", last):
        return f"That was not needed: '{last}' does not get the {kind} where it belongs."
    if last in ("look", "inventory", "help") or last.startswith("examine "):
        return rng.choice((
            f"'{last}' only gave information I already had and used up a step.",
            f"Doing '{last}' changed nothing in the room.",
        ))
    return f"My last action, {last}, did not bring me closer to the goal."


def reflect(
    state: Observation,
    history: list[str],
    next_good_action: str,
    was_last_action_wrong: bool,
    rng: random.Random,
) -> str:
    """A short ALFWorld analysis: situation (and mistake), then the next step in words."""
    oracle = state.info["oracle"]
    if oracle.get("won"):
        return rng.choice(("The task is done.", "The goal is reached; nothing is left to do."))
    parts = []
    if was_last_action_wrong:
        mistake = _why_wrong(oracle, history, rng)
        if mistake:
            parts.append(mistake)
    parts.append(_situation(oracle, rng))
    parts.append(_pick(rng, _NEXT, step=_next_step(next_good_action, oracle, rng)))
    return " ".join(parts)
