"""AutoExplore: answer a question about a repository by exploring it and identifying the file.

The paper's benchmark, run on a shared in-memory snapshot of each repository
(``tree.load_tree``): no sandbox copy per episode, no shell, no writes, no
disk read after the snapshot. An episode starts at the repository root. Each
step offers (names as they are: the snapshot holds only names that fit on one
line unambiguously, so the action list has exactly one line per action):

* ``cd ..`` (not at the root), ``cd <dir>`` for each subdirectory,
* ``cat <file>`` for each file not read yet (shows a truncated preview, or a
  Python file's outline with ``cat_view="outline"``),
* ``id <file>`` for each file: the final answer.

Costs follow the paper: every step costs ``1 + 2 * #"Error" + 1 * #"Warning"``
counted in the step's status messages (never in file contents). Messages:

* ``Error: <file> is not the answer.``: identifying a wrong file; it also ends
  the episode as a failure;
* ``Error: invalid command ...``: a reply naming no listed command
  (``invalid_step``); the episode goes on;
* ``Warning: <dir> was already visited ...``: ``cd`` into a directory visited
  earlier in the episode (wandering in circles).

Terminal cost: -15 when a target is identified (success), +15 when a wrong file
is identified or the horizon is reached. The reward is minus the cost.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import os
import posixpath
import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from reflectrl.envs.autoexplore.search import relevance, shared_words, shows_topic
from reflectrl.envs.autoexplore.tasks import SPLITS, Task, read_tasks, split_by_task
from reflectrl.envs.autoexplore.tree import CAT_VIEWS, DirectoryTree, DirListing, display_name
from reflectrl.envs.base import ActionBound, Observation, StepResult, TextEnv
from reflectrl.errors import UserError

STEP_COST = 1.0
ERROR_COST = 2.0
WARNING_COST = 1.0
TERMINAL_COST = 15.0
#: the screen's last heading: what the last command showed follows it (the oracle teacher quotes from there)
RESULT_HEADING = "Execution result of the last command:\n"
#: who ``oracle_action`` follows: the shortest path to a target (privileged), or a search that uses only
#: what the agent sees (``search.py``)
EXPERTS: tuple[str, ...] = ("shortest", "search")
#: how a reflection names the next command, in the oracle teacher's words ("Next, enter src.",
#: "Open setup.py and check its contents.", "So identify thread.py as the answer."): verb, then the
#: name up to the words that close the sentence
_END = r"(?=(?: directory| now| to confirm| and check its contents| before answering| as the answer"\
       r"| as the file that answers the question)?\.?(?:\s|$))"
_NAMED_COMMANDS = (
    (re.compile(r"\b(?:go up one directory|move up to the parent directory|climb back to the parent folder)()",
                re.IGNORECASE), "cd .."),
    (re.compile(r"\b(?:enter|change into the|go down into) (\S+?)" + _END, re.IGNORECASE), "cd {}"),
    (re.compile(r"\b(?:read|open|look inside) (\S+?)" + _END, re.IGNORECASE), "cat {}"),
    (re.compile(r"\b(?:identify|answer with|submit) (\S+?)" + _END, re.IGNORECASE), "id {}"),
)


class SnapshotView(Protocol):
    """What the env reads from a repository; ``DirectoryTree`` is the implementation."""

    name: str

    def list_dir(self, path: str) -> DirListing: ...

    def preview(self, path: str, view: str = "head") -> str: ...

    def is_file(self, path: str) -> bool: ...


def step_cost(messages: Sequence[str]) -> float:
    """The paper's per-step cost: 1 + 2 per "Error" + 1 per "Warning" in the step's messages."""
    return STEP_COST + sum(ERROR_COST * m.count("Error") + WARNING_COST * m.count("Warning") for m in messages)


def last_command(state: str) -> str:
    """The newest command of a state's history ('' before the first): the move that led to this screen,
    for code that reads saved states (a data set's rows, a transcript's steps) rather than a live episode."""
    history = state.split("Command history:\n", 1)[1].split("\n" + RESULT_HEADING, 1)[0].splitlines()
    return "" if not history or history[0] == "(none)" else history[-1]


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _is_within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it ("" is the root)."""
    return not directory or path == directory or path.startswith(directory + "/")


def _toward(cwd: str, directory: str) -> str | None:
    """The next ``cd`` of the shortest walk from ``cwd`` to ``directory``; None when already there."""
    if not _is_within(directory, cwd):
        return "cd .."
    if directory == cwd:
        return None
    child = directory[len(cwd) + 1:] if cwd else directory
    return f"cd {child.split('/')[0]}"


@functools.lru_cache(maxsize=None)
def _widest_directory(tree: DirectoryTree) -> tuple[int, str]:
    """(the most commands a directory of ``tree`` lists, that directory): ``cd ..`` below the root, a ``cd``
    per subdirectory, a ``cat`` and an ``id`` per file, as a step lists them before any file there is read."""
    def commands(path: str) -> int:
        listing = tree.list_dir(path)
        return bool(path) + len(listing.dirs) + 2 * len(listing.files)

    widest = max(tree.dirs(), key=commands)
    return commands(widest), widest


@dataclass
class _Episode:
    task: Task
    tree: SnapshotView
    seed: int
    keep: frozenset[str]
    cwd: str = ""
    steps: int = 0
    done: bool = False
    success: bool = False
    read: set[str] = field(default_factory=set)
    visited: set[str] = field(default_factory=lambda: {""})
    history: list[str] = field(default_factory=list)
    last_read: str | None = None
    listings: dict[str, DirListing] = field(default_factory=dict)
    moves: list[tuple[str, str]] = field(default_factory=list)
    showed: set[str] = field(default_factory=set)


class AutoExplore(TextEnv):
    """The AutoExplore env (see the module docstring).

    ``tasks_path``: a JSONL task file (``tasks.write_tasks``); ``tasks``: task
    objects directly; neither: the default corpus (``corpus.default_tasks``,
    cached on disk). ``hide_unrelated_prob``: each file or directory off the
    targets' paths is left out of the episode with this probability, decided by
    the reset seed (the paper trains with 0.5). ``max_depth``: only tasks whose
    target depth is at most this (curriculum levels). ``split``: where
    ``reset(task=None)`` draws tasks from. ``split_by``: ``"repository"`` (the
    default, stricter: test questions are about repositories never seen in
    training) or ``"task"`` (the authors' 7:2:1 over tasks, repositories shared).
    ``cat_view``: what ``cat`` shows of a file: ``"head"`` (its first lines) or
    ``"outline"`` (a Python file's public definitions and their docstrings' first
    sentences, where code questions find their evidence; other files show their
    first lines). ``expert``: whose move ``oracle_action`` returns (the teacher's
    and the oracle baseline's): ``"shortest"`` walks straight to the target,
    which nothing on screen justifies; ``"search"`` reads the unread entries whose
    names share the most words with the question and identifies a file once
    reading it showed the question's passage (a code docstring's sentence, a
    document's heading; a table's columns and a configuration's keys are judged
    by the env), so every move follows from what has been seen. It can run out
    of steps; the shortest path never does.
    """

    name = "autoexplore"

    def __init__(
        self,
        tasks_path: str | os.PathLike[str] | None = None,
        max_steps: int = 15,
        hide_unrelated_prob: float = 0.0,
        max_depth: int | None = None,
        split: str = "train",
        tasks: Sequence[Task] | None = None,
        split_by: str = "repository",
        cat_view: str = "head",
        expert: str = "shortest",
    ) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"autoexplore: max_steps must be a positive int, got {max_steps!r}")
        if not 0.0 <= hide_unrelated_prob < 1.0:
            raise ValueError(f"autoexplore: hide_unrelated_prob must be in [0, 1), got {hide_unrelated_prob!r}")
        if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0):
            raise ValueError(f"autoexplore: max_depth must be None or an int >= 0, got {max_depth!r}")
        if split not in SPLITS:
            raise ValueError(f"autoexplore: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if split_by not in ("repository", "task"):
            raise ValueError(f"autoexplore: split_by must be 'repository' or 'task', got {split_by!r}")
        if cat_view not in CAT_VIEWS:
            raise ValueError(f"autoexplore: cat_view must be one of {', '.join(CAT_VIEWS)}, got {cat_view!r}")
        if expert not in EXPERTS:
            raise ValueError(f"autoexplore: expert must be one of {', '.join(EXPERTS)}, got {expert!r}")
        if tasks_path is not None and tasks is not None:
            raise ValueError("autoexplore: pass tasks_path or tasks, not both")
        if tasks is not None:
            if isinstance(tasks, (str, os.PathLike)) or not all(isinstance(task, Task) for task in tasks):
                raise ValueError(f"autoexplore: tasks takes Task objects (got {tasks!r}); a task file is tasks_path")
            all_tasks = list(tasks)
        elif tasks_path is not None:
            all_tasks = read_tasks(tasks_path)
        else:
            from reflectrl.envs.autoexplore.corpus import default_tasks

            all_tasks = default_tasks()
        self.max_steps = max_steps
        self.hide_unrelated_prob = float(hide_unrelated_prob)
        self.max_depth = max_depth
        self.split = split
        self.split_by = split_by
        self.cat_view = cat_view
        self.expert = expert
        self._all_tasks = all_tasks
        self._by_id = {task.task_id: task for task in all_tasks}
        if len(self._by_id) != len(all_tasks):
            raise ValueError("autoexplore: task ids must be unique")
        self._episode: _Episode | None = None
        self._obs: Observation | None = None

    def tasks(self, split: str) -> list[Task]:
        """The tasks of ``split`` (within ``max_depth`` when set), in file order."""
        if split not in SPLITS:
            raise ValueError(f"autoexplore: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [t for t in self._all_tasks
                if (t.split if self.split_by == "repository" else split_by_task(t)) == split
                and (self.max_depth is None or t.depth <= self.max_depth)]

    def action_bound(self) -> ActionBound | None:
        """The most actions one step lists over this env's tasks (every split, within ``max_depth``), and where.

        Any directory of a task's snapshot can be reached whatever the target's depth; hiding unrelated
        entries only shortens a list. None when no task is within ``max_depth``.
        """
        snapshots = {(t.root, t.include, t.exclude, t.tree_max_depth): t for t in self._all_tasks
                     if self.max_depth is None or t.depth <= self.max_depth}
        widest: ActionBound | None = None
        for task in snapshots.values():
            tree = task.tree()
            count, path = _widest_directory(tree)
            if widest is None or count > widest.count:
                widest = ActionBound(count, f"the directory {display_name(str(tree.root / path))}")
        return widest

    @property
    def task(self) -> Task:
        """The current episode's task."""
        return self._current().task

    def reset(self, task: Task | str | Mapping[str, Any] | None = None, seed: int | None = None) -> Observation:
        """Start at the root of ``task`` (a Task, a task id, or its JSON dict; None: drawn from ``split`` with ``seed``).

        ``seed`` also decides which unrelated files are hidden (the same for a
        drawn or a given task); with a given task and seed the episode is fully
        reproducible. ``seed=None`` draws a fresh seed.
        """
        episode_seed = random.randrange(2**63) if seed is None else seed
        if task is None:
            pool = self.tasks(self.split)
            if not pool:
                raise UserError(f"autoexplore: split {self.split!r} has no task (max_depth={self.max_depth}); "
                                f"tasks by split: {', '.join(f'{name} {len(self.tasks(name))}' for name in SPLITS)}")
            task = random.Random(episode_seed).choice(pool)
        elif isinstance(task, str):
            if task not in self._by_id:
                raise KeyError(f"autoexplore: unknown task id {task!r}")
            task = self._by_id[task]
        elif isinstance(task, Mapping):
            task = Task.from_json(dict(task))
        elif not isinstance(task, Task):
            raise TypeError(f"autoexplore: a task is a Task, a task id or a task dict, got {type(task).__name__}")
        tree = self._tree_for(task)
        missing = [target for target in task.targets if not tree.is_file(target)]
        if missing:
            raise UserError(f"autoexplore: task {task.task_id!r}: target(s) {missing} are not files of the "
                             f"snapshot of {task.root}")
        keep = set(task.targets)
        for target in task.targets:
            parent = posixpath.dirname(target)
            while parent:
                keep.add(parent)
                parent = posixpath.dirname(parent)
        self._episode = _Episode(task=task, tree=tree, seed=episode_seed, keep=frozenset(keep))
        self._obs = self._observe("You are at the root of the repository.")
        return self._obs

    def step(self, action_index: int) -> StepResult:
        episode = self._running()
        self.check_action(action_index)
        verb, path = episode.moves[operator.index(action_index)]
        command = self.observation.actions[operator.index(action_index)]
        messages: list[str] = []
        success = False
        ended = False
        if verb == "cd":
            episode.cwd = path
            messages.append(f"Changed directory to {self._display(path)}.")
            if path in episode.visited:
                messages.append(f"Warning: {self._display(path)} was already visited in this episode.")
            episode.visited.add(path)
            result = " ".join(messages)
        elif verb == "cat":
            episode.read.add(path)
            episode.last_read = path
            result = episode.tree.preview(path, self.cat_view)
            if self._shows_answer(episode, path, result):
                episode.showed.add(path)
        else:
            ended = True
            success = path in episode.task.targets
            name = posixpath.basename(path)
            messages.append(f"Correct: {name} answers the question." if success
                            else f"Error: {name} is not the answer.")
            result = messages[-1]
        episode.history.append(command)
        return self._finish(messages, result, terminated=ended, success=success)

    def invalid_step(self, reply: str) -> StepResult:
        """A reply naming no listed command: an "Error" step (cost 3); the episode goes on."""
        episode = self._running()
        first_line = (reply or "").strip().splitlines()[0][:60] if (reply or "").strip() else ""
        message = f"Error: invalid command {first_line!r}; reply with one of the listed commands."
        episode.history.append(f"{first_line or '(empty reply)'} (invalid)")
        return self._finish([message], message, terminated=False, success=False, invalid=True)

    def reflection_action(self, reflection: str, actions: list[str]) -> int | None:
        """The command the reflection's last decision names ("So identify thread.py as the answer.": ``id thread.py``);
        in a reflection without such a decision, the command it quotes last (``cat thread.py``)."""
        decisions = [(match.start(), command.format(match.group(1)))
                     for pattern, command in _NAMED_COMMANDS for match in pattern.finditer(reflection or "")]
        if not decisions:
            return super().reflection_action(reflection, actions)
        command = max(decisions)[1]
        return actions.index(command) if command in actions else None

    def failure_kind(self, episode: dict[str, Any]) -> str:
        """``wrong id`` (identified a file that does not answer) or ``horizon``."""
        if episode["end"] == "terminated" and episode["transcript"] and \
                episode["transcript"][-1]["action_text"].startswith("id "):
            return "wrong id"
        return super().failure_kind(episode)

    def oracle_action(self) -> int:
        """The expert's next move: with ``"shortest"``, up out of a wrong branch, down to the target's
        directory, cat, id; with ``"search"``, see the class docstring."""
        self._running()
        return self.observation.actions.index(self._expert_move()["command"])

    def good_actions(self) -> list[int]:
        """The expert's move and, for the search expert, every candidate it ranks level with it
        (two unread files sharing no word with the question are equally worth reading)."""
        self._running()
        move = self._expert_move()
        actions = self.observation.actions
        return sorted({actions.index(move["command"])} | {actions.index(c) for c in move.get("tied", ())})

    def plausibility(self) -> list[float]:
        """How well each command's file or directory name matches the question (``cd ..``: 0): what a
        reader of names alone goes by, as a policy does before it has read a file."""
        topic = self._running().task.topic
        return [0.0 if command == "cd .." else relevance(command.split(" ", 1)[1], topic)
                for command in self.observation.actions]

    def _tree_for(self, task: Task) -> SnapshotView:
        """The snapshot an episode of ``task`` explores (the shared in-memory tree)."""
        return task.tree(outlines=self.cat_view == "outline")

    def _current(self) -> _Episode:
        if self._episode is None:
            raise RuntimeError("autoexplore: call reset() before using the env")
        return self._episode

    def _running(self) -> _Episode:
        episode = self._current()
        if episode.done:
            raise RuntimeError("autoexplore: the episode is over; call reset() to start another")
        return episode

    def _finish(self, messages: list[str], result: str, terminated: bool, success: bool,
                invalid: bool = False) -> StepResult:
        episode = self._current()
        episode.steps += 1
        cost = step_cost(messages)
        truncated = not terminated and episode.steps >= self.max_steps
        if terminated or truncated:
            cost += -TERMINAL_COST if success else TERMINAL_COST
            episode.done = True
            episode.success = success
        if truncated:
            result += "\nOut of steps: the episode is over."
        info: dict[str, Any] = {"task_id": episode.task.task_id, "cost": cost, "messages": list(messages),
                                "invalid": invalid, "steps": episode.steps}
        if episode.done:
            info["success"] = success
        self._obs = self._observe(result)
        return self._obs, -cost, terminated, truncated, info

    def _display(self, path: str) -> str:
        root = self._current().tree.name
        return f"{root}/{path}" if path else root

    def _visible(self, episode: _Episode, path: str) -> bool:
        if self.hide_unrelated_prob == 0.0 or path in episode.keep:
            return True
        digest = hashlib.blake2b(f"{episode.seed}/{path}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 >= self.hide_unrelated_prob

    def _listing(self, episode: _Episode, directory: str) -> DirListing:
        """The directory's entries as this episode shows them (unrelated ones possibly hidden)."""
        listing = episode.listings.get(directory)
        if listing is None:
            full = episode.tree.list_dir(directory)
            if self.hide_unrelated_prob:
                full = DirListing(
                    tuple(d for d in full.dirs if self._visible(episode, _join(directory, d))),
                    tuple(f for f in full.files if self._visible(episode, _join(directory, f))),
                )
            listing = episode.listings[directory] = full
        return listing

    def _nearest_target(self, episode: _Episode) -> str:
        """The target with the fewest remaining steps from here (ties: shallowest, then by name)."""
        here = episode.cwd.split("/") if episode.cwd else []

        def remaining(target: str) -> tuple[int, int, str]:
            parts = target.split("/")[:-1]
            common = 0
            while common < min(len(here), len(parts)) and here[common] == parts[common]:
                common += 1
            steps = (len(here) - common) + (len(parts) - common) + (target not in episode.read) + 1
            return steps, len(parts), target

        return min(episode.task.targets, key=remaining)

    def _oracle_plan(self, episode: _Episode) -> tuple[str, str, str]:
        """``(target, next command text, reason)`` of the oracle from the current state."""
        target = self._nearest_target(episode)
        answer_dir = posixpath.dirname(target)
        name = posixpath.basename(target)
        where = self._display(answer_dir)
        move = _toward(episode.cwd, answer_dir)
        if move == "cd ..":
            return target, move, f"the answer is in {where}, which is not below {self._display(episode.cwd)}"
        if move is not None:
            return target, move, f"the answer is in {where}, reached through {move[3:]}"
        if target not in episode.read:
            return target, f"cat {name}", f"{name} in this directory answers the question; reading it confirms that"
        return target, f"id {name}", f"{name} has been read and answers the question"

    def _observe(self, result: str) -> Observation:
        episode = self._current()
        listing = self._listing(episode, episode.cwd)
        entries = [f"{d}/" for d in listing.dirs] + list(listing.files)
        history = "\n".join(episode.history) if episode.history else "(none)"
        text = (
            f"Task: {episode.task.question}\n"
            f"Current working directory: {self._display(episode.cwd)}\n"
            f"Files under it:\n{chr(10).join(entries) if entries else '(empty)'}\n"
            f"Command history:\n{history}\n"
            f"{RESULT_HEADING}{result}"
        )
        commands: list[tuple[str, tuple[str, str]]] = []
        if not episode.done:
            if episode.cwd:
                commands.append(("cd ..", ("cd", posixpath.dirname(episode.cwd))))
            commands += [(f"cd {d}", ("cd", _join(episode.cwd, d))) for d in listing.dirs]
            commands += [(f"cat {f}", ("cat", _join(episode.cwd, f))) for f in listing.files
                         if _join(episode.cwd, f) not in episode.read]
            commands += [(f"id {f}", ("id", _join(episode.cwd, f))) for f in listing.files]
        episode.moves = [move for _, move in commands]
        actions = [command for command, _ in commands]
        return Observation(text=text, actions=actions, info={
            "task_id": episode.task.task_id, "depth": episode.task.depth, "oracle": self._oracle_facts(episode),
        })

    def _shows_answer(self, episode: _Episode, path: str, shown: str) -> bool:
        """Whether reading ``path`` showed that it answers: the question's passage on screen (code,
        documents); for tables and configurations, whether it is a target."""
        task = episode.task
        if task.kind == "code" or task.kind == "text" and not task.topic.startswith("a configuration"):
            return shows_topic(shown, task.topic)
        return task.kind != "name" and path in task.targets

    def _expert_move(self) -> dict[str, Any]:
        """The expert's next command and why, as the current observation's facts hold it
        (``{"command", "reason", ...}``, see ``_search_move``): worked out once per step."""
        return self.observation.info["oracle"]["move"]

    def _search_move(self, episode: _Episode) -> dict[str, Any] | None:
        """The search expert's move, or None when nothing is left to search (the shortest path takes over).

        ``reason``: ``found`` (a file read showed the answer: go to it and identify it), ``named``
        (the file the question names is listed here), ``read`` / ``enter`` (the best unread file or
        unvisited directory here; ``shared``: the words its name shares with the question, ``tied``:
        the commands ranked level with it), ``back`` (nothing here is left: go up).
        """
        task = episode.task
        here = self._listing(episode, episode.cwd)
        if episode.showed:
            found = min(episode.showed, key=lambda p: (not _is_within(posixpath.dirname(p), episode.cwd), p))
            command = _toward(episode.cwd, posixpath.dirname(found)) or f"id {posixpath.basename(found)}"
            return {"command": command, "reason": "found", "file": found,
                    "where": self._display(posixpath.dirname(found))}
        subdirs = [f"cd {d}" for d in here.dirs if _join(episode.cwd, d) not in episode.visited]
        if task.kind == "name":
            named = posixpath.basename(task.targets[0])
            if named in here.files:
                return {"command": f"id {named}", "reason": "named", "file": named}
            if subdirs:
                return {"command": subdirs[0], "reason": "enter", "shared": [], "tied": subdirs[1:]}
        else:
            reads = [f"cat {f}" for f in here.files if _join(episode.cwd, f) not in episode.read]
            candidates = reads + subdirs
            if candidates:
                rank = {c: (relevance(c.split(" ", 1)[1], task.topic), c.startswith("cat ")) for c in candidates}
                best = max(candidates, key=lambda c: (rank[c], -candidates.index(c)))
                whole, partial = shared_words(best.split(" ", 1)[1], task.topic)
                return {"command": best, "reason": "read" if best.startswith("cat ") else "enter",
                        "shared": whole + partial, "tied": [c for c in candidates if c != best and rank[c] == rank[best]]}
        if episode.cwd:
            return {"command": "cd ..", "reason": "back"}
        return None

    def _oracle_facts(self, episode: _Episode) -> dict[str, Any]:
        """Privileged facts for the oracle teacher (never shown to the policy)."""
        target, next_action, reason = self._oracle_plan(episode)
        answer_dir = posixpath.dirname(target)
        last = episode.history[-1] if episode.history else None
        move = None
        if not episode.done:
            move = self._search_move(episode) if self.expert == "search" else None
            move = move or {"command": next_action, "reason": "shortest", "why": reason}
        return {
            "expert": self.expert,
            "move": move,
            "last_read_shows": None if episode.last_read is None else episode.last_read in episode.showed,
            "question": episode.task.question,
            "topic": episode.task.topic,
            "kind": episode.task.kind,
            "targets": list(episode.task.targets),
            "target": target,
            "target_name": posixpath.basename(target),
            "target_depth": target.count("/"),
            "answer_dir": answer_dir,
            "answer_dir_display": self._display(answer_dir),
            "cwd": episode.cwd,
            "cwd_display": self._display(episode.cwd),
            "on_path": _is_within(answer_dir, episode.cwd),
            "next_action": None if move is None else move["command"],
            "reason": reason,
            "last_action": last,
            "last_read": episode.last_read,
            "last_read_is_target": None if episode.last_read is None else episode.last_read in episode.task.targets,
            "target_read": target in episode.read,
            "steps_left": self.max_steps - episode.steps,
            "done": episode.done,
            "success": episode.success,
        }
