"""ALFWorld as a reflectrl TextEnv: the real alfworld/TextWorld engine, offline.

Actions are the engine's admissible commands, all of them, in the engine's
sorted order: the paper's code (``AlfworldEnv(discretize_actions=True)``)
enumerates ``admissible_commands`` as they come, so ``look``, ``inventory``,
``help`` and ``examine ...`` stay in the list (they waste a step, which the
policy has to learn). The state text is the engine's opening description
(room and task) plus the steps taken so far: the last ``history_window`` with
their feedback, older ones by command only. Reward and success are the
engine's: 1 on the step the goal holds (``won``), else 0; horizon 15.

Games come from the official ALFWorld data when it is installed (see
``data.py``), else from reflectrl's generator (``problems.py``), cached on disk.
The oracle is alfworld's PLANNER expert (fast-downward's plan from the current
state); ``info["oracle"]`` exposes it with the facts a teacher needs. The
planner knows where the target object lies before the agent has seen it, so a
policy imitating it has to guess its first moves. ``expert="search"`` makes an
oracle whose every move follows from what the agent has observed: until a
target has been seen it checks the places such objects are usually kept, then
the others (surfaces before closed ones, opening what it reaches), and from
then on it follows the planner.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

from alfworld.agents.environment.alfred_tw_env import TASK_TYPES

from reflectrl.envs.alfworld.data import (
    OFFICIAL_DATA_HINT,
    cache_root,
    collect_problem_dirs,
    game_file_for,
    official_data_root,
)
from reflectrl.envs.alfworld.engine import (
    GAME_FILE,
    NOTHING_HAPPENS,
    TRAJ_DATA_FILE,
    AlfredEngine,
    record_plan,
)
from reflectrl.envs.alfworld.problems import (
    TASK_TREATMENTS,
    TYPICAL_PLACES,
    GeneratorSettings,
    generate_problem,
    split_of_seed,
    split_seeds,
    write_problem,
)
from reflectrl.envs.base import Observation, StepResult, TextEnv
from reflectrl.envs.registry import check_argument_types
from reflectrl.errors import UserError

BANNER = "-= Welcome to TextWorld, ALFRED! =-"
SOURCES = ("auto", "official", "generated")
EXPERTS = ("planner", "search")
#: the last steps of an episode cut by the horizon that ``failure_kind`` reads: a loop when they
#: hold at most half as many different commands
LOOP_WINDOW = 6
#: what each treatment task needs and which appliance gives it
_TREATMENT_STATE = {"Heatable": ("hot", "ishot"), "Coolable": ("cool", "iscool"), "Cleanable": ("clean", "isclean")}
_TYPICAL_BY_NAME = {obj.lower(): {place.lower() for place in places} for obj, places in TYPICAL_PLACES.items()}

Task = int | str
#: a reflection's decision, in the oracle teacher's wording ("Now I will go and check the countertop 1.")
_DECISION = re.compile(r"(?:So next I should|The next step is to|Now I will|I should) (.+?)(?: now)?\.(?=\s|$)")
#: how a decision's words begin, for each command verb of the engine
_DECISION_VERBS = (
    (("head to the ", "walk over to the ", "go over to the ", "make my way to the ", "go and check the ",
      "take a look at the ", "go to the "), "go"),
    (("open the ", "pull the "), "open"),
    (("close the ", "shut the "), "close"),
    (("pick up the ", "grab the ", "take the "), "take"),
    (("put the ", "place the ", "set the ", "get rid of the "), "move"),
    (("heat the ", "warm the "), "heat"),
    (("cool the ", "chill the "), "cool"),
    (("clean the ", "rinse the "), "clean"),
    (("turn on the ", "switch the "), "use"),
)
#: an object or receptacle as the engine names it (``tomato 1``, ``stoveburner 3``)
_ENTITY = re.compile(r"\b[a-z]+ \d+\b")


def _natural_key(name: str) -> tuple[str, int]:
    """Sort ``cabinet 2`` before ``cabinet 10``."""
    base, _, number = name.rpartition(" ")
    return (base, int(number)) if number.isdigit() else (name, 0)


def _type_name(entity: str) -> str:
    """``tomatotype`` -> ``tomato`` (the engine's names of ALFRED's otype/rtype constants)."""
    entity = entity.strip()
    return entity[: -len("type")] if entity.endswith("type") else entity


class ALFWorld(TextEnv):
    """Household tasks ("put a tomato in microwave") played through alfworld's TextWorld engine.

    ``source``: ``"official"`` (needs the ALFWorld download), ``"generated"``
    (reflectrl's problems), or ``"auto"`` (official if found, else generated,
    with a warning that says how to get the official data). ``task_type``,
    ``object_type`` and ``receptacle_type`` filter the official games and steer
    the generator (defaults: the paper's pick_and_place_simple Tomato ->
    Microwave; None means any). ``expert``: ``"planner"`` (sees the whole
    state) or ``"search"`` (acts only on what has been observed; see the module
    docstring). ``generator_options`` go to
    ``GeneratorSettings`` (``room``, ``min_distractors``...). ``n_train``,
    ``n_val``, ``n_test`` size the generated splits; official splits are
    ``train``, ``valid_seen`` (val) and ``valid_unseen`` (test).
    """

    name = "alfworld"

    def __init__(
        self,
        max_steps: int = 15,
        task_type: str = "pick_and_place_simple",
        object_type: str | None = "Tomato",
        receptacle_type: str | None = "Microwave",
        source: str = "auto",
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        n_train: int = 1000,
        n_val: int = 100,
        n_test: int = 100,
        history_window: int = 5,
        invalid_penalty: float = 0.0,
        expert: str = "planner",
        generator_options: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if history_window < 0:
            raise ValueError(f"history_window must be >= 0, got {history_window}")
        if expert not in EXPERTS:
            raise ValueError(f"expert must be one of {', '.join(EXPERTS)}; got {expert!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
        if task_type not in TASK_TYPES.values():
            raise ValueError(f"unknown ALFWorld task type {task_type!r}; known: {', '.join(TASK_TYPES.values())}")
        self.max_steps = max_steps
        self.history_window = history_window
        self.invalid_penalty = float(invalid_penalty)
        self.expert = expert
        self.task_type = task_type
        self.object_type = object_type
        self.receptacle_type = receptacle_type
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self._split_sizes = {"train": n_train, "val": n_val, "test": n_test}
        self._rng = random.Random(seed)
        self._task_lists: dict[str, list[Task]] = {}
        self._checked: set[Path] = set()

        self.data_root = official_data_root(data_dir) if source != "generated" else None
        where = data_dir or os.environ.get("ALFWORLD_DATA") or "~/.cache/alfworld"
        if source == "official" and self.data_root is None:
            raise FileNotFoundError(f"no official ALFWorld data (json_2.1.1) under {where}. {OFFICIAL_DATA_HINT}")
        self.generator: GeneratorSettings | None = None
        if self.data_root is None:
            options = dict(generator_options or {})
            own = ("task_type", "object_type", "receptacle_type")  # the env's own arguments
            known = [field.name for field in dataclasses.fields(GeneratorSettings) if field.name not in own]
            unknown = sorted(set(options) - set(known))
            if unknown:
                hint = f"; {', '.join(own)} are the env's own arguments" if set(unknown) & set(own) else ""
                raise ValueError(f"generator_options: unknown {', '.join(unknown)}; known: {', '.join(known)}{hint}")
            check_argument_types(GeneratorSettings, options, "alfworld generator_options")
            self.generator = GeneratorSettings(
                task_type=task_type, object_type=object_type, receptacle_type=receptacle_type, **options,
            )
            for split, count in self._split_sizes.items():
                split_seeds(split, count)
            if source == "auto":
                warnings.warn(
                    f"ALFWorld: no official data (json_2.1.1) under {where}, so reflectrl's generated household "
                    f"problems are used (cached in {self.cache_dir / 'generated'}). "
                    + OFFICIAL_DATA_HINT,
                    stacklevel=2,
                )

        self._engine = AlfredEngine()
        self.task: Task | None = None
        self._traj_data: dict[str, Any] = {}
        self._intro = ""
        self._history: list[tuple[str, str]] = []
        self._steps = 0
        self._done = True
        self._state: Any = None
        self._last: dict[str, Any] = {}
        self._obs: Observation | None = None

    # ----------------------------------------------------------------- tasks

    @property
    def source(self) -> str:
        """``official`` or ``generated``: where this env's games come from."""
        return "generated" if self.generator is not None else "official"

    def tasks(self, split: str) -> list[Task]:
        """Generated: the split's seeds (ints). Official: trial folder paths (strs)."""
        if split not in self._split_sizes:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        if split not in self._task_lists:
            if self.generator is not None:
                self._task_lists[split] = list(split_seeds(split, self._split_sizes[split]))
            else:
                found = collect_problem_dirs(self.data_root, split, self.task_type, self.object_type, self.receptacle_type)
                self._task_lists[split] = [str(path) for path in found]
        return list(self._task_lists[split])

    def _generated_game_file(self, seed: int) -> Path:
        """Generate one problem, or find it in the cache."""
        if self.generator is None:
            raise ValueError(f"task {seed!r} is a generated seed, but this env plays official data ({self.data_root})")
        problem = generate_problem(self.generator, seed)
        data_root = self.cache_dir / "generated" / self.generator.key() / "json_2.1.1"
        game_file = data_root / problem.relative_dir / GAME_FILE
        if game_file.is_file() and (game_file.parent / TRAJ_DATA_FILE).is_file():
            return game_file
        return write_problem(problem, data_root)

    def _game_file(self, task: Task) -> Path:
        if not isinstance(task, (str, os.PathLike)):
            if isinstance(task, bool) or not hasattr(task, "__index__"):
                raise TypeError(f"an ALFWorld task is a generated seed (int) or a trial folder / game file path; got {task!r}")
            seed = operator.index(task)
            split_of_seed(seed)
            return self._generated_game_file(seed)
        path = Path(task)
        if path.is_file() and path.name == GAME_FILE:
            return path
        if path.is_dir():
            return game_file_for(path, self.cache_dir)
        raise FileNotFoundError(f"ALFWorld task {task!r} is neither a trial folder nor a {GAME_FILE} file")

    def _load_game(self, task: Task) -> Path:
        """Load ``task``'s game into the engine and start it; returns the game file. A user's trial folder or
        game file that cannot be played is refused as the user's error, naming it."""
        try:
            game_file = self._game_file(task)
            self._engine.load(game_file)
            self._state = self._engine.reset()
        except UserError:
            raise
        except Exception as error:  # the user's JSON or PDDL: fast-downward's parse errors share no base class
            if not isinstance(task, (str, os.PathLike)):
                raise  # a generated game that fails is reflectrl's bug: its traceback stays
            raise UserError(f"ALFWorld task {str(task)!r} cannot be played: {type(error).__name__}: {error}") from error
        return game_file

    # --------------------------------------------------------------- episode

    def reset(self, task: Task | None = None, seed: int | None = None) -> Observation:
        """Start ``task``; without one, draw a train task with ``seed`` (deterministic)."""
        if task is None:
            where = ("" if self.generator is not None
                     else f" among the trial folders ({TRAJ_DATA_FILE}) under {self.data_root}")
            task = self.draw_train_task(seed, self._rng, f"none matches {self.task_type} {self.object_type} -> "
                                                         f"{self.receptacle_type}{where}")
        game_file = self._load_game(task)
        plan = list(self._state["extra.expert_plan"])
        if game_file.is_relative_to(self.cache_dir) and game_file not in self._checked:
            if json.loads(game_file.read_text()).get("solvable") is None:
                record_plan(game_file, plan)
            self._checked.add(game_file)
        if not plan and not self._state["won"]:
            raise RuntimeError(f"the planner finds no plan for ALFWorld task {task!r} ({game_file})")
        self.task = task
        self._traj_data = json.loads((game_file.parent / TRAJ_DATA_FILE).read_text())
        self._intro = self._state.feedback.replace(BANNER, "").strip()
        self._history = []
        self._steps = 0
        self._done = False
        self._last = {}
        self._obs = self._make_observation()
        return self._obs

    def step(self, action_index: int) -> StepResult:
        """Play the command at ``action_index`` through the engine."""
        self._require_running()
        self.check_action(action_index)
        command = self.observation.actions[action_index]
        expert = self._next_expert_command()
        self._state, score, _ = self._engine.step(command)
        feedback = self._state.feedback.strip()
        won = bool(self._state["won"])
        return self._advance(command, feedback, float(score), won, expert, invalid=False)

    def invalid_step(self, reply: str) -> StepResult:
        """A reply naming no action: the engine's ``Nothing happens.``, a step spent, the episode goes on."""
        self._require_running()
        shown = " ".join(str(reply).split())[:60] or "(empty reply)"
        return self._advance(shown, NOTHING_HAPPENS, self.invalid_penalty, False, self._next_expert_command(), invalid=True)

    def _advance(self, command: str, feedback: str, reward: float, won: bool, expert: str | None, invalid: bool) -> StepResult:
        self._steps += 1
        self._history.append((command, feedback))
        self._last = {"command": command, "feedback": feedback, "expert_command": expert, "invalid": invalid}
        terminated = won
        truncated = not won and self._steps >= self.max_steps
        info: dict[str, Any] = {"command": command, "feedback": feedback, "won": won, "invalid": invalid}
        if invalid:
            info["reply"] = command
        if terminated or truncated:
            info["success"] = won
            self._done = True
        self._obs = self._make_observation()
        return self._obs, reward, terminated, truncated, info

    def failure_kind(self, episode: dict[str, Any]) -> str:
        """``repeated loop`` (the horizon came while the agent went round a few commands) or ``horizon``."""
        if episode["end"] == "truncated":
            recent = [step["action_text"] for step in episode["transcript"][-LOOP_WINDOW:]]
            if len(recent) == LOOP_WINDOW and len(set(recent)) <= LOOP_WINDOW // 2:
                return "repeated loop"
        return super().failure_kind(episode)

    def reflection_action(self, reflection: str, actions: list[str]) -> int | None:
        """The command the reflection's last decision names ("Now I will take a look at the drawer 1." names
        ``go to drawer 1``): the listed command of the decision's verb on the objects it names, in their
        order; one that leaves a name out ("pick up the tomato 1") counts where a single command fits."""
        decisions = _DECISION.findall(reflection or "")
        if not decisions:
            return None
        words = decisions[-1]
        verb = next((verb for starts, verb in _DECISION_VERBS if words.startswith(starts)), None)
        named = _ENTITY.findall(words)
        if verb is None or not named:
            return None
        entities = [_ENTITY.findall(action) for action in actions]
        fitting = [index for index, action in enumerate(actions)
                   if action.split(" ", 1)[0] == verb and entities[index][:len(named)] == named]
        exact = [index for index in fitting if len(entities[index]) == len(named)]
        if len(exact) == 1:
            return exact[0]
        return fitting[0] if len(fitting) == 1 else None

    def oracle_action(self) -> int:
        """Index of the expert's next command in the current action list."""
        self._require_running()
        command = self._next_expert_command()
        actions = self.observation.actions
        if command is None or command not in actions:
            raise RuntimeError(f"ALFWorld: the {self.expert} expert's next command {command!r} is not among the admissible commands")
        return actions.index(command)

    def _next_expert_command(self, scene: _Scene | None = None) -> str | None:
        """``scene``: the current state's, when the caller has already built it."""
        if self._state is None:
            return None
        if self.expert == "search":
            search = self._search_command(scene or _Scene(self._state["facts"]))
            if search is not None:
                return search
        plan = self._state["extra.expert_plan"]
        return plan[0] if plan else None

    def _target_type(self) -> str:
        return self._traj_data.get("pddl_params", {}).get("object_target", "").lower()

    def _target_seen(self, scene: _Scene) -> bool:
        """Whether any object of the target's type has been named in what the agent has read, or is in hand."""
        kind = self._target_type()
        if scene.held is not None and scene.object_type.get(scene.held) == kind:
            return True
        pattern = re.compile(rf"\b{re.escape(kind)} \d+\b")
        return any(pattern.search(text) for text in [self._intro] + [feedback for _, feedback in self._history])

    def _search_order(self, scene: _Scene) -> list[str]:
        """Where to look for the target: its usual places, then the rest; surfaces before closed receptacles."""
        kind = self._target_type()
        goal_type = self._traj_data.get("pddl_params", {}).get("parent_target", "").lower()
        usual = _TYPICAL_BY_NAME.get(kind, set())
        places = [r for r, t in scene.receptacle_type.items() if t != goal_type]
        return sorted(places, key=lambda r: (scene.receptacle_type[r] not in usual, r in scene.openable, _natural_key(r)))

    def _searched(self, scene: _Scene) -> list[str]:
        """Places whose contents the agent has seen: visited, and opened if they open (in search order)."""
        commands = [command for command, feedback in self._history if feedback != NOTHING_HAPPENS]
        visited = {command[len("go to "):] for command in commands if command.startswith("go to ")}
        opened = {command[len("open "):] for command in commands if command.startswith("open ")}
        return [
            place for place in self._search_order(scene)
            if place in visited and (place not in scene.openable or place in opened)
        ]

    def _search_command(self, scene: _Scene) -> str | None:
        """The search expert's next move while no target has been seen; None once one has (the planner takes over)."""
        if self._target_seen(scene):
            return None
        searched = set(self._searched(scene))
        for place in self._search_order(scene):
            if place not in searched:
                return f"open {place}" if place == scene.agent_at else f"go to {place}"
        return None

    # ------------------------------------------------------------ observation

    def _state_text(self) -> str:
        parts = [self._intro]
        if self._history:
            lines = ["Previous steps:"]
            older = len(self._history) - self.history_window
            for number, (command, feedback) in enumerate(self._history, start=1):
                lines.append(f"Step {number}. Action: {command}")
                if number > older:
                    lines.append(f"Observation: {feedback}")
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"

    def _make_observation(self) -> Observation:
        actions = list(self._state["admissible_commands"])
        info = {
            "task": self.task,
            "task_type": self._traj_data.get("task_type"),
            "step": self._steps,
            "steps_left": self.max_steps - self._steps,
            "oracle": self._oracle_info(),
        }
        return Observation(self._state_text(), actions, info)

    def _oracle_info(self) -> dict[str, Any]:
        """Privileged facts from the engine's state and the planner, for the oracle teacher."""
        scene = _Scene(self._state["facts"])
        params = self._traj_data.get("pddl_params", {})
        target_type = self._target_type()
        goal_type = params.get("parent_target", "").lower()
        plan = list(self._state["extra.expert_plan"])

        targets = sorted((o for o, t in scene.object_type.items() if t == target_type), key=_natural_key)
        target = scene.held if scene.held in targets else None
        goal = None
        for command in plan:
            took = re.fullmatch(r"take (.+) from (.+)", command)
            if target is None and took and took.group(1) in targets:
                target = took.group(1)
            moved = re.fullmatch(r"move (.+) to (.+)", command)
            if moved and scene.receptacle_type.get(moved.group(2)) == goal_type:
                goal = moved.group(2)
        if target is None and targets:
            target = next((o for o in targets if scene.where(o) != "unknown"), targets[0])
        goals = sorted((r for r, t in scene.receptacle_type.items() if t == goal_type), key=_natural_key)
        goal = goal or (goals[0] if goals else None)

        if self.expert == "search":
            target_seen = self._target_seen(scene)
        else:
            seen_texts = [self._intro] + [feedback for _, feedback in self._history]
            target_seen = target is not None and any(
                re.search(rf"\b{re.escape(target)}\b", text) for text in seen_texts
            )
        usual = _TYPICAL_BY_NAME.get(target_type, ())
        likely = [r for r in self._search_order(scene) if scene.receptacle_type[r] in usual]
        treatment = None
        needs = TASK_TREATMENTS.get(self._traj_data.get("task_type", ""))
        if needs is not None:
            word, predicate = _TREATMENT_STATE[needs[0]]
            appliance_type = needs[1].lower()
            appliances = sorted((r for r, t in scene.receptacle_type.items() if t == appliance_type), key=_natural_key)
            treatment = {
                "state": word,
                "appliance": appliances[0] if appliances else None,
                "done": target is not None and target in scene.flags.get(predicate, set()),
            }
        container = scene.in_receptacle.get(target) if target else None
        relevant = [r for r in (container, goal, treatment and treatment["appliance"]) if r]
        return {
            "goal": self._intro.rpartition("Your task is to:")[2].strip().rstrip("."),
            "target_type": target_type,
            "goal_receptacle_type": goal_type,
            "target_object": target,
            "target_location": scene.where(target) if target else "unknown",
            "target_locations": {o: scene.where(o) for o in targets},
            "target_seen": target_seen,
            "likely_places": likely,
            "goal_receptacle": goal,
            "goal_receptacles": goals,
            "holding": scene.held,
            "agent_at": scene.agent_at,
            "receptacle_states": {r: ("open" if r in scene.opened else "closed") for r in relevant if r in scene.openable},
            "treatment": treatment,
            "next_command": self._next_expert_command(scene),
            "plan": plan,
            "expert": self.expert,
            "searched": self._searched(scene),
            "last_command": self._last.get("command"),
            "last_feedback": self._last.get("feedback"),
            "last_expert_command": self._last.get("expert_command"),
            "last_invalid": self._last.get("invalid", False),
            "won": bool(self._state["won"]),
        }


class _Scene:
    """The engine's facts (demangled names) sorted into lookups."""

    def __init__(self, facts: list[Any]) -> None:
        self.receptacle_type: dict[str, str] = {}
        self.object_type: dict[str, str] = {}
        self.in_receptacle: dict[str, str] = {}
        self.held: str | None = None
        self.openable: set[str] = set()
        self.opened: set[str] = set()
        self.flags: dict[str, set[str]] = {}
        agent_location = None
        at_location: dict[str, list[str]] = {}
        for fact in facts:
            args = [variable.name.strip() for variable in fact.arguments]
            name = fact.name
            if name == "receptacletype":
                self.receptacle_type[args[0]] = _type_name(args[1])
            elif name == "objecttype":
                self.object_type[args[0]] = _type_name(args[1])
            elif name == "inreceptacle":
                self.in_receptacle[args[0]] = args[1]
            elif name == "holds":
                self.held = args[1]
            elif name == "atlocation":
                agent_location = args[1]
            elif name == "receptacleatlocation":
                at_location.setdefault(args[1], []).append(args[0])
            elif name == "openable":
                self.openable.add(args[0])
            elif name == "opened":
                self.opened.add(args[0])
            elif len(args) == 1:
                self.flags.setdefault(name, set()).add(args[0])
        here = sorted(at_location.get(agent_location, []), key=_natural_key)
        self.agent_at: str | None = here[0] if here else None

    def where(self, obj: str) -> str:
        """A receptacle name, ``held``, or ``unknown``."""
        if obj == self.held:
            return "held"
        return self.in_receptacle.get(obj, "unknown")

