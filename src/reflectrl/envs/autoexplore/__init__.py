"""AutoExplore: find the file of a repository that answers a question, on a read-only in-memory snapshot."""

from reflectrl.envs.autoexplore.corpus import DEFAULT_CORPUS, CorpusEntry, cache_dir, default_repos, default_tasks
from reflectrl.envs.autoexplore.env import AutoExplore, step_cost
from reflectrl.envs.autoexplore.tasks import (
    SPLITS,
    TASK_KINDS,
    RepoSpec,
    Task,
    build_tasks,
    read_tasks,
    task_counts,
    write_tasks,
)
from reflectrl.envs.autoexplore.tree import (
    DirectoryTree,
    DirListing,
    PathOutsideRootError,
    SnapshotChangedError,
    load_tree,
)

__all__ = [
    "DEFAULT_CORPUS",
    "SPLITS",
    "TASK_KINDS",
    "AutoExplore",
    "CorpusEntry",
    "DirListing",
    "DirectoryTree",
    "PathOutsideRootError",
    "RepoSpec",
    "SnapshotChangedError",
    "Task",
    "build_tasks",
    "cache_dir",
    "default_repos",
    "default_tasks",
    "load_tree",
    "read_tasks",
    "step_cost",
    "task_counts",
    "write_tasks",
]
