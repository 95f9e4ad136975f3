"""AutoExplore tasks: a question about a repository and the file(s) that answer it.

The paper had GPT-4 write one question per file. Here questions are derived
deterministically from the files themselves, so any directory tree becomes a
benchmark with no model and no download. Four kinds:

* ``code``: a public top-level class or function (or the module) with a
  docstring -> ``Which file implements the class described as "<first
  sentence>"?`` (parsed with ``ast``, never imported or run);
* ``data``: a ``.csv``/``.tsv`` header -> ``Which file holds the table with
  columns a, b, c?``;
* ``text``: a document's first heading (markdown, reStructuredText, plain text)
  -> ``Which document explains "<heading>"?``; a config file's top-level keys
  (json, yaml, toml, ini, cfg) -> ``Which configuration file defines the keys
  a, b, c?``;
* ``name``: ``Find the file named <name>.`` (the easy kind).

Ambiguity: when several files of a repository yield the same question, every
one of them is a target (identifying any is a success); a question matching
more than ``max_targets`` files is dropped as too vague. Balance: at most
``max_tasks_per_file`` tasks name a file as target, at most
``max_tasks_per_repo`` tasks per repository, picked round-robin over target
depths (and kinds within a depth) so deep targets are not crowded out, with
``name`` tasks limited to ``name_share`` of a repository's tasks. Every choice
is by a stable hash, so the same files always give the same tasks.

Splits are by repository (``RepoSpec.split``, or 7:2:1 by a hash of the
repository name when unset, among the repositories that yield a task), so
evaluation can use repositories never seen in training. With fewer than three
unassigned repositories a by-repository split cannot be 7:2:1, so each of
those repositories' tasks are split 7:2:1 by rank of a hash of the question
(a hash of its own, not the one that selected the questions): from three
tasks on, val and test get at least one each.
"""

from __future__ import annotations

import configparser
import csv
import dataclasses
import hashlib
import json
import os
import re
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from reflectrl.envs.autoexplore.outline import code_definitions, first_sentence
from reflectrl.envs.autoexplore.tree import MAX_PARSE_BYTES, DirectoryTree, display_name, load_tree, normalize_relative
from reflectrl.errors import UserError

TASK_KINDS: tuple[str, ...] = ("code", "data", "text", "name")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, float] = (0.7, 0.2)
#: bump when the question rules change, so cached task files are rebuilt
GENERATOR_VERSION = 4

_DOC_SUFFIXES = (".md", ".rst", ".txt")
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml", ".cfg", ".ini")
_MAX_CODE_CANDIDATES = 4
#: file names too common to make a "Find the file named ..." question
_UNINFORMATIVE_NAMES = frozenset({"__init__.py", "__main__.py"})


@dataclass(frozen=True)
class RepoSpec:
    """A repository to make tasks from: its root and the snapshot options (see ``DirectoryTree``)."""

    name: str
    root: str
    version: str = "unknown"
    split: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_depth: int | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or ":" in self.name:
            raise ValueError(f"repository name {self.name!r} must be non-empty without '/' or ':'")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"repository {self.name!r}: split {self.split!r} is not one of {', '.join(SPLITS)}")
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], name: str | None = None, version: str = "unknown",
                  split: str | None = None) -> RepoSpec:
        """A whole directory as a repository, named after it (escaped to one line) unless ``name`` is given."""
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise NotADirectoryError(f"repository root {str(path)!r} is not a directory")
        return cls(name=name or display_name(root.name), root=str(root), version=version, split=split)

    def tree(self) -> DirectoryTree:
        return load_tree(self.root, self.include, self.exclude, self.max_depth)


@dataclass(frozen=True)
class Task:
    """One AutoExplore task. ``targets`` are paths relative to ``root``; ``depth`` is the shallowest target's.

    ``include``/``exclude``/``tree_max_depth`` are the snapshot options of the
    repository, so the env rebuilds exactly the tree the question was made from.
    ``topic`` is what the question is about, for the oracle teacher.
    """

    task_id: str
    repo: str
    repo_version: str
    root: str
    split: str
    kind: str
    question: str
    topic: str
    targets: tuple[str, ...]
    depth: int
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tree_max_depth: int | None = None

    def __post_init__(self) -> None:
        for name in ("task_id", "repo", "repo_version", "root", "split", "kind", "question", "topic"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"task {self.task_id!r}: field {name!r} must be a string, got "
                                 f"{json.dumps(getattr(self, name), default=repr)[:60]}")
        if self.tree_max_depth is not None and (isinstance(self.tree_max_depth, bool)
                                                or not isinstance(self.tree_max_depth, int) or self.tree_max_depth < 0):
            raise ValueError(f"task {self.task_id!r}: field 'tree_max_depth' must be null or an int >= 0, got "
                             f"{self.tree_max_depth!r}")
        if self.split not in SPLITS:
            raise ValueError(f"task {self.task_id!r}: split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.task_id!r}: kind {self.kind!r} is not one of {', '.join(TASK_KINDS)}")
        targets = tuple(self.targets)
        if not targets:
            raise ValueError(f"task {self.task_id!r} has no target file")
        for target in targets:
            if not normalize_relative(target) or normalize_relative(target) != target:
                raise ValueError(f"task {self.task_id!r}: target {target!r} is not a normalized relative path")
        depth = min(target.count("/") for target in targets)
        if self.depth != depth:
            raise ValueError(f"task {self.task_id!r}: depth {self.depth} does not match its targets (depth {depth})")
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def tree(self, outlines: bool = False) -> DirectoryTree:
        """The shared snapshot this task is asked about (``outlines``: one that keeps Python files' outlines)."""
        if not Path(self.root).is_dir():
            raise UserError(f"task {self.task_id!r}: repository root {self.root!r} does not exist here")
        return load_tree(self.root, self.include, self.exclude, self.tree_max_depth, outlines)

    def to_json(self) -> dict[str, Any]:
        """The task as a JSON-ready dict (tuples as lists)."""
        data = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        if not isinstance(data, dict):
            raise ValueError(f"a task is a JSON object, got {type(data).__name__}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        missing = [name for name, field in fields.items()
                   if name not in data and field.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        for name in ("targets", "include", "exclude"):
            if name in data and not (isinstance(data[name], (list, tuple))
                                     and all(isinstance(v, str) for v in data[name])):
                raise ValueError(f"field {name!r} must be a list of strings")
        if not isinstance(data["depth"], int) or isinstance(data["depth"], bool):
            raise ValueError("field 'depth' must be an int")
        return cls(**{**data, **{name: tuple(data[name]) for name in ("targets", "include", "exclude") if name in data}})


def write_tasks(tasks: Iterable[Task], path: str | os.PathLike[str]) -> None:
    """Write tasks as JSONL (one task a line); the file appears atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(partial, path)


def read_tasks(path: str | os.PathLike[str]) -> list[Task]:
    """Read a JSONL task file; a bad line, or a file with none, raises ``ValueError`` naming the file (and line)."""
    tasks = []
    seen: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file of tasks (one JSON object a line): {error}") from None
    except OSError as error:
        raise ValueError(f"task file {str(path)!r} cannot be read: {error.strerror or error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            task = Task.from_json(json.loads(line))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: line {number}: not a valid AutoExplore task: {error}") from None
        if task.task_id in seen:
            raise ValueError(f"{path}: line {number}: task id {task.task_id!r} already used on line "
                             f"{seen[task.task_id]}")
        seen[task.task_id] = number
        tasks.append(task)
    if not tasks:
        raise ValueError(f"{path}: holds no task (a task file has one JSON object a line)")
    return tasks


def task_counts(tasks: Iterable[Task]) -> dict[str, dict[str, dict[str, int]]]:
    """Task counts per split, by target depth and by kind (for reports and the CLI)."""
    counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: {"depth": Counter(), "kind": Counter()})
    for task in tasks:
        counts[task.split]["depth"][str(task.depth)] += 1
        counts[task.split]["kind"][task.kind] += 1
    return {split: {key: dict(sorted(counter.items())) for key, counter in counts[split].items()}
            for split in SPLITS if split in counts}


def build_tasks(
    repos: Sequence[RepoSpec | str | os.PathLike[str]],
    max_tasks_per_repo: int = 40,
    max_tasks_per_file: int = 2,
    max_targets: int = 3,
    name_share: float = 0.25,
) -> list[Task]:
    """Generate the tasks of every repository (a ``RepoSpec`` or a directory path), deterministically."""
    specs = [repo if isinstance(repo, RepoSpec) else RepoSpec.from_path(repo) for repo in repos]
    if not specs:
        raise ValueError("build_tasks needs at least one repository")
    names = Counter(spec.name for spec in specs)
    duplicated = sorted(name for name, count in names.items() if count > 1)
    if duplicated:
        raise ValueError(f"repository names must be unique; repeated: {', '.join(duplicated)}")
    for name, value in (("max_tasks_per_repo", max_tasks_per_repo), ("max_tasks_per_file", max_tasks_per_file),
                        ("max_targets", max_targets)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not 0.0 <= name_share <= 1.0:
        raise ValueError(f"name_share must be in [0, 1], got {name_share!r}")
    selected: dict[str, tuple[DirectoryTree, list[_Candidate]]] = {}
    for spec in specs:
        tree = spec.tree()
        candidates = [c for c in _candidates(tree) if len(c.targets) <= max_targets]
        selected[spec.name] = tree, _select(spec.name, candidates, max_tasks_per_repo, max_tasks_per_file, name_share)
    splits = _repo_splits([spec for spec in specs if selected[spec.name][1]])
    tasks: list[Task] = []
    for spec in specs:
        tree, chosen = selected[spec.name]
        by_question = {} if splits.get(spec.name) else _question_splits(spec.name, [c.question for c in chosen])
        for candidate in chosen:
            split = splits.get(spec.name) or by_question[candidate.question]
            tasks.append(Task(
                task_id=f"{spec.name}:{hashlib.sha1(candidate.question.encode()).hexdigest()[:10]}",
                repo=spec.name,
                repo_version=spec.version,
                root=str(tree.root),
                split=split,
                kind=candidate.kind,
                question=candidate.question,
                topic=candidate.topic,
                targets=candidate.targets,
                depth=candidate.depth,
                include=tree.include,
                exclude=tree.exclude,
                tree_max_depth=tree.max_depth,
            ))
    return tasks


@dataclass(frozen=True)
class _Candidate:
    kind: str
    question: str
    topic: str
    targets: tuple[str, ...]

    @property
    def depth(self) -> int:
        return min(target.count("/") for target in self.targets)


def _stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def split_by_task(task: "Task") -> str:
    """The authors' split: 7:2:1 by task (a hash of its id), repositories shared across splits."""
    return _split_by_hash(_stable_hash("task-split", task.task_id))


def _split_by_hash(value: int) -> str:
    fraction = value / 2**64
    if fraction < SPLIT_FRACTIONS[0]:
        return "train"
    if fraction < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
        return "val"
    return "test"


def _split_in_order(names: Sequence[str]) -> dict[str, str]:
    """``names`` (in hash order) split 7:2:1 by rank: from three names on, val and test get at least one each."""
    n_val = max(1, round(len(names) * SPLIT_FRACTIONS[1])) if len(names) >= 3 else 0
    n_test = max(1, round(len(names) * (1 - sum(SPLIT_FRACTIONS)))) if len(names) >= 3 else 0
    n_train = len(names) - n_val - n_test
    return {name: "train" if index < n_train else "val" if index < n_train + n_val else "test"
            for index, name in enumerate(names)}


def _repo_splits(specs: Sequence[RepoSpec]) -> dict[str, str | None]:
    """Explicit splits as given; the rest 7:2:1 by repository in hash order (None: split by question)."""
    splits: dict[str, str | None] = {spec.name: spec.split for spec in specs}
    unassigned = sorted((spec.name for spec in specs if spec.split is None), key=lambda n: _stable_hash("split", n))
    if len(unassigned) >= 3:
        splits.update(_split_in_order(unassigned))
    return splits


def _question_splits(repo: str, questions: Sequence[str]) -> dict[str, str]:
    """A repository's questions split 7:2:1 by a hash of its own, so every split gets one from three on.

    Not the hash ``_select`` picks questions by: a repository with more candidates than its quota
    would otherwise have only low hashes chosen, all of them train.
    """
    return _split_in_order(sorted(questions, key=lambda question: _stable_hash("question-split", repo, question)))


def _candidates(tree: DirectoryTree) -> list[_Candidate]:
    """Every question the files of ``tree`` yield, merged so identical questions share their targets.

    Questions about contents merge regardless of case (``"Overview"`` and ``"OVERVIEW"`` ask the same);
    a file name keeps its case: ``Case.py`` and ``case.py`` are different files.
    A question must be one printable line: file contents (a config key, a heading) could
    otherwise forge lines of the observation.
    """
    by_question: dict[str, tuple[str, str, str, list[str]]] = {}
    for path in tree.files():
        for kind, question, topic in _questions_for(tree, path):
            if not question.isprintable():
                continue
            key = question if kind == "name" else question.casefold()
            paths = by_question.setdefault(key, (kind, question, topic, []))[3]
            if path not in paths:
                paths.append(path)
    return [
        _Candidate(kind, question, topic, tuple(sorted(paths, key=lambda p: (p.count("/"), p))))
        for kind, question, topic, paths in by_question.values()
    ]


def _questions_for(tree: DirectoryTree, path: str) -> list[tuple[str, str, str]]:
    name = path.rsplit("/", 1)[-1]
    questions = [] if name in _UNINFORMATIVE_NAMES else [("name", f"Find the file named {name}.",
                                                          f"the file named {name}")]
    entry = tree.file(path)
    if entry.size > MAX_PARSE_BYTES:
        return questions
    suffix = os.path.splitext(name)[1].lower()
    try:
        text = tree.read_text(path)
    except (OSError, ValueError):
        return questions
    if entry.kind == "code":
        questions += [("code", question, topic) for question, topic in _code_questions(text)]
    elif entry.kind == "data":
        columns = _table_columns(text, "\t" if suffix == ".tsv" else None)
        if columns:
            listed = _list_words(columns)
            questions.append(("data", f"Which file holds the table with columns {listed}?",
                              f"a table with the columns {listed}"))
    elif suffix in _DOC_SUFFIXES:
        heading = _document_heading(text, suffix)
        if heading:
            questions.append(("text", f'Which document explains "{heading}"?', heading))
    elif suffix in _CONFIG_SUFFIXES:
        keys, noun = _config_keys(text, suffix)
        if keys:
            listed = _list_words(keys)
            questions.append(("text", f"Which configuration file defines the {noun} {listed}?",
                              f"a configuration with the {noun} {listed}"))
    return questions


def _list_words(items: Sequence[str], shown: int = 5) -> str:
    if len(items) <= shown:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def _code_questions(text: str) -> list[tuple[str, str]]:
    """The first few public classes and functions with a docstring sentence, then the module."""
    definitions = code_definitions(text) or []
    described = [d for d in definitions if d.sentence]
    kept = [d for d in described if d.kind != "module"][: _MAX_CODE_CANDIDATES - 1]
    kept += [d for d in described if d.kind == "module"]
    return [(f'Which file implements the {d.kind} described as "{d.sentence}"?', d.sentence) for d in kept]


def _is_column_name(cell: str) -> bool:
    return 0 < len(cell) <= 40 and any(c.isalpha() for c in cell) and not re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", cell)


def _table_columns(text: str, delimiter: str | None) -> list[str] | None:
    """The header row of a csv/tsv table (comment and blank lines skipped), or None if it has no real header."""
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), None)
    if first is None:
        return None
    if delimiter is None:
        delimiter = max(",;\t", key=first.count)
    row = next(csv.reader([first], delimiter=delimiter))
    columns = [cell.strip() for cell in row]
    if len(columns) < 2 or len(set(columns)) != len(columns) or not all(_is_column_name(c) for c in columns):
        return None
    return columns


_MD_ATX = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+:.<>_])\1{2,}\s*$")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_RST_ROLE = re.compile(r":[a-z:]+:`([^`]*)`")


def _clean_heading(raw: str) -> str | None:
    text = _RST_ROLE.sub(r"\1", _MD_LINK.sub(r"\1", raw))
    text = re.sub(r"[`*_]", "", text)
    text = " ".join(text.split()).strip().rstrip(":.").replace('"', "'")
    words = text.split()
    if not 2 <= len(words) <= 15 or len(text) > 100 or not any(c.isalpha() for c in text):
        return None
    return text


def _document_heading(text: str, suffix: str) -> str | None:
    """The first heading of a document: markdown ATX/setext, reST underlined title, else a plain-text title line."""
    lines = text.splitlines()[:200]
    in_fence = False
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence or not line.strip():
            continue
        if suffix == ".md":
            match = _MD_ATX.match(line)
            if match:
                return _clean_heading(match.group(1))
        if index + 1 < len(lines) and not _UNDERLINE.match(line) and _UNDERLINE.match(lines[index + 1]) \
                and len(lines[index + 1].strip()) >= min(len(line.strip()), 3):
            return _clean_heading(line)
    if suffix == ".txt":
        paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
        if len(paragraph.split()) <= 10:
            return _clean_heading(paragraph)
        sentence = first_sentence(paragraph)
        return _clean_heading(sentence[0].upper() + sentence[1:]) if sentence else None
    return None


def _config_keys(text: str, suffix: str) -> tuple[list[str] | None, str]:
    """Top-level keys of a json/yaml/toml file, or the sections of an ini/cfg file."""
    try:
        if suffix in (".ini", ".cfg"):
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            parser.read_string(text)
            keys: Any = parser.sections()
            noun = "sections"
        else:
            if suffix == ".json":
                data = json.loads(text)
            elif suffix == ".toml":
                data = tomllib.loads(text)
            else:
                data = yaml.safe_load(text)
            keys = list(data) if isinstance(data, dict) else None
            noun = "keys"
    except (ValueError, configparser.Error, yaml.YAMLError, RecursionError):
        return None, ""
    if not keys or len(keys) < 2 or not all(isinstance(k, str) and _is_column_name(k) for k in keys):
        return None, ""
    return keys, noun


_KIND_ORDER = ("data", "text", "code", "name")


def _select(repo: str, candidates: list[_Candidate], quota: int, per_file: int, name_share: float) -> list[_Candidate]:
    """Up to ``quota`` candidates: capped per target file, balanced over depths and kinds (see module docstring)."""
    def key(c: _Candidate) -> int:
        return _stable_hash(repo, c.question)

    per_file_count: Counter[str] = Counter()
    accepted = []
    for candidate in sorted(candidates, key=lambda c: (c.kind == "name", key(c))):
        if all(per_file_count[t] < per_file for t in candidate.targets):
            accepted.append(candidate)
            per_file_count.update(candidate.targets)
    queues: dict[int, list[_Candidate]] = {}
    for depth in sorted({c.depth for c in accepted}):
        by_kind = {kind: sorted((c for c in accepted if c.depth == depth and c.kind == kind), key=key)
                   for kind in _KIND_ORDER}
        interleaved = []
        while any(by_kind.values()):
            for kind in _KIND_ORDER:
                if by_kind[kind]:
                    interleaved.append(by_kind[kind].pop(0))
        queues[depth] = interleaved
    name_quota = int(quota * name_share)
    chosen: list[_Candidate] = []
    names = 0
    while len(chosen) < quota and any(queues.values()):
        for depth in sorted(queues):
            queue = queues[depth]
            while queue and queue[0].kind == "name" and names >= name_quota:
                queue.pop(0)
            if queue and len(chosen) < quota:
                candidate = queue.pop(0)
                names += candidate.kind == "name"
                chosen.append(candidate)
    return chosen
