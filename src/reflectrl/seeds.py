"""``reflectrl run --seeds 0,1,2``: one recipe once per seed, and the spread of its results.

Each seed is a whole run of its own (data, both players' initial weights, RL
sampling and evaluation all drawn from it) in ``runs/<name>/seeds/seed-<s>/``,
resumable like any run. ``summary.json`` then gives, for every arm and level,
the mean, the standard deviation over seeds and the per-seed values, and
``summary.md`` the same as a table: one seed's interval says nothing about how
far another seed lands. Beside it, Reflect-RL against every other arm task by
task in each seed (``eval.paired``), since every arm of a seed plays the same
tasks.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from reflectrl.config import RunConfig
from reflectrl.errors import UserError
from reflectrl.eval.episodes import evaluated_arms, read_episodes
from reflectrl.eval.paired import compare, format_difference
from reflectrl.eval.report import ARM_TITLES
from reflectrl.run_files import write_json_atomic, write_text_atomic

SEEDS_DIR = "seeds"


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """The recipe of one seed of a sweep, in its own run directory under the recipe's."""
    return replace(config, seed=seed, out_dir=str(config.run_dir / SEEDS_DIR), name=f"seed-{seed}")


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "per_seed": [round(value, 4) for value in values]}


def summarize_seeds(results: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per arm, overall and per level: mean, sample standard deviation and per-seed success (eval.json's)."""
    seeds = sorted(results)
    arms: dict[str, Any] = {}
    for arm in results[seeds[0]]:
        per_seed = [results[seed][arm] for seed in seeds]
        levels = [level for level in per_seed[0].get("levels", {}) if all(level in r["levels"] for r in per_seed)]
        arms[arm] = {"success": _spread([r["success"] for r in per_seed]),
                     "levels": {level: _spread([r["levels"][level]["success"] for r in per_seed]) for level in levels}}
    return {"seeds": seeds, "arms": arms}


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown: every arm's mean +- std over seeds, its per-seed values, and each level's mean +- std."""
    arms = summary["arms"]
    levels = list(next(iter(arms.values()))["levels"]) if arms else []

    def cell(spread: dict[str, Any]) -> str:
        return f"{100 * spread['mean']:.0f}% ± {100 * spread['std']:.0f}"

    seeds = ", ".join(str(seed) for seed in summary["seeds"])
    lines = [f"| arm | success, mean ± std | per seed ({seeds}) | " + " | ".join(levels) + " |",
             "|" + "---|" * (3 + len(levels))]
    for arm, values in arms.items():
        per_seed = ", ".join(f"{100 * v:.0f}%" for v in values["success"]["per_seed"])
        lines.append(f"| {ARM_TITLES.get(arm, arm)} | {cell(values['success'])} | {per_seed} | "
                     + " | ".join(cell(values["levels"][level]) for level in levels) + " |")
    return "\n".join(lines)


def paired_by_seed(run_dirs: dict[int, Path], arm: str = "reflect_rl") -> dict[str, dict[str, Any]]:
    """Per other arm, per seed: ``arm`` against it task by task (``eval.paired.compare``), from each seed's
    greedy transcripts; an arm some seed did not evaluate, or whose tasks differ from ``arm``'s, is left out."""
    episodes = {seed: {name: read_episodes(path) for name, path in evaluated_arms(run_dir).items()}
                for seed, run_dir in run_dirs.items()}
    paired: dict[str, dict[str, Any]] = {}
    seeds = sorted(run_dirs)
    others = [name for name in episodes[seeds[0]] if name != arm]
    for other in others:
        try:
            paired[other] = {str(seed): compare(episodes[seed][arm], episodes[seed][other]) for seed in seeds}
        except (KeyError, UserError):
            continue
    return paired


def paired_seeds_table(paired: dict[str, dict[str, Any]], arm: str = "reflect_rl") -> str:
    """Markdown: per other arm, ``arm`` minus it in each seed, with the paired interval and McNemar p."""
    seeds = list(next(iter(paired.values())))
    lines = [f"| {ARM_TITLES.get(arm, arm)} minus | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
             "|" + "---|" * (1 + len(seeds))]
    for other, per_seed in paired.items():
        lines.append(f"| {ARM_TITLES.get(other, other)} | "
                     + " | ".join(f"{format_difference(c)}, p {c['p']:.2g}" for c in per_seed.values()) + " |")
    return "\n".join(lines)


def write_summary(config: RunConfig, results: dict[int, dict[str, dict[str, Any]]], command: str) -> Path:
    """``summary.json`` and ``summary.md`` in ``runs/<name>/seeds/``."""
    out = config.run_dir / SEEDS_DIR
    summary = summarize_seeds(results)
    paired = paired_by_seed({seed: seed_config(config, seed).run_dir for seed in results})
    summary["paired_with_reflect_rl"] = paired
    body = [
        f"# {config.name}: {len(results)} seeds", "",
        f"`{command}`. Greedy success on held-out tasks; std is the sample standard deviation over seeds, "
        "in percentage points. Each seed's run (report, transcripts) is in `seed-<s>/`.", "",
        summary_table(summary), "",
    ]
    if paired:
        body += ["Reflect-RL against each arm task by task, in each seed (every arm of a seed plays the same "
                 "tasks): the difference in points with Newcombe's paired 95% interval, and the exact McNemar "
                 "p-value.", "", paired_seeds_table(paired), ""]
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", "\n".join(body))
    return out / "summary.json"


def run_seeds(config: RunConfig, seeds: list[int], command: str) -> dict[str, Any]:
    """Run (or resume) the recipe once per seed, then write the summary; returns it."""
    from reflectrl.pipeline import run_pipeline

    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct seeds, got {seeds}")
    results = {seed: run_pipeline(seed_config(config, seed), command=f"{command} (seed {seed})") for seed in seeds}
    write_summary(config, results, command)
    return summarize_seeds(results)
