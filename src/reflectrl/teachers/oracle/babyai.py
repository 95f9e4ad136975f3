"""Oracle reflections for BabyAI-Text, written from the env's privileged facts.

A reflection says where the object that matters now is (only if the agent has
seen it: the teacher must not teach the reflector to guess what is out of
view), why the next action helps, and, for negative examples, what the last
action did wrong. It ends with the next action in words. Numbers are spelled
out, so no digit can be mistaken for an action id.
"""

from __future__ import annotations

import random
from typing import Any

from reflectrl.envs.babyai_text import ACTIONS
from reflectrl.envs.base import Observation

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _count(n: int, noun: str = "step") -> str:
    word = _NUMBERS[n] if 0 <= n < len(_NUMBERS) else "many"
    return f"{word} {noun}{'' if n == 1 else 's'}"


def _where(forward: int, right: int) -> str:
    """A relative position in words: "two steps ahead and one step to the left"."""
    parts = []
    if forward > 0:
        parts.append(f"{_count(forward)} ahead")
    elif forward < 0:
        parts.append(f"{_count(-forward)} behind")
    if right:
        parts.append(f"{_count(abs(right))} to the {'right' if right > 0 else 'left'}")
    return " and ".join(parts) if parts else "right here"


_GOAL = (
    "The mission is to {mission}.",
    "We have to {mission}.",
    "Our task: {mission}.",
)
_SEEN = (
    "The {name} is {where}.",
    "I can place the {name}: it is {where}.",
    "The {name} we need sits {where}.",
)
_UNSEEN = (
    "The {name} is not in sight yet, so we have to look around for it.",
    "We have not spotted the {name} so far; exploring will reveal it.",
    "No {name} is visible yet, so we must search the room.",
)
_HOLDING = (
    "We already hold the {carried}.",
    "The {carried} is in our hands.",
    "We carry the {carried} now.",
)
_WHY_NEXT = {
    "go forward": {
        "ahead": ("Walking ahead closes the distance.", "It lies ahead of us, so moving on gets closer."),
        "explore": ("Moving ahead shows new parts of the room.", "Stepping forward widens what we can see."),
        "other": ("The free path starts straight ahead.", "The way around the obstacles begins ahead."),
    },
    "turn": {
        "side": ("It is on our {side}, so we should face it.", "Facing {side} points us toward it."),
        "behind": ("It is behind us, so we need to turn around.", "We face away from it and must turn."),
        "explore": ("Turning lets us scan the rest of the room.", "A turn shows us another part of the room."),
        "other": ("Something blocks the direct way, so we turn to go around it.", "The open path starts with a turn."),
    },
    "pick up": {
        "target": ("The {name} is right in front of us.", "We are facing the {name}."),
        "clear": ("The {front} in front is in the way and must be moved.", "Lifting the {front} clears the path."),
    },
    "drop": {
        "place": ("We are beside the {name}, so this is the place to set the {carried} down.",
                  "Setting the {carried} down here puts it next to the {name}."),
        "free": ("Our hands must be empty before we can pick up anything else.",
                 "The {carried} is not what we need, so we let it go."),
    },
    "toggle": {
        "door": ("The {front} in front of us has to be opened.", "Only opening the {front} lets us through."),
        "other": ("Using the object in front helps here.", "The thing in front needs to be switched."),
    },
}
_NEXT = (
    "So the next move is to {action}.",
    "Next: {action}.",
    "Therefore we should {action} now.",
    "The right action now is to {action}.",
)
_WRONG = {
    "blocked": (
        "Going forward bumped into the {obstacle}, so we did not move at all.",
        "The last step forward was blocked by the {obstacle} and wasted a turn.",
    ),
    "farther": (
        "The last move, {last}, took us farther from the {name}.",
        "Choosing to {last} led away from the {name}.",
    ),
    "not_closer": (
        "The last move, {last}, did not bring us any closer to the {name}.",
        "Choosing to {last} wasted a step without nearing the {name}.",
    ),
    "turned_away": (
        "Turning {side} pointed us away from the {name}.",
        "Turning {side} did not point us toward the {name}.",
    ),
    "off_plan": (
        "The last move, {last}, was not on the shortest route.",
        "Choosing to {last} was a detour from the best path.",
    ),
    "wrong_pickup": (
        "Picking up the {picked} was a mistake: it is not what the mission asks for, and now our hands are full.",
        "We grabbed the {picked}, which the mission does not need, so our hands are busy.",
    ),
    "dropped_needed": (
        "Dropping the {dropped} undid our progress, since the mission needs us to carry it.",
        "We let go of the {dropped}, but it still has to be carried.",
    ),
    "useless": (
        "The last action, {last}, had no effect: {effect}.",
        "Trying to {last} did nothing useful, because there was {effect}.",
    ),
    "toggled": (
        "Toggling the {toggled} changed the room without helping the mission.",
        "Using the {toggled} did not bring us closer to the goal.",
    ),
    "invalid": (
        "The last reply was not one of the listed actions, so a step was lost.",
        "Our last answer named no valid action and wasted a turn.",
    ),
}


def reflect(
    state: Observation,
    history: list[str],
    next_good_action: str,
    was_last_action_wrong: bool,
    rng: random.Random,
) -> str:
    """Explain the BabyAI situation and the next good action; explain the last mistake when told there was one."""
    if next_good_action not in ACTIONS:
        raise ValueError(f"babyai teacher: next_good_action {next_good_action!r} is not one of {list(ACTIONS)}")
    facts = state.info["oracle"]
    if was_last_action_wrong and facts["last_action"] is None and facts["last_effect"] != "invalid reply":
        raise ValueError("babyai teacher: was_last_action_wrong=True but no action has been taken yet")
    focus = facts["focus"]
    sentences = []
    if was_last_action_wrong:
        sentences.append(_explain_mistake(facts, rng))
    else:
        sentences.append(rng.choice(_GOAL).format(mission=facts["mission"]))
    just_picked = was_last_action_wrong and (facts["last_effect"] or "").startswith("picked up")
    if facts["carrying"] and not just_picked and (focus is None or facts["carrying"] != focus["name"]):
        sentences.append(rng.choice(_HOLDING).format(carried=facts["carrying"]))
    if focus is not None:
        if focus.get("seen"):
            where = _where(focus["forward"], focus["right"])
            sentences.append(rng.choice(_SEEN).format(name=focus["name"], where=where))
        else:
            sentences.append(rng.choice(_UNSEEN).format(name=focus["name"]))
    why = _why_next(facts, focus, next_good_action, rng)
    if why:
        sentences.append(why)
    sentences.append(rng.choice(_NEXT).format(action=_in_words(next_good_action, facts)))
    return " ".join(sentences)


def _in_words(action: str, facts: dict[str, Any]) -> str:
    """The action as a phrase naming what it acts on: "pick up the red ball", "drop the key"."""
    if action == "pick up" and facts["front"]:
        return f"pick up the {facts['front']}"
    if action == "drop" and facts["carrying"]:
        return f"drop the {facts['carrying']}"
    if action == "toggle" and facts["front"]:
        return f"toggle the {facts['front']}"
    return action


def _why_next(facts: dict[str, Any], focus: dict[str, Any] | None, action: str, rng: random.Random) -> str:
    """One sentence on why ``action`` is the right move from here."""
    seen = focus is not None and focus.get("seen")
    front = facts["front"]
    carried = facts["carrying"]
    if action == "go forward":
        if not seen:
            kind = "explore"
        else:
            kind = "ahead" if focus["forward"] > 0 else "other"
        return rng.choice(_WHY_NEXT["go forward"][kind])
    if action in ("turn left", "turn right"):
        side = action.split()[1]
        if not seen:
            kind = "explore"
        elif focus["forward"] <= 0 and focus["right"] == 0:
            kind = "behind"
        elif (focus["right"] < 0 and side == "left") or (focus["right"] > 0 and side == "right"):
            kind = "side"
        else:
            kind = "other"
        return rng.choice(_WHY_NEXT["turn"][kind]).format(side=side)
    if action == "pick up":
        if focus is not None and front == focus["name"]:
            return rng.choice(_WHY_NEXT["pick up"]["target"]).format(name=focus["name"])
        if front:
            return rng.choice(_WHY_NEXT["pick up"]["clear"]).format(front=front)
        return ""
    if action == "drop":
        if carried is None:
            return ""
        if focus is not None and any(t["role"] == "move" and t["carried"] for t in facts["targets"]):
            return rng.choice(_WHY_NEXT["drop"]["place"]).format(name=focus["name"], carried=carried)
        return rng.choice(_WHY_NEXT["drop"]["free"]).format(carried=carried)
    if front and front.endswith("door"):
        return rng.choice(_WHY_NEXT["toggle"]["door"]).format(front=front)
    return rng.choice(_WHY_NEXT["toggle"]["other"])


def _explain_mistake(facts: dict[str, Any], rng: random.Random) -> str:
    """Why the last action was bad, judged from the effect the env recorded."""
    effect = facts["last_effect"] or ""
    last = facts["last_action"]
    focus = facts["focus"]
    needed = {t["name"] for t in facts["targets"]}
    name = focus["name"] if focus is not None else "goal"
    if effect == "invalid reply":
        return rng.choice(_WRONG["invalid"])
    if effect.startswith("blocked by the "):
        return rng.choice(_WRONG["blocked"]).format(obstacle=effect.removeprefix("blocked by the "))
    if effect.startswith("picked up the "):
        picked = effect.removeprefix("picked up the ")
        if picked != _role_name(facts, "move"):
            return rng.choice(_WRONG["wrong_pickup"]).format(picked=picked)
    if effect.startswith("dropped the "):
        dropped = effect.removeprefix("dropped the ")
        if dropped in needed:
            return rng.choice(_WRONG["dropped_needed"]).format(dropped=dropped)
    if effect.startswith("toggled the "):
        return rng.choice(_WRONG["toggled"]).format(toggled=effect.removeprefix("toggled the "))
    if effect in ("nothing to pick up", "nothing to drop", "nothing happened", "already carrying something") or (
        effect.startswith("no room to drop")
    ):
        reason = {
            "nothing to pick up": "nothing in front of us to pick up",
            "nothing to drop": "nothing in our hands to drop",
            "nothing happened": "nothing in front of us to use",
            "already carrying something": "already something in our hands",
        }.get(effect, "no free cell in front of us")
        return rng.choice(_WRONG["useless"]).format(last=last, effect=reason)
    before, after = facts["previous_focus_distance"], focus.get("distance") if focus is not None else None
    if last in ("turn left", "turn right") and focus is not None and focus.get("seen"):
        return rng.choice(_WRONG["turned_away"]).format(side=last.split()[1], name=name)
    if before is not None and after is not None and after > before:
        kind = "farther"
    elif before is not None and after is not None and after == before:
        kind = "not_closer"
    else:
        kind = "off_plan"
    return rng.choice(_WRONG[kind]).format(last=last, name=name)


def _role_name(facts: dict[str, Any], role: str) -> str | None:
    return next((t["name"] for t in facts["targets"] if t["role"] == role), None)
