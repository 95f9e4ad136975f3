"""DangerousTaxi: gymnasium's Taxi as a text env where a wasted action ends the trip.

The physics (moves, walls, pickup/drop-off and their base rewards) come from
gymnasium's own transition table ``P``, read once per process; this module only
adds what Reflect-RL changes: the text rendering, the "dangerous" rule (an
action that leaves the state unchanged gives -10 and ends the episode), the
curriculum stages (pickup / dropoff / full) with their +20 pickup reward,
reward scaling, a horizon, fixed task splits and a BFS oracle for the teacher.

Two protocols, chosen per recipe with three constructor arguments:

========================  =======================================  ==========================================
argument                  ``"paper"`` (the authors' code)           reflectrl's alternative
========================  =======================================  ==========================================
``observation``           the map (depot letters blanked) and the   ``"hints"``: the map with depot letters,
                          history of actions in words               a legend, the positions and walls in
                                                                    words, and the last step's result
``dropoff_start``         ``"oracle_pickup"``: a full-task start,   ``"anywhere"``: any cell, passenger
                          then the oracle drives to the passenger   already aboard
                          and picks up
``pickup_reward``         ``"replace"``: the pickup step pays +20   ``"add"``: -1 + 20
========================  =======================================  ==========================================

The defaults are reflectrl's; ``configs/taxi-paper.yaml`` selects the authors'.
With the paper's observation nothing is spelled out: reading the map is the
policy's (or the reflector's) job, which is where reflection can matter.
"""

from __future__ import annotations

import functools
import operator
import random
import re
from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from reflectrl.envs.base import Observation, StepResult, TextEnv

#: action texts in gymnasium's order 0..5
ACTIONS: tuple[str, ...] = (
    "move south",
    "move north",
    "move east",
    "move west",
    "pick up passenger",
    "drop off passenger",
)
DIRECTIONS: tuple[str, ...] = ("south", "north", "east", "west")
#: gymnasium's depot order (its ``locs``): Red, Green, Yellow, Blue
DEPOTS: tuple[str, ...] = ("R", "G", "Y", "B")
STAGES: tuple[str, ...] = ("pickup", "dropoff", "full")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IN_TAXI = 4
PICKUP, DROPOFF = 4, 5
#: how a reflection names the next action, in the oracle teacher's words ("So drive north now.",
#: "Next, head west.", "Now pick up the passenger."); a move's mere mention ("the passenger is two
#: rows north", "Going west would hit a wall") names nothing
_NAMED_ACTION = re.compile(r"\b(?:move|go|head|drive) (south|north|east|west)\b|\b(pick up|drop off) the passenger\b",
                           re.IGNORECASE)
DANGER_REWARD = -10.0
PICKUP_BONUS = 20.0

_SPLIT_SEED = 2402_12621
_SPLIT_FRACTIONS = (0.7, 0.2)
_TASK_SENTENCES = {
    "pickup": "Task: drive to the passenger P and pick them up.",
    "dropoff": "Task: drive the passenger to the destination D and drop them off.",
    "full": "Task: pick up the passenger P, then drop them off at the destination D.",
}
_LEGEND = "Legend: T taxi, P passenger, D destination, O taxi at passenger, X taxi with passenger, | wall. North is up."
_NUMBER_WORDS = ("zero", "one", "two", "three", "four")
OBSERVATIONS: tuple[str, ...] = ("hints", "paper")
DROPOFF_STARTS: tuple[str, ...] = ("anywhere", "oracle_pickup")
PICKUP_REWARDS: tuple[str, ...] = ("add", "replace")


@functools.lru_cache(maxsize=1)
def gym_taxi() -> Any:
    """gymnasium's (unwrapped) dry Taxi env, built once per process: its ``P``, ``desc``, ``locs``, encode/decode."""
    if "Taxi-v4" in gym.registry:
        env = gym.make("Taxi-v4", is_rainy=False, fickle_passenger=False)
    else:
        env = gym.make("Taxi-v3")
    return env.unwrapped


@functools.lru_cache(maxsize=1)
def _table() -> tuple[tuple[tuple[int, float, bool], ...], ...]:
    """``P`` flattened to ``[state][action] -> (next_state, base_reward, delivered)``, checked deterministic."""
    taxi = gym_taxi()
    rows = []
    for state in range(taxi.observation_space.n):
        row = []
        for action in range(len(ACTIONS)):
            outcomes = taxi.P[state][action]
            if len(outcomes) != 1 or outcomes[0][0] != 1.0:
                raise RuntimeError(f"gymnasium Taxi is not deterministic at state {state}, action {action}")
            _, next_state, reward, terminated = outcomes[0]
            row.append((int(next_state), float(reward), bool(terminated)))
        rows.append(tuple(row))
    return tuple(rows)


@functools.lru_cache(maxsize=1)
def _decoded() -> tuple[tuple[int, int, int, int], ...]:
    taxi = gym_taxi()
    return tuple(tuple(int(v) for v in taxi.decode(state)) for state in range(taxi.observation_space.n))


def num_states() -> int:
    return len(_table())


def transition(state: int, action: int) -> tuple[int, float, bool]:
    """gymnasium's ``(next_state, base_reward, delivered)``, before the dangerous rule and bonuses."""
    return _table()[state][action]


def decode(state: int) -> tuple[int, int, int, int]:
    """``(taxi_row, taxi_col, passenger, destination)``; passenger 0-3 is a depot, 4 is in the taxi."""
    return _decoded()[state]


def encode(taxi_row: int, taxi_col: int, passenger: int, destination: int) -> int:
    return int(gym_taxi().encode(taxi_row, taxi_col, passenger, destination))


def depot_cell(depot: int) -> tuple[int, int]:
    row, col = gym_taxi().locs[depot]
    return int(row), int(col)


def _is_open(row: int, col: int, direction: str) -> bool:
    """Whether no wall separates a cell from its east/west neighbour (read from gym's map)."""
    separator = gym_taxi().desc[1 + row, 2 * col + 2 if direction == "east" else 2 * col]
    return separator == b":"


@functools.lru_cache(maxsize=None)
def start_states(stage: str) -> tuple[int, ...]:
    """Every valid start state of a stage (sorted).

    pickup/full: passenger waiting at a depot, destination another depot, taxi
    anywhere. dropoff: passenger in the taxi, taxi not already at the destination.
    """
    _check_stage(stage)
    states = []
    for state in range(num_states()):
        row, col, passenger, destination = decode(state)
        if stage == "dropoff":
            if passenger == IN_TAXI and (row, col) != depot_cell(destination):
                states.append(state)
        elif passenger != IN_TAXI and passenger != destination:
            states.append(state)
    return tuple(states)


@functools.lru_cache(maxsize=None)
def _splits(stage: str) -> dict[str, tuple[int, ...]]:
    """A 7:2:1 train/val/test split by a fixed-seed permutation, identical in every process."""
    states = list(start_states(stage))
    random.Random(_SPLIT_SEED).shuffle(states)
    n_train = round(len(states) * _SPLIT_FRACTIONS[0])
    n_val = round(len(states) * _SPLIT_FRACTIONS[1])
    return {
        "train": tuple(states[:n_train]),
        "val": tuple(states[n_train : n_train + n_val]),
        "test": tuple(states[n_train + n_val :]),
    }


def _goal_of(stage: str) -> str:
    return "pickup" if stage == "pickup" else "deliver"


def _reaches_goal(goal: str, state: int, action: int) -> bool:
    next_state, _, delivered = transition(state, action)
    if goal == "deliver":
        return delivered
    return decode(state)[2] != IN_TAXI and decode(next_state)[2] == IN_TAXI


def _allowed(goal: str, state: int, action: int) -> bool:
    """Actions the oracle may take: state-changing ones that do not end the episode short of the goal."""
    next_state, _, delivered = transition(state, action)
    return next_state != state and (goal == "deliver" or not delivered)


@functools.lru_cache(maxsize=None)
def _plan(goal: str) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    """Steps-to-goal and the best first action of every state, by BFS backwards over gym's table."""
    n = num_states()
    predecessors: list[list[int]] = [[] for _ in range(n)]
    distance: list[int | None] = [None] * n
    queue: deque[int] = deque()
    for state in range(n):
        for action in range(len(ACTIONS)):
            if not _allowed(goal, state, action):
                continue
            if _reaches_goal(goal, state, action):
                if distance[state] is None:
                    distance[state] = 1
                    queue.append(state)
            else:
                predecessors[transition(state, action)[0]].append(state)
    while queue:
        state = queue.popleft()
        for previous in predecessors[state]:
            if distance[previous] is None:
                distance[previous] = distance[state] + 1
                queue.append(previous)
    best: list[int | None] = [None] * n
    for state in range(n):
        costs = _action_costs(goal, distance, state)
        if costs:
            best[state] = min(costs)[1]
    return tuple(distance), tuple(best)


def _action_costs(goal: str, distance: Sequence[int | None], state: int) -> list[tuple[int, int]]:
    """(steps to the goal, action) for each action the oracle may take in ``state`` that still reaches the goal."""
    costs = []
    for action in range(len(ACTIONS)):
        if not _allowed(goal, state, action):
            continue
        if _reaches_goal(goal, state, action):
            costs.append((1, action))
        elif (after := distance[transition(state, action)[0]]) is not None:
            costs.append((after + 1, action))
    return costs


def positions_line(state: int) -> str:
    """The map's facts in words, relative to the taxi, the way GLAM describes BabyAI.

    A small model trained from scratch cannot be expected to parse a grid of
    characters within a CPU budget; the same facts as text keep the task the
    same (the map is still shown) while making it learnable.
    """
    row, col, passenger, destination = decode(state)
    d_row, d_col = depot_cell(destination)
    if passenger == IN_TAXI:
        where = "in the taxi"
    else:
        p_row, p_col = depot_cell(passenger)
        where = f"at {DEPOTS[passenger]}, {relative_position(p_row - row, p_col - col)}"
    blocked = [d for a, d in enumerate(DIRECTIONS) if transition(state, a)[0] == state]
    walls = ", ".join(blocked) if blocked else "none"
    return (f"Passenger {where}. Destination {DEPOTS[destination]}, {relative_position(d_row - row, d_col - col)}. "
            f"Walls next to the taxi: {walls}.")


def render_map(state: int, depot_letters: bool = True) -> str:
    """The 5x5 map as gymnasium draws it (``|`` a wall, ``:`` an open side) with ``.`` for an empty cell,
    depot letters, and T/P/D/O/X for taxi, passenger, destination. Every character is one cell or side, so a
    tokenizer that keeps them apart (the tiny preset's) gives each cell a fixed position in the text.

    ``depot_letters=False`` blanks the depots that are neither the passenger's nor the destination (the paper's map).
    """
    taxi_row, taxi_col, passenger, destination = decode(state)
    passenger_cell = None if passenger == IN_TAXI else depot_cell(passenger)
    depots = {depot_cell(i): name for i, name in enumerate(DEPOTS)}
    lines = ["+---------+"]
    for row in range(5):
        line = "|"
        for col in range(5):
            cell = (row, col)
            if cell == (taxi_row, taxi_col):
                symbol = "X" if passenger == IN_TAXI else "O" if cell == passenger_cell else "T"
            elif cell == passenger_cell:
                symbol = "P"
            elif cell == depot_cell(destination):
                symbol = "D"
            else:
                symbol = depots.get(cell, ".") if depot_letters else "."
            line += symbol
            if col < 4:
                line += ":" if _is_open(row, col, "east") else "|"
        lines.append(line + "|")
    lines.append("+---------+")
    return "\n".join(lines)


def relative_position(d_row: int, d_col: int) -> str:
    """Where an offset lies, in words: 'two rows south and one column west', or 'right here'."""
    parts = []
    if d_row:
        rows = abs(d_row)
        parts.append(f"{_NUMBER_WORDS[rows]} row{'s' if rows > 1 else ''} {'south' if d_row > 0 else 'north'}")
    if d_col:
        cols = abs(d_col)
        parts.append(f"{_NUMBER_WORDS[cols]} column{'s' if cols > 1 else ''} {'east' if d_col > 0 else 'west'}")
    return " and ".join(parts) if parts else "right here"


def _after_oracle_pickup(state: int) -> int:
    """Where the paper's dropoff stage starts: the state after the oracle drove to the passenger and picked up."""
    while decode(state)[2] != IN_TAXI:
        state = transition(state, _plan("pickup")[1][state])[0]
    return state


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"taxi: unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


class DangerousTaxi(TextEnv):
    """Taxi where any action that changes nothing (wall bump, no-op pickup/drop-off) costs -10 and ends the episode.

    ``stage`` picks the curriculum stage of the paper: ``pickup`` ends (success)
    at the pickup with a +20 bonus; ``dropoff`` starts with the passenger in the
    taxi; ``full`` pays a one-time +20 pickup bonus and succeeds on delivery.
    All rewards are divided by ``reward_scale``. A task is a start state (gym's
    encoded int).
    """

    name = "taxi"

    def __init__(self, stage: str = "full", max_steps: int = 20, reward_scale: float = 20.0,
                 observation: str = "hints", dropoff_start: str = "anywhere", pickup_reward: str = "add") -> None:
        _check_stage(stage)
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"taxi: max_steps must be a positive int, got {max_steps!r}")
        if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float)) or not reward_scale > 0:
            raise ValueError(f"taxi: reward_scale must be a number > 0, got {reward_scale!r}")
        for name, value, choices in (("observation", observation, OBSERVATIONS),
                                     ("dropoff_start", dropoff_start, DROPOFF_STARTS),
                                     ("pickup_reward", pickup_reward, PICKUP_REWARDS)):
            if value not in choices:
                raise ValueError(f"taxi: {name} must be one of {', '.join(choices)}, got {value!r}")
        self.observation_kind = observation
        self.dropoff_start = dropoff_start
        self.pickup_reward = pickup_reward
        self.stage = stage
        self.max_steps = max_steps
        self.reward_scale = float(reward_scale)
        self._goal = _goal_of(stage)
        self._state: int | None = None
        self._obs: Observation | None = None
        self._steps = 0
        self._done = False
        self._succeeded = False
        self._bonus_paid = False
        self._history: list[str] = []

    @property
    def _task_stage(self) -> str:
        """Whose start states are this env's tasks: the paper's dropoff starts from full-task states."""
        return "full" if self.stage == "dropoff" and self.dropoff_start == "oracle_pickup" else self.stage

    def tasks(self, split: str) -> list[int]:
        if split not in SPLITS:
            raise ValueError(f"taxi: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return list(_splits(self._task_stage)[split])

    @property
    def state(self) -> int:
        """The current gym-encoded state."""
        if self._state is None:
            raise RuntimeError("taxi: call reset() before using the env")
        return self._state

    def reset(self, task: Any = None, seed: int | None = None) -> Observation:
        valid = start_states(self._task_stage)
        if task is None:
            state = random.Random(seed).choice(valid)
        else:
            try:
                state = operator.index(task)
            except TypeError:
                raise ValueError(f"taxi: a task is a start state (int), got {task!r}") from None
            if isinstance(task, bool) or state not in valid:
                raise ValueError(
                    f"taxi: task {task!r} is not a valid start state of stage {self.stage!r} "
                    f"({len(valid)} valid states; see tasks(split))"
                )
        self._state = int(state)
        if self._task_stage != self.stage:
            self._state = _after_oracle_pickup(self._state)
        self._history = []
        self._steps = 0
        self._done = False
        self._succeeded = False
        self._bonus_paid = False
        self._obs = self._observe("Start.", last_action=None, last_result="start", previous_distance=None)
        return self._obs

    def step(self, action_index: int) -> StepResult:
        self.check_action(action_index)
        self._require_running()
        action = operator.index(action_index)
        state = self.state
        previous_distance = self._distance(state)
        next_state, base_reward, delivered = transition(state, action)
        kind = self._outcome(state, action, next_state, delivered)
        picked_up = decode(state)[2] != IN_TAXI and decode(next_state)[2] == IN_TAXI
        success = False
        if next_state == state:
            reward, terminated = DANGER_REWARD, True
        else:
            reward, terminated = base_reward, False
            if picked_up and self.stage != "dropoff" and not self._bonus_paid:
                reward = PICKUP_BONUS if self.pickup_reward == "replace" else reward + PICKUP_BONUS
                self._bonus_paid = True
            if delivered or (picked_up and self.stage == "pickup"):
                terminated = success = True
        self._state = next_state
        info: dict[str, Any] = {
            "stage": self.stage,
            "state": next_state,
            "base_reward": base_reward,
            "dangerous": next_state == state,
            "result": kind,
        }
        return self._finish(reward, terminated, success, info, _RESULTS[kind](state, action),
                            ACTIONS[action], kind, previous_distance)

    def invalid_step(self, reply: str) -> StepResult:
        """A reply naming no action is a no-op, so the dangerous rule applies: -10 and the episode ends."""
        self._require_running()
        state = self.state
        info: dict[str, Any] = {
            "stage": self.stage,
            "state": state,
            "base_reward": None,
            "dangerous": True,
            "invalid": True,
            "reply": reply,
        }
        return self._finish(DANGER_REWARD, True, False, info, "Your reply named no valid action. Game over.",
                            None, "invalid", self._distance(state))

    def failure_kind(self, episode: dict[str, Any]) -> str:
        """``wall crash``, ``wrong pickup``, ``wrong dropoff`` (a no-op that ends the episode), ``horizon``."""
        kinds = {"bumped": "wall crash", "pickup_nothing": "wrong pickup", "dropoff_nothing": "wrong dropoff"}
        if episode["end"] == "terminated" and episode["final"]["info"].get("result") in kinds:
            return kinds[episode["final"]["info"]["result"]]
        return super().failure_kind(episode)

    def reflection_action(self, reflection: str, actions: list[str]) -> int | None:
        """The action the reflection's last decision names ("So drive north now." names ``move north``)."""
        decisions = _NAMED_ACTION.findall(reflection or "")
        if not decisions:
            return None
        direction, stop = decisions[-1]
        text = f"move {direction.lower()}" if direction else f"{stop.lower()} passenger"
        return actions.index(text) if text in actions else None

    def oracle_action(self) -> int:
        """The first action of a shortest path to the goal; it never bumps a wall or wastes a pickup/drop-off."""
        if self._succeeded:
            raise RuntimeError("taxi: the episode already reached its goal; call reset()")
        action = _plan(self._goal)[1][self.state]
        if action is None:
            raise RuntimeError(f"taxi: no way to reach the {self._goal} goal from state {self.state}")
        return action

    def good_actions(self) -> list[int]:
        """Every first action of a shortest path: often two moves (north then east, or east then north)."""
        self.oracle_action()  # the same errors: after the goal, or with no way to reach it
        costs = _action_costs(self._goal, _plan(self._goal)[0], self.state)
        shortest = min(costs)[0]
        return [action for cost, action in costs if cost == shortest]

    def _distance(self, state: int) -> int | None:
        return _plan(self._goal)[0][state]

    @staticmethod
    def _outcome(state: int, action: int, next_state: int, delivered: bool) -> str:
        if action < PICKUP:
            return "bumped" if next_state == state else "moved"
        if action == PICKUP:
            return "pickup_nothing" if next_state == state else "picked_up"
        if next_state == state:
            return "dropoff_nothing"
        return "delivered" if delivered else "dropped_wrong_depot"

    def _finish(self, reward: float, terminated: bool, success: bool, info: dict[str, Any], result: str,
                last_action: str | None, kind: str, previous_distance: int | None) -> StepResult:
        self._steps += 1
        self._history.append(last_action or "an invalid reply")
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        self._succeeded = success
        if self._done:
            info["success"] = success
        if truncated:
            result += " Out of time."
        self._obs = self._observe(result, last_action=last_action, last_result=kind,
                                  previous_distance=previous_distance)
        return self._obs, reward / self.reward_scale, terminated, truncated, info

    def _observe(self, result: str, last_action: str | None, last_result: str,
                 previous_distance: int | None) -> Observation:
        state = self.state
        if self.observation_kind == "paper":
            history = ", ".join(self._history) if self._history else "none"
            text = f"{_TASK_SENTENCES[self.stage]}\n{render_map(state, depot_letters=False)}\nActions so far: {history}."
        else:
            text = (f"{_TASK_SENTENCES[self.stage]}\n{render_map(state)}\n{_LEGEND}\n"
                    f"{positions_line(state)}\nLast step: {result}")
        oracle = self._oracle_facts(state)
        oracle.update(last_action=last_action, last_result=last_result, previous_distance=previous_distance)
        return Observation(text=text, actions=list(ACTIONS),
                           info={"stage": self.stage, "state": state, "oracle": oracle})

    def _oracle_facts(self, state: int) -> dict[str, Any]:
        """Privileged facts for the oracle teacher: positions, target, next action, distance and the reason."""
        row, col, passenger, destination = decode(state)
        dest_row, dest_col = depot_cell(destination)
        passenger_cell = None if passenger == IN_TAXI else depot_cell(passenger)
        facts: dict[str, Any] = {
            "stage": self.stage,
            "taxi_row": row,
            "taxi_col": col,
            "passenger": "in taxi" if passenger == IN_TAXI else DEPOTS[passenger],
            "passenger_row": None if passenger_cell is None else passenger_cell[0],
            "passenger_col": None if passenger_cell is None else passenger_cell[1],
            "destination": DEPOTS[destination],
            "destination_row": dest_row,
            "destination_col": dest_col,
            "blocked": [d for a, d in enumerate(DIRECTIONS) if transition(state, a)[0] == state],
        }
        if passenger_cell is None:
            target, target_name, (target_row, target_col) = "destination", DEPOTS[destination], (dest_row, dest_col)
        else:
            target, target_name, (target_row, target_col) = "passenger", DEPOTS[passenger], passenger_cell
        d_row, d_col = target_row - row, target_col - col
        toward = [d for d, go in zip(DIRECTIONS, (d_row > 0, d_row < 0, d_col > 0, d_col < 0)) if go]
        facts.update(target=target, target_name=target_name, target_row=target_row, target_col=target_col,
                     target_offset=relative_position(d_row, d_col), toward=toward)
        if self._succeeded:
            facts.update(next_action=None, distance=0, reason="the task is complete")
            return facts
        action = _plan(self._goal)[1][state]
        facts["next_action"] = None if action is None else ACTIONS[action]
        facts["distance"] = self._distance(state)
        facts["reason"] = _reason(facts, action)
        return facts


def _reason(facts: dict[str, Any], action: int | None) -> str:
    """Why the oracle's next action is right, in words (no digits)."""
    if action is None:
        return "the goal cannot be reached from here"
    if action == PICKUP:
        return f"the taxi is at the passenger's stop {facts['target_name']}, so pick them up"
    if action == DROPOFF:
        return f"the taxi carries the passenger and is at the destination {facts['destination']}, so drop them off"
    direction = DIRECTIONS[action]
    where = f"the {facts['target']} at {facts['target_name']} lies {facts['target_offset']}"
    walled = [d for d in facts["toward"] if d in facts["blocked"] and d != direction]
    if direction in facts["toward"]:
        if walled:
            return f"{where}; a wall blocks the way {walled[0]}, so go {direction}"
        return f"{where}, so go {direction}"
    return f"{where}, but walls block the direct way, so go {direction} around them"


def _moved(state: int, action: int) -> str:
    return f"You moved {DIRECTIONS[action]}."


def _bumped(state: int, action: int) -> str:
    return f"You hit a wall going {DIRECTIONS[action]}. Game over."


def _pickup_nothing(state: int, action: int) -> str:
    if decode(state)[2] == IN_TAXI:
        return "The passenger is already in the taxi, nothing to pick up. Game over."
    return "There is no passenger here to pick up. Game over."


def _dropped_wrong_depot(state: int, action: int) -> str:
    row, col = decode(state)[:2]
    depot = next(name for i, name in enumerate(DEPOTS) if depot_cell(i) == (row, col))
    return f"You dropped off the passenger at {depot}, which is not the destination."


_RESULTS = {
    "moved": _moved,
    "bumped": _bumped,
    "picked_up": lambda state, action: "You picked up the passenger.",
    "pickup_nothing": _pickup_nothing,
    "delivered": lambda state, action: "You dropped off the passenger at the destination.",
    "dropped_wrong_depot": _dropped_wrong_depot,
    "dropoff_nothing": lambda state, action: "You cannot drop off here. Game over.",
}
