"""Environment speed: episodes per second of a random and an oracle agent on Taxi and AutoExplore.

For AutoExplore the same episodes are also run on the original design's
sandbox: every episode copies the repository into a fresh temporary directory
(``shutil.copytree``) and lists/reads files from that copy on disk. The
baseline copies only the files the snapshot holds (the original copied whole
repositories), so its cost is a lower bound. Both runs must give identical
returns, which checks that they really are the same episodes.

Writes ``benchmarks/results/env_speed.json`` with a top-level
``speedup_vs_copytree`` (copytree time / in-memory time over the same
episodes, both agents together). Run: ``python benchmarks/env_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from reflectrl.envs import make_env
from reflectrl.envs.autoexplore.env import AutoExplore
from reflectrl.envs.autoexplore.tasks import SPLITS, Task
from reflectrl.envs.autoexplore.tree import SKIPPED_DIR_NAMES, SUFFIX_KIND, DirListing, preview_text
from reflectrl.envs.base import TextEnv
from reflectrl.memory import peak_rss_gb

RESULTS = Path(__file__).parent / "results" / "env_speed.json"
Agent = Callable[[TextEnv, random.Random], int]


def random_agent(env: TextEnv, rng: random.Random) -> int:
    return rng.randrange(len(env.observation.actions))


def oracle_agent(env: TextEnv, rng: random.Random) -> int:
    return env.oracle_action()


AGENTS: dict[str, Agent] = {"random": random_agent, "oracle": oracle_agent}


def run_episodes(env: TextEnv, tasks: list[Any], agent: Agent, seed: int) -> tuple[float, int, list[float]]:
    """Play one episode per task; return (seconds, steps, returns)."""
    rng = random.Random(seed)
    steps = 0
    returns = []
    start = time.perf_counter()
    for index, task in enumerate(tasks):
        env.reset(task, seed=seed + index)
        total = 0.0
        while True:
            _, reward, terminated, truncated, _ = env.step(agent(env, rng))
            steps += 1
            total += reward
            if terminated or truncated:
                break
        returns.append(total)
    return time.perf_counter() - start, steps, returns


def rates(seconds: float, episodes: int, steps: int) -> dict[str, float]:
    return {"episodes": episodes, "steps": steps, "seconds": round(seconds, 4),
            "episodes_per_s": round(episodes / seconds, 1), "steps_per_s": round(steps / seconds, 1)}


class CopiedRepository:
    """The original sandbox: a fresh on-disk copy of the repository, listed and read with real file I/O."""

    def __init__(self, task: Task) -> None:
        tree = task.tree()
        self.name = tree.name
        self._tmp = tempfile.mkdtemp(prefix="autoexplore-sandbox-")
        self.root = Path(self._tmp) / tree.name

        def ignore(directory: str, names: list[str]) -> list[str]:
            relative = os.path.relpath(directory, tree.root)
            relative = "" if relative == "." else relative.replace(os.sep, "/")
            return [name for name in names if (f"{relative}/{name}" if relative else name) not in tree]

        shutil.copytree(tree.root, self.root, ignore=ignore, symlinks=True)

    def list_dir(self, path: str) -> DirListing:
        dirs, files = [], []
        for entry in sorted(os.scandir(self.root / path), key=lambda e: e.name):
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode) and entry.name not in SKIPPED_DIR_NAMES:
                dirs.append(entry.name)
            elif stat.S_ISREG(mode) and os.path.splitext(entry.name)[1].lower() in SUFFIX_KIND:
                files.append(entry.name)
        return DirListing(tuple(dirs), tuple(files))

    def preview(self, path: str) -> str:
        return preview_text((self.root / path).read_text(encoding="utf-8"))

    def is_file(self, path: str) -> bool:
        return (self.root / path).is_file()

    def remove(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


class CopytreeAutoExplore(AutoExplore):
    """AutoExplore with the per-episode sandbox copy as the file system (the baseline)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sandbox: CopiedRepository | None = None

    def _tree_for(self, task: Task) -> CopiedRepository:
        self.close()
        self._sandbox = CopiedRepository(task)
        return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.remove()
            self._sandbox = None


def bench_taxi(episodes: int) -> dict[str, Any]:
    env = make_env("taxi")
    tasks = [t for split in ("train", "val", "test") for t in env.tasks(split)]
    tasks = random.Random(0).choices(tasks, k=episodes)
    out = {}
    for name, agent in AGENTS.items():
        seconds, steps, _ = run_episodes(env, tasks, agent, seed=1)
        out[name] = rates(seconds, len(tasks), steps)
    return out


def bench_autoexplore(episodes: int, repeats: int) -> dict[str, Any]:
    start = time.perf_counter()
    env = AutoExplore()
    all_tasks = [t for split in SPLITS for t in env.tasks(split)]
    for root in sorted({t.root for t in all_tasks}):
        next(t for t in all_tasks if t.root == root).tree()
    build_seconds = time.perf_counter() - start
    tasks = random.Random(0).sample(all_tasks, k=min(episodes, len(all_tasks)))
    baseline = CopytreeAutoExplore(tasks=all_tasks)
    memory: dict[str, Any] = {}
    copied: dict[str, Any] = {}
    speedup: dict[str, float] = {}
    total_memory = total_copied = 0.0
    try:
        for name, agent in AGENTS.items():
            seconds = 0.0
            for _ in range(repeats):
                elapsed, steps, returns = run_episodes(env, tasks, agent, seed=1)
                seconds += elapsed
            memory[name] = rates(seconds, len(tasks) * repeats, steps * repeats)
            copy_seconds, copy_steps, copy_returns = run_episodes(baseline, tasks, agent, seed=1)
            if copy_returns != returns or copy_steps != steps:
                raise RuntimeError(f"{name}: the copytree baseline played different episodes")
            copied[name] = rates(copy_seconds, len(tasks), copy_steps)
            per_episode_memory = seconds / repeats
            speedup[name] = round(copy_seconds / per_episode_memory, 1)
            total_memory += per_episode_memory
            total_copied += copy_seconds
    finally:
        baseline.close()
    return {
        "tasks_total": len(all_tasks),
        "episodes": len(tasks),
        "in_memory_repeats": repeats,
        "snapshot_build_s": round(build_seconds, 3),
        "in_memory": memory,
        "copytree": copied,
        "speedup": speedup,
        "speedup_combined": round(total_copied / total_memory, 1),
    }


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxi-episodes", type=int, default=5000)
    parser.add_argument("--autoexplore-episodes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10, help="in-memory repetitions of the same episodes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    autoexplore = bench_autoexplore(args.autoexplore_episodes, args.repeats)
    result = {
        "machine": machine_info(),
        "speedup_vs_copytree": autoexplore["speedup_combined"],
        "speedup_goal": 50,
        "taxi": bench_taxi(args.taxi_episodes),
        "autoexplore": autoexplore,
        "peak_rss_gb": peak_rss_gb(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
