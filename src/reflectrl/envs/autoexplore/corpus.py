"""The default AutoExplore corpus: real repositories already on this machine, zero downloads.

Two sources, both read-only, both what a clean ``make install`` gives:

* standard-library packages (found via ``sysconfig.get_paths()["stdlib"]``):
  shallow trees, targets at depth 0-1 (``unittest`` and ``tkinter`` reach 2);
  their files are fixed by the Python version;
* pure-Python packages of reflectrl's own dependency tree in the running
  environment's site-packages: deeper layouts with targets at depth 2 and 3
  (accelerate, peft, gymnasium, huggingface_hub, grpc, and subtrees of torch,
  transformers, tensorboard, networkx and matplotlib) and shallow ones (jinja2,
  packaging, werkzeug, absl, dateutil, tqdm, yaml, markdown). Huge packages are
  restricted to a few subtrees (``include``) and to ``max_depth`` so that the
  snapshot stays small and no directory offers more than about 80 actions
  (a policy prompt lists them all).

Each repository is recorded with its version (``importlib.metadata`` for
packages, the Python version for the standard library). The split is fixed per
repository (``DEFAULT_CORPUS``), so evaluation is on repositories never seen in
training: 27 train, 7 val and 7 test repositories, chosen so that every split
has targets at depths 0 to 3 and the test split, mostly standard-library
packages, holds over 100 tasks of depth <= 1 (142 on Python 3.11; later
versions moved some packages' own tests out, which leaves fewer). A package that
is not installed, or an ``include`` path that a version lacks, is skipped.

``default_tasks()`` generates the tasks once and caches them as JSONL under
``$REFLECTRL_CACHE`` (default ``~/.cache/reflectrl``), keyed by a fingerprint
of the corpus (roots, versions, options, generator version), so the same
installed versions always give the same tasks. Users point ``build_tasks`` at
any repositories instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from reflectrl.envs.autoexplore.tasks import GENERATOR_VERSION, RepoSpec, Task, build_tasks, read_tasks, write_tasks
from reflectrl.errors import UserError


@dataclass(frozen=True)
class CorpusEntry:
    """One repository of the default corpus: an importable package (or a subtree of it) and its fixed split."""

    package: str
    split: str
    stdlib: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_depth: int | None = None


DEFAULT_CORPUS: tuple[CorpusEntry, ...] = (
    # train: 13 shallow standard-library packages, 7 deeper installed packages, 7 shallow installed ones
    CorpusEntry("email", "train", stdlib=True),
    CorpusEntry("http", "train", stdlib=True),
    CorpusEntry("xml", "train", stdlib=True),
    CorpusEntry("urllib", "train", stdlib=True),
    CorpusEntry("logging", "train", stdlib=True),
    CorpusEntry("importlib", "train", stdlib=True),
    CorpusEntry("asyncio", "train", stdlib=True),
    CorpusEntry("curses", "train", stdlib=True),
    CorpusEntry("re", "train", stdlib=True),
    CorpusEntry("sqlite3", "train", stdlib=True),
    CorpusEntry("tomllib", "train", stdlib=True),
    CorpusEntry("zoneinfo", "train", stdlib=True),
    CorpusEntry("turtledemo", "train", stdlib=True),
    CorpusEntry("gymnasium", "train"),
    CorpusEntry("peft", "train"),
    CorpusEntry("torch", "train", include=("nn", "optim", "utils/data", "fx"), max_depth=3),
    CorpusEntry("transformers", "train", max_depth=3, include=(
        "generation", "pipelines", "data", "cli", "models/bert", "models/gpt2", "models/llama", "models/t5",
        "models/whisper", "models/vit", "models/clip", "configuration_utils.py", "modeling_utils.py",
        "trainer.py", "training_args.py", "tokenization_utils_base.py")),
    CorpusEntry("tensorboard", "train", exclude=("_vendor", "compat/proto"), max_depth=3),
    CorpusEntry("networkx", "train", max_depth=3, include=(
        "algorithms/flow", "algorithms/community", "algorithms/shortest_paths", "algorithms/traversal",
        "classes", "generators", "readwrite")),
    CorpusEntry("matplotlib", "train", include=(
        "mpl-data/sample_data", "tri", "projections", "axes", "testing", "style", "sphinxext",
        "backends/qt_editor", "pyplot.py", "figure.py", "colors.py")),
    CorpusEntry("jinja2", "train"),
    CorpusEntry("packaging", "train"),
    CorpusEntry("werkzeug", "train"),
    CorpusEntry("absl", "train"),
    CorpusEntry("dateutil", "train"),
    CorpusEntry("tqdm", "train"),
    CorpusEntry("yaml", "train"),
    # val
    CorpusEntry("json", "val", stdlib=True),
    CorpusEntry("html", "val", stdlib=True),
    CorpusEntry("xmlrpc", "val", stdlib=True),
    CorpusEntry("dbm", "val", stdlib=True),
    CorpusEntry("huggingface_hub", "val"),
    CorpusEntry("grpc", "val"),
    CorpusEntry("markdown", "val"),
    # test: the standard library first (its files are fixed by the Python version), one installed package
    CorpusEntry("concurrent", "test", stdlib=True),
    CorpusEntry("multiprocessing", "test", stdlib=True),
    CorpusEntry("wsgiref", "test", stdlib=True),
    CorpusEntry("tkinter", "test", stdlib=True),
    CorpusEntry("unittest", "test", stdlib=True),
    CorpusEntry("ctypes", "test", stdlib=True, exclude=("test",)),
    CorpusEntry("accelerate", "test"),
)


def cache_dir() -> Path:
    """Where reflectrl caches generated files: ``$REFLECTRL_CACHE`` or ``~/.cache/reflectrl``."""
    return Path(os.environ.get("REFLECTRL_CACHE") or Path.home() / ".cache" / "reflectrl").expanduser()


def _package_root(entry: CorpusEntry) -> Path | None:
    if entry.stdlib:
        root = Path(sysconfig.get_paths()["stdlib"]) / entry.package
        return root if root.is_dir() else None
    spec = importlib.util.find_spec(entry.package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations and Path(locations[0]).is_dir() else None


@functools.lru_cache(maxsize=1)
def _distributions_of_packages() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _package_version(package: str) -> str:
    for distribution in _distributions_of_packages().get(package, []):
        try:
            return f"{distribution}-{importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def default_repos() -> list[RepoSpec]:
    """The installed repositories of ``DEFAULT_CORPUS`` as ``RepoSpec``s (missing ones skipped)."""
    repos = []
    for entry in DEFAULT_CORPUS:
        root = _package_root(entry)
        if root is None:
            continue
        include = tuple(path for path in entry.include if (root / path).exists())
        if entry.include and not include:
            continue
        version = f"python-{platform.python_version()}" if entry.stdlib else _package_version(entry.package)
        repos.append(RepoSpec(name=entry.package, root=str(root.resolve()), version=version, split=entry.split,
                              include=include, exclude=entry.exclude, max_depth=entry.max_depth))
    return repos


def corpus_fingerprint(repos: list[RepoSpec]) -> str:
    """A short hash of everything the default tasks depend on."""
    payload = json.dumps([GENERATOR_VERSION, [repo.__dict__ for repo in repos]], sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_tasks_path() -> Path:
    """The cache file of the default corpus's tasks for the installed versions."""
    return cache_dir() / "autoexplore" / f"default-tasks-{corpus_fingerprint(default_repos())}.jsonl"


def default_tasks(rebuild: bool = False) -> list[Task]:
    """The default corpus's tasks, generated on first use and then read from the cache."""
    repos = default_repos()
    if not repos:
        raise UserError("no repository of the default AutoExplore corpus was found; pass tasks_path instead")
    path = cache_dir() / "autoexplore" / f"default-tasks-{corpus_fingerprint(repos)}.jsonl"
    if path.is_file() and not rebuild:
        return read_tasks(path)
    tasks = build_tasks(repos)
    try:
        write_tasks(tasks, path)
    except OSError:
        pass
    return tasks
