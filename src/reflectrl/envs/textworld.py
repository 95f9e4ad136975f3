"""TextWorld games as a reflectrl env, played through TextWorld's own engine.

Games come from TextWorld's generator (the API behind ``tw-make``): the
``tw-simple`` and ``tw-cooking`` challenges, or ``custom`` games of a chosen
size. Each task is a game seed; a game is generated and compiled once per
(challenge, settings, split, seed) into a cache directory and reused after
that, because compiling an Inform7 game takes seconds while playing it takes
milliseconds.

Why these choices:

* Actions are the engine's admissible commands, sorted, so the list (and the
  ids the policy sees) is the same every time the same state is reached.
* Reward is the engine's score delta divided by the game's maximum score, so a
  won game is worth 1.0 whatever the challenge's point scale.
* The oracle is the engine's own winning policy (``policy_commands``), which it
  recomputes after every move, so it stays correct after the agent strays.
* An unparseable reply (``invalid_step``) sends nothing to the game, costs
  ``invalid_penalty`` and uses up a step, so a policy cannot stall forever.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import random
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import textworld
import textworld.challenges
import textworld.generator
from textworld.generator import QuestGenerationError

from reflectrl.envs.base import (
    SEED_SPLIT_OFFSETS,
    SEED_SPLIT_SPAN,
    Observation,
    StepResult,
    TextEnv,
    seed_split_tasks,
)
from reflectrl.errors import UserError

CHALLENGES = ("tw-simple", "tw-cooking", "custom")

#: tw-simple's settings that take one of a few words (TextWorld's own choices)
SETTING_CHOICES = {"rewards": ("dense", "balanced", "sparse"), "goal": ("detailed", "brief", "none")}

#: Settings each challenge starts from; user settings override these keys.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "tw-simple": {"rewards": "dense", "goal": "brief"},
    "tw-cooking": {
        "recipe": 1,
        "take": 1,
        "go": 1,
        "open": True,
        "cook": True,
        "cut": False,
        "drop": False,
        "recipe_seed": 0,
    },
    "custom": {"nb_rooms": 3, "nb_objects": 6, "quest_length": 4, "quest_breadth": 1},
}

#: Tasks are game seeds; each split owns a disjoint range of them.
SPLIT_OFFSETS = SEED_SPLIT_OFFSETS
_SPLIT_SPAN = SEED_SPLIT_SPAN

#: The "Last result" before any command, and after a reply that named none.
_NO_FEEDBACK = "(none yet)"
_INVALID_FEEDBACK = "Nothing happened: that reply was not one of the listed commands."
_DIRECTIONS = ("north", "south", "east", "west")
_ROOM_HEADER = re.compile(r"-= (.+?) =-")
_GAME_OVER_MENU = re.compile(r"Would you like to RESTART.*?\?")
#: Generation tries per task before giving up, and the policy length a check allows.
_MAX_ATTEMPTS = 5
_CHECK_STEPS = 200
#: Jericho's warning that it cannot read a TextWorld game's score (TextWorld's wrappers do).
_JERICHO_NOISE = ".*is not fully supported.*"


def default_cache_dir() -> Path:
    """``$REFLECTRL_CACHE/textworld``, else ``~/.cache/reflectrl/textworld``."""
    root = os.environ.get("REFLECTRL_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "reflectrl"
    return base / "textworld"


def split_of(seed: int) -> str:
    """The split whose seed range holds ``seed``."""
    for split, offset in SPLIT_OFFSETS.items():
        if offset <= seed < offset + _SPLIT_SPAN:
            return split
    raise ValueError(
        f"textworld: task {seed!r} is outside every split's seed range "
        f"({', '.join(f'{s}: {o}..{o + _SPLIT_SPAN - 1}' for s, o in SPLIT_OFFSETS.items())})"
    )


def _attempt_seed(task: int, attempt: int) -> int:
    """The generator seed of a task's ``attempt``-th try: the task itself first, then derived ones."""
    if attempt == 0:
        return int(task)
    return int(hashlib.sha1(f"{task}:{attempt}".encode()).hexdigest()[:8], 16)


def _start(game_file: Path, infos: textworld.EnvInfos) -> Any:
    """Open a compiled game without Jericho's score-tracking warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JERICHO_NOISE)
        return textworld.start(str(game_file), request_infos=infos)


def _playability_problem(game_file: Path) -> str | None:
    """Why a generated game is unfit, or None.

    The generator sometimes names two objects so that one name's words are
    all inside the other's ("chest" / "American style chest"); the Inform7
    parser then asks "Which do you mean?" and the engine's own policy commands
    stall. Such games are rejected, as is any game whose policy does not win.
    """
    game = textworld.Game.load(str(game_file.with_suffix(".json")))
    names = {
        info.name.lower()
        for info in game.infos.values()
        if info.name and info.type not in ("P", "I", "r")
    }
    words = {name: set(name.split()) for name in names}
    for name in names:
        for other in names:
            if name != other and words[name] <= words[other]:
                return f"ambiguous object names {name!r} and {other!r}"
    infos = textworld.EnvInfos(admissible_commands=True, policy_commands=True, won=True, lost=True)
    env = _start(game_file, infos)
    try:
        state = env.reset()
        for _ in range(_CHECK_STEPS):
            if state["won"]:
                return None
            plan = state["policy_commands"] or []
            if not plan or plan[0] not in (state["admissible_commands"] or []):
                return f"policy command {plan[:1]} is not admissible"
            state, _, _ = env.step(plan[0])
        return None if state["won"] else f"policy did not win within {_CHECK_STEPS} commands"
    finally:
        env.close()


def cached_game_damage(story: Path) -> str | None:
    """What is wrong with a cached game (its story file shorter than its header declares, or not one; its
    description not TextWorld's JSON), or None. Checked before the game is opened: on a truncated story
    file Jericho ends the whole process with "Fatal error: Story file read error"."""
    with story.open("rb") as handle:
        header = handle.read(0x1C)
    version = header[0] if header else 0
    if len(header) < 0x1C or not 1 <= version <= 8:
        return "not a Z-machine story file"
    declared = int.from_bytes(header[0x1A:0x1C], "big") * (2 if version <= 3 else 4 if version <= 5 else 8)
    size = story.stat().st_size
    if size < declared:
        return f"the story file has {size} bytes of the {declared} its header declares"
    try:
        description = json.loads(story.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"its description cannot be read: {error}"
    if not isinstance(description, dict) or "KB" not in description:
        return "its description is not a TextWorld game"
    return None


def _clean(text: str | None) -> str:
    """Engine text on one line, cut at the command prompt (after it comes Jericho's status bar)."""
    kept = []
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith(">"):
            break
        if line:
            kept.append(line)
    return _GAME_OVER_MENU.sub("", " ".join(kept)).strip()


def _feedback(raw: str | None, description: str) -> str:
    """The reply to a command; a move's reply, which repeats the room description, is shortened."""
    feedback = _clean(raw)
    room = _ROOM_HEADER.match(description)
    if room and description and feedback.startswith(description):
        rest = feedback[len(description) :].strip()
        feedback = f"You arrive in the {room.group(1).lower()}." + (f" {rest}" if rest else "")
    return feedback or "(no reply)"


class TextWorld(TextEnv):
    """A generated TextWorld game per task, with admissible commands as actions."""

    name = "textworld"

    def __init__(
        self,
        challenge: str = "tw-simple",
        settings: dict[str, Any] | None = None,
        max_steps: int = 30,
        n_train: int = 100,
        n_val: int = 20,
        n_test: int = 50,
        cache_dir: str | os.PathLike[str] | None = None,
        invalid_penalty: float = 0.1,
        history_len: int = 5,
    ) -> None:
        if challenge not in CHALLENGES:
            raise ValueError(f"textworld: unknown challenge {challenge!r}; choose one of {', '.join(CHALLENGES)}")
        unknown = set(settings or {}) - set(DEFAULT_SETTINGS[challenge])
        if unknown:
            raise ValueError(
                f"textworld: unknown {challenge} settings {sorted(unknown)}; "
                f"known: {sorted(DEFAULT_SETTINGS[challenge])}"
            )
        for key, value in (settings or {}).items():
            default = DEFAULT_SETTINGS[challenge][key]
            if type(value) is not type(default):
                kind = {bool: "true or false", int: "an integer", str: "a string"}[type(default)]
                raise ValueError(f"textworld: {challenge} setting {key}={value!r} must be {kind}, like its default "
                                 f"({default!r})")
            if key in SETTING_CHOICES and value not in SETTING_CHOICES[key]:
                raise ValueError(f"textworld: {challenge} setting {key}={value!r} must be one of "
                                 f"{', '.join(SETTING_CHOICES[key])}")
            least = 0 if key == "nb_objects" else 1
            if challenge == "custom" and value < least:
                raise ValueError(f"textworld: custom setting {key}={value} must be at least {least}")
        for label, count in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if not 0 <= count <= _SPLIT_SPAN:
                raise ValueError(f"textworld: {label}={count} must be between 0 and {_SPLIT_SPAN}")
        if max_steps < 1:
            raise ValueError(f"textworld: max_steps={max_steps} must be at least 1")
        self.challenge = challenge
        self.settings = {**DEFAULT_SETTINGS[challenge], **(settings or {})}
        self.max_steps = max_steps
        self.invalid_penalty = invalid_penalty
        self.history_len = history_len
        self._counts = {"train": n_train, "val": n_val, "test": n_test}
        key = json.dumps(
            {"challenge": challenge, "settings": self.settings, "textworld": textworld.__version__}, sort_keys=True
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._game_dir = self.cache_dir / challenge / hashlib.sha1(key.encode()).hexdigest()[:12]
        self._draw_rng = random.Random(0)
        self._game: Any = None
        self._state: Any = None
        self._obs: Observation | None = None
        self._done = True

    # ----------------------------------------------------------------- tasks
    def tasks(self, split: str) -> list[int]:
        return seed_split_tasks("textworld", split, self._counts)

    def game_path(self, task: int) -> Path:
        """Where the compiled game of ``task`` lives in the cache (it may not exist yet)."""
        return self._game_dir / f"{split_of(task)}-{task}.z8"

    def prepare(self, split: str) -> list[Path]:
        """Generate (or find in the cache) every game of ``split``; returns their paths."""
        return [self._ensure_game(task) for task in self.tasks(split)]

    def _challenge_settings(self, split: str) -> dict[str, Any]:
        """The settings passed to the challenge's ``make``: ours plus the challenge's own split."""
        settings = dict(self.settings)
        if self.challenge == "tw-simple":
            settings["test"] = split == "test"
        elif self.challenge == "tw-cooking":
            settings["split"] = {"train": "train", "val": "valid", "test": "test"}[split]
        return settings

    def _ensure_game(self, task: int) -> Path:
        path = self.game_path(task)
        if path.is_file() and path.with_suffix(".json").is_file():
            damage = cached_game_damage(path)
            if damage is None:
                return path
            warnings.warn(f"textworld: the cached game {path} is damaged ({damage}); it is generated again",
                          stacklevel=3)
        self._game_dir.mkdir(parents=True, exist_ok=True)
        settings_file = self._game_dir / "settings.json"
        if not settings_file.exists():
            settings_file.write_text(json.dumps({"challenge": self.challenge, "settings": self.settings}, indent=1))
        build_dir = Path(tempfile.mkdtemp(prefix="build-", dir=self._game_dir))
        try:
            problems = []
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    self._generate(split_of(task), _attempt_seed(task, attempt), build_dir / "game.z8")
                except QuestGenerationError as error:
                    problems.append(f"no quest fits the settings ({error})")
                    continue
                problem = _playability_problem(build_dir / "game.z8")
                if problem is None:
                    break
                problems.append(problem)
            else:
                raise UserError(
                    f"textworld: {_MAX_ATTEMPTS} tries to generate a {self.challenge} game for task {task} "
                    f"with settings {self.settings} failed: {problems}"
                    + ("; lower quest_length or add rooms/objects" if self.challenge == "custom" else "")
                )
            # json first: a .z8 in the cache always has its .json next to it.
            os.replace(build_dir / "game.json", path.with_suffix(".json"))
            os.replace(build_dir / "game.z8", path)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        return path

    def _generate(self, split: str, seed: int, target: Path) -> None:
        """Make and compile one game with TextWorld's generator (what ``tw-make`` does)."""
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = str(target)
        options.file_ext = ".z8"
        options.force_recompile = True
        if self.challenge == "custom":
            options.nb_rooms = int(self.settings["nb_rooms"])
            options.nb_objects = int(self.settings["nb_objects"])
            length = int(self.settings["quest_length"])
            breadth = int(self.settings["quest_breadth"])
            options.chaining.min_length = options.chaining.max_length = options.chaining.max_depth = length
            options.chaining.min_breadth = options.chaining.max_breadth = breadth
            game = textworld.generator.make_game(options)
        else:
            _, make, _ = textworld.challenges.CHALLENGES[self.challenge]
            with warnings.catch_warnings():
                # tw-simple replays its walkthrough through Jericho while it builds the game
                warnings.filterwarnings("ignore", message=_JERICHO_NOISE)
                game = make(settings=self._challenge_settings(split), options=options)
        textworld.generator.compile_game(game, options)

    # --------------------------------------------------------------- episode
    def reset(self, task: int | None = None, seed: int | None = None) -> Observation:
        if task is None:
            task = self.draw_train_task(seed, self._draw_rng, "n_train is 0")
        if isinstance(task, bool):
            raise ValueError(f"textworld: a task is an int game seed, got {task!r}")
        try:
            task = operator.index(task)
        except TypeError:
            raise ValueError(f"textworld: a task is an int game seed, got {task!r}") from None
        path = self._ensure_game(task)
        if self._game is not None:
            self._game.close()
        infos = textworld.EnvInfos(
            feedback=True,
            description=True,
            inventory=True,
            objective=True,
            admissible_commands=True,
            policy_commands=True,
            facts=True,
            won=True,
            lost=True,
            score=True,
            max_score=True,
        )
        self._game = _start(path, infos)
        self._state = self._game.reset()
        self.task = task
        self._steps = 0
        self._score = 0
        self._max_score = max(1, int(self._state["max_score"] or 1))
        self._history: list[str] = []
        self._feedback = _NO_FEEDBACK
        self._last_effect: str | None = None
        self._done = False
        self._obs = self._observe()
        return self._obs

    def step(self, action_index: int) -> StepResult:
        self._require_running()
        self.check_action(action_index)
        command = self.observation.actions[action_index]
        plan_before = len(self._state.get("policy_commands") or [])
        self._state, _, _ = self._game.step(command)
        score = int(self._state["score"] or 0)
        reward = (score - self._score) / self._max_score
        self._score = score
        self._steps += 1
        self._history.append(command)
        self._feedback = _feedback(self._state["feedback"], _clean(self._state["description"]))
        plan_after = len(self._state.get("policy_commands") or [])
        won, lost = bool(self._state["won"]), bool(self._state["lost"])
        if won:
            self._last_effect = "progress"
        elif lost or not self._state.get("policy_commands"):
            self._last_effect = "setback"
        else:
            self._last_effect = (
                "progress" if plan_after < plan_before else "setback" if plan_after > plan_before else "no_progress"
            )
        terminated = won or lost
        truncated = not terminated and self._steps >= self.max_steps
        info: dict[str, Any] = {"invalid": False, "command": command, "score": score, "won": won, "lost": lost}
        if terminated or truncated:
            info["success"] = won
            self._done = True
        self._obs = self._observe()
        return self._obs, reward, terminated, truncated, info

    def invalid_step(self, reply: str) -> StepResult:
        """Penalise a reply naming no listed command; the game itself is left untouched."""
        self._require_running()
        self._steps += 1
        self._feedback = _INVALID_FEEDBACK
        self._last_effect = "invalid"
        truncated = self._steps >= self.max_steps
        info: dict[str, Any] = {"invalid": True, "reply": reply, "score": self._score, "won": False, "lost": False}
        if truncated:
            info["success"] = False
            self._done = True
        self._obs = self._observe()
        return self._obs, -self.invalid_penalty, False, truncated, info

    def oracle_action(self) -> int:
        """Index of the engine's next winning-policy command; ``look`` if the game can no longer be won."""
        self._require_running()
        actions = self.observation.actions
        command = self.observation.info["oracle"]["next_command"]
        if command in actions:
            return actions.index(command)
        if command is not None:
            normalized = {" ".join(a.lower().split()): i for i, a in enumerate(actions)}
            key = " ".join(command.lower().split())
            if key in normalized:
                return normalized[key]
        if "look" in actions:
            return actions.index("look")
        raise RuntimeError(
            f"textworld: the engine's next policy command {command!r} is not admissible and 'look' is missing "
            f"(task {self.task}, step {self._steps})"
        )

    # ------------------------------------------------------------ rendering
    def _observe(self) -> Observation:
        state = self._state
        actions = sorted(set(state["admissible_commands"] or []))
        lines = [
            f"Goal: {_clean(state['objective'])}",
            f"Location: {_clean(state['description'])}",
            f"Inventory: {_clean(state['inventory'])}",
        ]
        recent = self._history[-self.history_len :] if self.history_len else []
        lines.append(f"Recent commands: {'; '.join(recent) if recent else '(none yet)'}")
        lines.append(f"Last result: {self._feedback}")
        lines.append(f"Step {self._steps} of {self.max_steps}. Score {self._score} of {self._max_score}.")
        info = {
            "task": self.task,
            "step": self._steps,
            "score": self._score,
            "max_score": self._max_score,
            "oracle": self._oracle_facts(),
        }
        return Observation(text="\n".join(lines), actions=actions, info=info)

    def _oracle_facts(self) -> dict[str, Any]:
        """Privileged facts for the oracle teacher, read from the engine's state tracking."""
        state = self._state
        plan = list(state.get("policy_commands") or [])
        world = _World(state.get("facts") or [])
        route = []
        target_command = None
        for command in plan:
            if command.startswith("go "):
                route.append(command)
            else:
                target_command = command
                break
        target = world.first_entity_in(target_command) if target_command else None
        room = world.location
        route_rooms = []
        for command in route:
            room = world.neighbour(room, command[3:]) if room else None
            route_rooms.append(room)
        return {
            "goal": _clean(state["objective"]),
            "next_command": plan[0] if plan else None,
            "plan": plan,
            "remaining_steps": len(plan),
            "winnable": bool(plan) or bool(state["won"]),
            "location": world.location,
            "inventory": world.inventory,
            "route": route,
            "route_rooms": route_rooms,
            "target_command": target_command,
            "target": target,
            "target_where": world.whereabouts(target) if target else None,
            "target_room": world.room_of(target) if target else None,
            "last_command": self._history[-1] if self._history else None,
            "last_effect": self._last_effect,
            "last_feedback": self._feedback,
        }


class _World:
    """Lookups over the engine's human-readable facts (``at``, ``in``, ``on``, ``link``, ``<dir>_of``)."""

    def __init__(self, facts: list[Any]) -> None:
        self.facts = [(fact.name, [(arg.name, arg.type) for arg in fact.arguments]) for fact in facts]
        self.location = next((args[1][0] for name, args in self.facts if name == "at" and args[0][1] == "P"), None)
        self.inventory = sorted(args[0][0] for name, args in self.facts if name == "in" and args[1][1] == "I")
        names = {arg for _, args in self.facts for arg, kind in args if kind not in ("P", "I")}
        self._names = sorted(names, key=len, reverse=True)

    def first_entity_in(self, command: str) -> str | None:
        """The entity named earliest in ``command`` (the longest name wins at a position)."""
        best: tuple[int, int, str] | None = None
        for name in self._names:
            match = re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", command)
            if match and (best is None or (match.start(), -len(name)) < (best[0], best[1])):
                best = (match.start(), -len(name), name)
        return best[2] if best else None

    def whereabouts(self, entity: str) -> str | None:
        """Where ``entity`` is, in words: "in your inventory", "in the chest drawer", ..."""
        for name, args in self.facts:
            if len(args) == 2 and args[0][0] == entity and name in ("in", "on", "at"):
                holder, kind = args[1]
                if kind == "I":
                    return "in your inventory"
                return f"{'on' if name == 'on' else 'in'} the {holder}"
        for name, args in self.facts:
            if name == "link" and args[1][0] == entity:
                return f"between the {args[0][0]} and the {args[2][0]}"
        return None

    def room_of(self, entity: str, depth: int = 0) -> str | None:
        """The room holding ``entity``, following containers and supporters."""
        if depth > 8:
            return None
        for name, args in self.facts:
            if len(args) == 2 and args[0][0] == entity and name in ("in", "on", "at"):
                holder, kind = args[1]
                if kind == "r":
                    return holder
                if kind == "I":
                    return self.location
                return self.room_of(holder, depth + 1)
        for name, args in self.facts:
            if name == "link" and args[1][0] == entity and args[0][0] == self.location:
                return self.location
        return None

    def neighbour(self, room: str, direction: str) -> str | None:
        """The room ``direction`` of ``room`` (``east_of(X, room)`` means X lies east)."""
        if direction not in _DIRECTIONS:
            return None
        for name, args in self.facts:
            if name == f"{direction}_of" and args[1][0] == room:
                return args[0][0]
        return None
