"""Oracle reflections for DangerousTaxi, written from the env's privileged facts.

A reflection says where the passenger or destination lies from the taxi, which
way to go and why (walls on the direct way), and, for negative examples, why
the last action was a bad one. It always ends by naming the next action in
words ("south", "pick up", ...), so a reflector trained on it learns to state
the direction the policy should take. Numbers are spelled out: no digit can be
mistaken for an action id.
"""

from __future__ import annotations

import random
from typing import Any

from reflectrl.envs.base import Observation
from reflectrl.envs.taxi import ACTIONS, DIRECTIONS

_SITUATION = (
    "The {target} at {name} is {offset} of the taxi.",
    "From here, the {target} at {name} lies {offset}.",
    "The taxi must reach the {target} at {name}, {offset}.",
    "Looking at the map, the {target} ({name}) is {offset}.",
)
_AT_PASSENGER = (
    "The taxi is on the passenger's stop {name}, and the passenger is waiting.",
    "The passenger is right here at {name}, next to the taxi.",
    "The taxi has reached the passenger at {name}.",
)
_AT_DESTINATION = (
    "The passenger is aboard and the taxi is at the destination {name}.",
    "The taxi has brought the passenger to the destination {name}.",
    "This is the destination {name}, with the passenger in the taxi.",
)
_ABOARD = (
    "The passenger is already in the taxi.",
    "The passenger is aboard.",
    "With the passenger on board, the trip continues.",
)
_WALL_AHEAD = (
    "A wall blocks the way {blocked} right now.",
    "There is a wall on the {blocked} side of the taxi.",
    "Going {blocked} would hit a wall and end the trip.",
)
_DETOUR = (
    "Walls block the direct way, so the taxi has to go around them.",
    "The straight route is walled off, so a detour is needed.",
    "A wall is in the way, so the taxi must take the long way.",
)
_NEXT_MOVE = (
    "So the taxi should move {direction} next.",
    "The best move now is to go {direction}.",
    "Next, head {direction}.",
    "So drive {direction} now.",
)
_NEXT_PICKUP = (
    "So the next step is to pick up the passenger.",
    "Time to pick up the passenger.",
    "Now pick up the passenger.",
)
_NEXT_DROPOFF = (
    "So the next step is to drop off the passenger.",
    "Time to drop off the passenger.",
    "Now drop off the passenger.",
)
_WRONG = {
    "bumped": (
        "Moving {direction} drove the taxi into a wall, and a crash ends the trip.",
        "The last move, {direction}, hit a wall; that wastes the whole episode.",
    ),
    "pickup_nothing": (
        "Trying to pick up here did nothing: {why}",
        "The pickup was wasted: {why}",
    ),
    "dropoff_nothing": (
        "Trying to drop off here did nothing: {why}",
        "The drop-off was wasted: {why}",
    ),
    "dropped_wrong_depot": (
        "Dropping the passenger at {here} was a mistake: they want to go to {destination}.",
        "The passenger was left at {here}, but their destination is {destination}.",
    ),
    "farther": (
        "Moving {direction} took the taxi farther from the {target}.",
        "The last move, {direction}, led away from the {target}.",
    ),
    "not_closer": (
        "Moving {direction} did not bring the taxi any closer to the {target}.",
        "The last move, {direction}, wasted a step.",
    ),
    "off_route": (
        "Moving {direction} was not the planned route, though it still got closer.",
        "The last move, {direction}, was not the best choice.",
    ),
    "invalid": (
        "The last reply named no valid action, which counts as a crash.",
        "The last reply was not one of the actions, so the trip ended.",
    ),
}


def reflect(
    state: Observation,
    history: list[str],
    next_good_action: str,
    was_last_action_wrong: bool,
    rng: random.Random,
) -> str:
    """Explain the taxi's situation and the next good action; explain the last mistake when told there was one."""
    if next_good_action not in ACTIONS:
        raise ValueError(f"taxi teacher: next_good_action {next_good_action!r} is not one of {list(ACTIONS)}")
    if was_last_action_wrong and not history:
        raise ValueError("taxi teacher: was_last_action_wrong=True needs a non-empty history")
    facts = state.info["oracle"]
    sentences = []
    if was_last_action_wrong:
        sentences.append(_explain_mistake(facts, history[-1], rng))
    action = ACTIONS.index(next_good_action)
    if action < len(DIRECTIONS):
        direction = DIRECTIONS[action]
        if facts["target"] == "destination" and not was_last_action_wrong:
            sentences.append(rng.choice(_ABOARD))
        sentences.append(rng.choice(_SITUATION).format(
            target=facts["target"], name=facts["target_name"], offset=facts["target_offset"]))
        walled = [d for d in facts["toward"] if d in facts["blocked"] and d != direction]
        if direction not in facts["toward"]:
            sentences.append(rng.choice(_DETOUR))
        elif walled:
            sentences.append(rng.choice(_WALL_AHEAD).format(blocked=walled[0]))
        sentences.append(rng.choice(_NEXT_MOVE).format(direction=direction))
    elif next_good_action == ACTIONS[4]:
        sentences.append(rng.choice(_AT_PASSENGER).format(name=facts["target_name"]))
        sentences.append(rng.choice(_NEXT_PICKUP))
    else:
        sentences.append(rng.choice(_AT_DESTINATION).format(name=facts["destination"]))
        sentences.append(rng.choice(_NEXT_DROPOFF))
    return " ".join(sentences)


def _explain_mistake(facts: dict[str, Any], last_action: str, rng: random.Random) -> str:
    """Why ``last_action`` was bad, judged from the state it led to."""
    kind = facts["last_result"]
    if kind != "invalid" and last_action != facts["last_action"]:
        raise ValueError(
            f"taxi teacher: history[-1] is {last_action!r} but the state came from {facts['last_action']!r}")
    if kind not in _WRONG and kind != "moved":
        raise ValueError(f"taxi teacher: the last action {last_action!r} ({kind}) was not a mistake to explain")
    direction = last_action.removeprefix("move ")
    why = ""
    if kind == "moved":
        before, after = facts["previous_distance"], facts["distance"]
        kind = "farther" if after > before else "not_closer" if after == before else "off_route"
    elif kind == "pickup_nothing":
        why = ("the passenger is already in the taxi." if facts["passenger"] == "in taxi"
               else f"the passenger waits at {facts['passenger']}, not here.")
    elif kind == "dropoff_nothing":
        why = ("there is no passenger in the taxi." if facts["passenger"] != "in taxi"
               else "the taxi is not at a stop.")
    here = facts["passenger"]
    return rng.choice(_WRONG[kind]).format(
        direction=direction, why=why, here=here, destination=facts["destination"], target=facts["target"])
