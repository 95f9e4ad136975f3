"""BabyAI levels (from ``minigrid``) as text, in the manner of GLAM's BabyAI-Text.

GLAM (Carta et al. 2023) turned BabyAI's grid into sentences such as "You see
a red ball 2 steps left and 1 step forward" and gave the agent six actions in
words. This env does the same from the agent's own egocentric view (the
partially observable ``gen_obs`` image), never from the full grid, so the
policy gets exactly what the engine lets the agent see.

Why these choices:

* Tasks are engine seeds; ``reset(task)`` reseeds the level, so a task always
  has the same layout and mission and an episode replays exactly.
* The oracle is minigrid's own ``BabyAIBot``. The bot is stateful (it keeps a
  plan and a map of seen cells), so it is rebuilt at every reset and told about
  every action the agent really took. When the agent wrecks the bot's plan (it
  opened a box, or carries something the bot did not expect) the bot is
  rebuilt on the spot with the cells seen so far; if even that fails the
  oracle falls back to a simple safe move (drop a stray object, else turn).
* Reward is minigrid's: ``1 - 0.9 * engine_steps / max_steps`` on success, 0
  otherwise. The env's ``max_steps`` is also given to the engine so the two
  step limits agree.
* An unparseable reply (``invalid_step``) does not touch the engine: it costs
  ``invalid_penalty`` and a step of the horizon.
"""

from __future__ import annotations

import contextlib
import io
import operator
import random
import re
from typing import Any

import gymnasium
import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)
import numpy as np
from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT, STATE_TO_IDX
from minigrid.envs.babyai.core.levelgen import LevelGen
from minigrid.envs.babyai.core.verifier import AfterInstr, AndInstr, BeforeInstr, PutNextInstr
from minigrid.utils.baby_ai_bot import BabyAIBot, DisappearedBoxError

from reflectrl.envs.base import (
    SEED_SPLIT_OFFSETS,
    SEED_SPLIT_SPAN,
    Observation,
    StepResult,
    TextEnv,
    seed_split_tasks,
)

#: GLAM's action list, in minigrid's action order (index i is minigrid action i).
ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")

#: GLAM's one-room pickup level; minigrid only ships PickupLoc (with location words).
_LOCAL_LEVELS: dict[str, dict[str, Any]] = {
    "PickupLocal": {
        "room_size": 8,
        "num_rows": 1,
        "num_cols": 1,
        "num_dists": 8,
        "locked_room_prob": 0,
        "locations": False,
        "unblocking": False,
        "implicit_unlock": False,
        "action_kinds": ["pickup"],
        "instr_kinds": ["action"],
    },
}

#: Horizons a bit above the bot's longest solutions (GoToLocal 24, PickupLocal 17,
#: PutNextLocal 35 steps over 300 seeds each); other levels use the engine's limit.
DEFAULT_MAX_STEPS = {"GoToLocal": 32, "PickupLocal": 32, "PutNextLocal": 64}

SPLIT_OFFSETS = SEED_SPLIT_OFFSETS
_SPLIT_SPAN = SEED_SPLIT_SPAN
_IDX_TO_STATE = {index: state for state, index in STATE_TO_IDX.items()}
#: The bot's documented ways of giving up: asserts on states it did not plan for,
#: an opened box, and a stale object index.
_BOT_FAILURES = (AssertionError, DisappearedBoxError, IndexError)
_INVALID_NOTE = "Your last reply was not one of the listed actions; nothing happened."


def _quiet(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with stdout swallowed: level generation prints its rejected samples."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def _make_level(level: str, max_steps: int | None) -> Any:
    """Build the raw minigrid level for ``level`` (a short name or a full ``BabyAI-*`` id)."""
    kwargs = {} if max_steps is None else {"max_steps": max_steps}
    if level in _LOCAL_LEVELS:
        return _quiet(LevelGen, **_LOCAL_LEVELS[level], **kwargs)
    env_id = level if level.startswith("BabyAI-") else f"BabyAI-{level}-v0"
    if env_id not in gymnasium.registry:
        registered = {k[len("BabyAI-") : -len("-v0")] for k in gymnasium.registry if re.fullmatch(r"BabyAI-.+-v0", k)}
        known = sorted(registered | set(_LOCAL_LEVELS))
        raise ValueError(f"babyai: unknown level {level!r}; known levels: {', '.join(known)}")
    return _quiet(gymnasium.make, env_id, **kwargs).unwrapped


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def offset_phrase(forward: int, right: int) -> str:
    """GLAM's wording of a cell relative to the agent: "2 steps left and 1 step forward"."""
    parts = []
    if right:
        parts.append(_steps(abs(right), "right" if right > 0 else "left"))
    if forward > 0:
        parts.append(_steps(forward, "forward"))
    elif forward < 0:
        parts.append(_steps(-forward, "behind"))
    return " and ".join(parts) if parts else "where you stand"


def _object_name(type_name: str, color: str, state: str | None = None) -> str:
    if type_name == "door":
        return f"{state} {color} door" if state else f"{color} door"
    if type_name in ("goal", "lava", "wall"):
        return type_name
    return f"{color} {type_name}"


def _world_object_name(obj: Any) -> str:
    state = None
    if obj.type == "door":
        state = "locked" if obj.is_locked else "open" if obj.is_open else "closed"
    return _object_name(obj.type, obj.color, state)


class BabyAIText(TextEnv):
    """A BabyAI level seen through text: mission, visible objects, what the agent carries."""

    name = "babyai"

    def __init__(
        self,
        level: str = "GoToLocal",
        max_steps: int | None = None,
        n_train: int = 10_000,
        n_val: int = 200,
        n_test: int = 500,
        invalid_penalty: float = 0.1,
        history_len: int = 4,
    ) -> None:
        for label, count in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if not 0 <= count <= _SPLIT_SPAN:
                raise ValueError(f"babyai: {label}={count} must be between 0 and {_SPLIT_SPAN}")
        short = level[len("BabyAI-") : -len("-v0")] if level.startswith("BabyAI-") and level.endswith("-v0") else level
        if max_steps is None:
            max_steps = DEFAULT_MAX_STEPS.get(short)
        if max_steps is None:
            probe = _make_level(level, None)
            _quiet(probe.reset, seed=0)
            max_steps = int(probe.max_steps)
        if max_steps < 1:
            raise ValueError(f"babyai: max_steps={max_steps} must be at least 1")
        self.level = short
        self.max_steps = int(max_steps)
        self.invalid_penalty = invalid_penalty
        self.history_len = history_len
        self._counts = {"train": n_train, "val": n_val, "test": n_test}
        self._env = _make_level(level, self.max_steps)
        self._draw_rng = random.Random(0)
        self._obs: Observation | None = None
        self._done = True

    # ----------------------------------------------------------------- tasks
    def tasks(self, split: str) -> list[int]:
        return seed_split_tasks("babyai", split, self._counts)

    # --------------------------------------------------------------- episode
    def reset(self, task: int | None = None, seed: int | None = None) -> Observation:
        if task is None:
            task = self.draw_train_task(seed, self._draw_rng, "n_train is 0")
        try:
            seed_value = -1 if isinstance(task, bool) else operator.index(task)
        except TypeError:
            seed_value = -1
        if seed_value < 0:
            raise ValueError(f"babyai: a task is a non-negative int engine seed, got {task!r}")
        task = seed_value
        raw, _ = _quiet(self._env.reset, seed=task)
        self.task = task
        self._image = raw["image"]
        self._steps = 0
        self._history: list[str] = []
        self._note: str | None = None
        self._last_effect: str | None = None
        self._seen = np.zeros((self._env.width, self._env.height), dtype=bool)
        self._mark_seen()
        self._bot: BabyAIBot | None = None
        self._focus_distance: int | None = None
        self._suggestion = self._replan(None)
        self._done = False
        self._obs = self._observe()
        return self._obs

    def step(self, action_index: int) -> StepResult:
        self._require_running()
        self.check_action(action_index)
        env = self._env
        before = (tuple(env.agent_pos), env.agent_dir, env.carrying, self._front_name())
        raw, reward, terminated, truncated, _ = env.step(action_index)
        self._image = raw["image"]
        self._steps += 1
        self._history.append(ACTIONS[action_index])
        self._note = None
        self._last_effect = self._effect(action_index, before)
        self._mark_seen()
        truncated = bool(truncated) or (not terminated and self._steps >= self.max_steps)
        info: dict[str, Any] = {"invalid": False, "action": ACTIONS[action_index]}
        if terminated or truncated:
            info["success"] = bool(terminated and reward > 0)
            self._done = True
            self._suggestion = None
        else:
            self._suggestion = self._replan(action_index)
        self._obs = self._observe()
        return self._obs, float(reward), bool(terminated), truncated, info

    def invalid_step(self, reply: str) -> StepResult:
        """Penalise a reply naming no listed action; the engine and the bot are left untouched."""
        self._require_running()
        self._steps += 1
        self._note = _INVALID_NOTE
        self._last_effect = "invalid reply"
        truncated = self._steps >= self.max_steps
        info: dict[str, Any] = {"invalid": True, "reply": reply}
        if truncated:
            info["success"] = False
            self._done = True
            self._suggestion = None
        self._obs = self._observe()
        return self._obs, -self.invalid_penalty, False, truncated, info

    def oracle_action(self) -> int:
        """The bot's suggestion, or the safe fallback when the bot cannot plan from here."""
        self._require_running()
        if self._suggestion is not None:
            return self._suggestion
        return self._fallback_action()

    # ------------------------------------------------------------------- bot
    def _replan(self, action_taken: int | None) -> int | None:
        """Tell the bot what the agent did and read its next action; rebuild it once if it gives up."""
        if self._bot is not None:
            try:
                suggestion = self._bot.replan(action_taken)
                if 0 <= suggestion < len(ACTIONS):
                    return int(suggestion)
            except _BOT_FAILURES:
                pass
        self._bot = BabyAIBot(self._env)
        self._bot.vis_mask = self._seen.copy()
        try:
            suggestion = self._bot.replan()
            if 0 <= suggestion < len(ACTIONS):
                return int(suggestion)
        except _BOT_FAILURES:
            pass
        self._bot = None
        return None

    def _fallback_action(self) -> int:
        """Free the hands if something is carried and the cell ahead is empty, else turn to look around."""
        if self._env.carrying is not None and self._front_name() is None:
            return ACTIONS.index("drop")
        return ACTIONS.index("turn left")

    # ------------------------------------------------------------ rendering
    def _mark_seen(self) -> None:
        """Remember every cell the agent's view shows (the same map the bot keeps)."""
        env = self._env
        size = env.agent_view_size
        for i in range(size):
            for j in range(size):
                if self._image[i, j, 0] == 0:
                    continue
                x, y = env.agent_pos + env.dir_vec * (size - 1 - j) + env.right_vec * (i - size // 2)
                if 0 <= x < env.width and 0 <= y < env.height:
                    self._seen[x, y] = True

    def _egocentric(self, pos: Any) -> tuple[int, int]:
        """(forward, right) of an absolute cell from the agent's point of view."""
        delta = np.asarray(pos) - np.asarray(self._env.agent_pos)
        return int(delta @ self._env.dir_vec), int(delta @ self._env.right_vec)

    def _front_name(self) -> str | None:
        cell = self._env.grid.get(*self._env.front_pos)
        return _world_object_name(cell) if cell is not None else None

    def visible(self) -> tuple[list[tuple[str, int, int]], dict[str, int]]:
        """What the egocentric view shows: objects as (name, forward, right), nearest first,
        and the distance to the nearest wall straight ahead, left and right."""
        size = self._env.agent_view_size
        me_i, me_j = size // 2, size - 1
        objects = []
        walls: dict[str, int] = {}
        for i in range(size):
            for j in range(size):
                type_name = IDX_TO_OBJECT[int(self._image[i, j, 0])]
                if (i, j) == (me_i, me_j) or type_name in ("unseen", "empty", "floor", "agent"):
                    continue
                forward, right = me_j - j, i - me_i
                if type_name == "wall":
                    side = "forward" if right == 0 else "left" if forward == 0 and right < 0 else None
                    side = "right" if forward == 0 and right > 0 else side
                    if side is not None:
                        distance = forward if side == "forward" else abs(right)
                        walls[side] = min(walls.get(side, distance), distance)
                    continue
                color = IDX_TO_COLOR[int(self._image[i, j, 1])]
                state = _IDX_TO_STATE.get(int(self._image[i, j, 2])) if type_name == "door" else None
                objects.append((_object_name(type_name, color, state), forward, right))
        objects.sort(key=lambda o: (o[1] + abs(o[2]), o[1], o[2]))
        return objects, walls

    def _observe(self) -> Observation:
        env = self._env
        objects, walls = self.visible()
        lines = [f"Goal of the agent: {env.mission}"]
        for side in ("forward", "left", "right"):
            if side in walls:
                lines.append(f"You see a wall {_steps(walls[side], side)}")
        for name, forward, right in objects:
            lines.append(f"You see a {name} {offset_phrase(forward, right)}")
        if env.carrying is not None:
            lines.append(f"You carry a {_world_object_name(env.carrying)}")
        else:
            lines.append("You carry nothing")
        recent = self._history[-self.history_len :] if self.history_len else []
        lines.append(f"Recent actions: {', '.join(recent) if recent else '(none yet)'}")
        if self._note:
            lines.append(self._note)
        lines.append(f"Step {self._steps} of {self.max_steps}.")
        info = {
            "task": self.task,
            "step": self._steps,
            "mission": env.mission,
            "oracle": self._oracle_facts(objects),
        }
        return Observation(text="\n".join(lines), actions=list(ACTIONS), info=info)

    def _effect(self, action: int, before: tuple[Any, ...]) -> str:
        """What the last action did, in words, judged from the state before and after it."""
        env = self._env
        pos, direction, carrying, front = before
        name = ACTIONS[action]
        if name in ("turn left", "turn right"):
            return "turned"
        if name == "go forward":
            return "moved forward" if tuple(env.agent_pos) != pos else f"blocked by the {front}"
        if name == "pick up":
            if carrying is None and env.carrying is not None:
                return f"picked up the {_world_object_name(env.carrying)}"
            return "already carrying something" if carrying is not None else "nothing to pick up"
        if name == "drop":
            if carrying is not None and env.carrying is None:
                return f"dropped the {_world_object_name(carrying)}"
            return "nothing to drop" if carrying is None else f"no room to drop, the {front} is in the way"
        now = self._front_name()
        return f"toggled the {front}" if front is not None and now != front else "nothing happened"

    def _oracle_facts(self, visible_objects: list[tuple[str, int, int]]) -> dict[str, Any]:
        """Privileged facts for the oracle teacher: targets from the engine's instruction, the bot's plan."""
        env = self._env
        suggestion = self._suggestion
        if suggestion is None and not self._done:
            suggestion = self._fallback_action()
        targets = []
        for role, desc in _instruction_targets(env.instrs):
            obj = self._closest(desc)
            if obj is None:
                continue
            entry: dict[str, Any] = {"role": role, "name": _world_object_name(obj), "carried": obj is env.carrying}
            if obj is not env.carrying and obj.cur_pos is not None:
                x, y = obj.cur_pos
                forward, right = self._egocentric((x, y))
                relative = np.asarray((x, y)) - np.asarray(env.agent_pos)
                view = [(f, r) for n, f, r in visible_objects if n == entry["name"]]
                entry.update(
                    forward=forward,
                    right=right,
                    visible=(forward, right) in view,
                    seen=bool(self._seen[x, y]),
                    distance=int(abs(relative[0]) + abs(relative[1])),
                )
            targets.append(entry)
        subgoal = self._bot.stack[-1] if self._bot is not None and self._bot.stack else None
        focus = _focus(targets)
        previous_distance = self._focus_distance
        self._focus_distance = focus.get("distance") if focus is not None else None
        return {
            "mission": env.mission,
            "next_action": ACTIONS[suggestion] if suggestion is not None else None,
            "bot_planned": self._suggestion is not None,
            "subgoal": type(subgoal).__name__.replace("Subgoal", "") if subgoal is not None else None,
            "targets": targets,
            "focus": focus,
            "previous_focus_distance": previous_distance,
            "carrying": _world_object_name(env.carrying) if env.carrying is not None else None,
            "front": self._front_name(),
            "visible_objects": [
                {"name": n, "forward": f, "right": r, "where": offset_phrase(f, r)} for n, f, r in visible_objects
            ],
            "last_action": self._history[-1] if self._history else None,
            "last_effect": self._last_effect,
        }

    def _closest(self, desc: Any) -> Any:
        """The object matching an instruction's description that is nearest the agent (or carried)."""
        env = self._env
        best, best_distance = None, None
        for obj in desc.obj_set:
            if obj is env.carrying:
                return obj
            if obj.cur_pos is None or min(obj.cur_pos) < 0 or env.grid.get(*obj.cur_pos) is not obj:
                continue
            distance = int(np.abs(np.asarray(obj.cur_pos) - np.asarray(env.agent_pos)).sum())
            if best_distance is None or distance < best_distance:
                best, best_distance = obj, distance
        return best


def _focus(targets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The object to head for now: the first one not yet in hand; once the object to
    move is carried, the one to put it next to."""
    for entry in targets:
        if not entry["carried"]:
            return entry
    return None


def _instruction_targets(instr: Any) -> list[tuple[str, Any]]:
    """(role, object description) pairs named by a BabyAI instruction, in the order they matter."""
    if isinstance(instr, (AndInstr, BeforeInstr)):
        return _instruction_targets(instr.instr_a) + _instruction_targets(instr.instr_b)
    if isinstance(instr, AfterInstr):
        return _instruction_targets(instr.instr_b) + _instruction_targets(instr.instr_a)
    if isinstance(instr, PutNextInstr):
        return [("move", instr.desc_move), ("next to", instr.desc_fixed)]
    return [("target", instr.desc)]
