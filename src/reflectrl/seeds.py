"""``reflectrl run --seeds 0,1,2``: one recipe once per seed, and the spread of its results.

Each seed is a whole run of its own (data, both players' initial weights, RL
sampling and evaluation all drawn from it) in ``runs/<name>/seeds/seed-<s>/``,
resumable like any run. ``summary.json`` then gives, for every arm and level,
the mean, the standard deviation over seeds and the per-seed values, and
``summary.md`` the same as a table: one seed's interval says nothing about how
far another seed lands. Beside it, Reflect-RL against every other arm task by
task in each seed (``eval.paired``), since every arm of a seed plays the same
tasks. ``reflectrl summarize`` writes the same summary for runs of one recipe
made apart (another machine, another day).
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reflectrl.errors import UserError
from reflectrl.eval.episodes import evaluated_arms, read_episodes
from reflectrl.eval.intervals import wilson_interval
from reflectrl.eval.paired import PairedCounts, compare, compare_counts, format_difference
from reflectrl.eval.report import ARM_TITLES
from reflectrl.recipe_yaml import parse_yaml
from reflectrl.run_files import read_json, write_json_atomic, write_text_atomic

if TYPE_CHECKING:  # summarizing runs on disk needs neither torch nor a model
    from reflectrl.config import RunConfig

SEEDS_DIR = "seeds"


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """The recipe of one seed of a sweep, in its own run directory under the recipe's."""
    return replace(config, seed=seed, out_dir=str(config.run_dir / SEEDS_DIR), name=f"seed-{seed}")


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "per_seed": [round(value, 4) for value in values]}


def summarize_seeds(results: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per arm, overall and per level: mean, sample standard deviation and per-seed success (eval.json's);
    and every seed's episodes pooled, with their Wilson interval. Only arms every seed evaluated."""
    seeds = sorted(results)
    arms: dict[str, Any] = {}
    for arm in (arm for arm in results[seeds[0]] if all(arm in results[seed] for seed in seeds)):
        per_seed = [results[seed][arm] for seed in seeds]
        levels = [level for level in per_seed[0].get("levels", {}) if all(level in r["levels"] for r in per_seed)]
        successes = sum(round(r["success"] * r["episodes"]) for r in per_seed)
        episodes = sum(r["episodes"] for r in per_seed)
        arms[arm] = {"success": _spread([r["success"] for r in per_seed]),
                     "levels": {level: _spread([r["levels"][level]["success"] for r in per_seed]) for level in levels},
                     "pooled": {"successes": successes, "episodes": episodes,
                                "success": round(successes / episodes, 4) if episodes else 0.0,
                                "success_ci": [round(bound, 4) for bound in wilson_interval(successes, episodes)]}}
    return {"seeds": seeds, "arms": arms}


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown: every arm's mean +- std over seeds, its per-seed values, every seed's episodes pooled with
    their interval, and each level's mean +- std."""
    arms = summary["arms"]
    levels = list(next(iter(arms.values()))["levels"]) if arms else []

    def cell(spread: dict[str, Any]) -> str:
        return f"{100 * spread['mean']:.0f}% ± {100 * spread['std']:.0f}"

    def pooled(values: dict[str, Any]) -> str:
        low, high = values["success_ci"]
        return f"{values['successes']}/{values['episodes']} [{100 * low:.0f}%, {100 * high:.0f}%]"

    seeds = ", ".join(str(seed) for seed in summary["seeds"])
    lines = [f"| arm | success, mean ± std | per seed ({seeds}) | all seeds' episodes [95% CI] | "
             + " | ".join(levels) + " |", "|" + "---|" * (4 + len(levels))]
    for arm, values in arms.items():
        per_seed = ", ".join(f"{100 * v:.0f}%" for v in values["success"]["per_seed"])
        lines.append(f"| {ARM_TITLES.get(arm, arm)} | {cell(values['success'])} | {per_seed} | "
                     f"{pooled(values['pooled'])} | "
                     + " | ".join(cell(values["levels"][level]) for level in levels) + " |")
    return "\n".join(lines)


#: the key of ``paired_by_seed``'s comparison over every seed's pairs together
ALL_SEEDS = "all"


def paired_by_seed(run_dirs: dict[int, Path], arm: str = "reflect_rl") -> dict[str, dict[str, Any]]:
    """Per other arm, per seed: ``arm`` against it task by task (``eval.paired.compare``), from each seed's
    greedy transcripts, and (key ``all``) every seed's pairs counted together; an arm some seed did not
    evaluate, or whose tasks differ from ``arm``'s, is left out."""
    episodes = {seed: {name: read_episodes(path) for name, path in evaluated_arms(run_dir).items()}
                for seed, run_dir in run_dirs.items()}
    paired: dict[str, dict[str, Any]] = {}
    seeds = sorted(run_dirs)
    others = [name for name in episodes[seeds[0]] if name != arm]
    for other in others:
        try:
            per_seed = {str(seed): compare(episodes[seed][arm], episodes[seed][other]) for seed in seeds}
        except (KeyError, UserError):
            continue
        if len(seeds) > 1:
            per_seed[ALL_SEEDS] = compare_counts(PairedCounts(
                *(sum(c[key] for c in per_seed.values()) for key in ("both", "only_a", "only_b", "neither"))))
        paired[other] = per_seed
    return paired


def paired_seeds_table(paired: dict[str, dict[str, Any]], arm: str = "reflect_rl") -> str:
    """Markdown: per other arm, ``arm`` minus it in each seed (and over all seeds' pairs), with the paired
    interval and McNemar p."""
    columns = list(next(iter(paired.values())))
    lines = [f"| {ARM_TITLES.get(arm, arm)} minus | "
             + " | ".join("all seeds" if column == ALL_SEEDS else f"seed {column}" for column in columns) + " |",
             "|" + "---|" * (1 + len(columns))]
    for other, per_seed in paired.items():
        lines.append(f"| {ARM_TITLES.get(other, other)} | "
                     + " | ".join(f"{format_difference(c)}, p {c['p']:.2g}" for c in per_seed.values()) + " |")
    return "\n".join(lines)


def write_summary(out: Path, run_dirs: dict[int, Path], command: str) -> dict[str, Any]:
    """``summary.json`` and ``summary.md`` in ``out`` (``runs/<name>/seeds/`` of a sweep), from each seed's run
    directory (its eval.json and transcripts); returns the summary."""
    title = out.parent.name if out.name == SEEDS_DIR else out.name
    results = {seed: _eval_results(run_dir) for seed, run_dir in run_dirs.items()}
    summary = summarize_seeds(results)
    summary["runs"] = {str(seed): str(run_dir) for seed, run_dir in sorted(run_dirs.items())}
    paired = paired_by_seed(run_dirs)
    summary["paired_with_reflect_rl"] = paired
    body = [
        f"# {title}: {len(results)} seeds", "",
        f"`{command}`. Greedy success on held-out tasks; std is the sample standard deviation over seeds, "
        "in percentage points. The pooled column counts every seed's episodes together: its Wilson interval "
        "treats them as independent and so leaves out how much the trained agent varies from seed to seed "
        "(the std and per-seed columns show that). Each seed's run (report, transcripts): "
        + ", ".join(f"seed {seed} `{run_dir}`" for seed, run_dir in sorted(run_dirs.items())) + ".", "",
        summary_table(summary), "",
    ]
    if paired:
        body += ["Reflect-RL against each arm task by task, in each seed (every arm of a seed plays the same "
                 "tasks) and over all seeds' pairs together: the difference in points with Newcombe's paired "
                 "95% interval, and the exact McNemar p-value.", "", paired_seeds_table(paired), ""]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", "\n".join(body))
    return summary


def _eval_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "eval.json"
    if not path.is_file():
        raise UserError(f"{run_dir} has no eval.json: name run directories that `reflectrl run` has evaluated")
    results = read_json(path)
    arms = results.items() if isinstance(results, dict) and results else [("(the file)", results)]
    for arm, result in arms:
        if not (isinstance(result, dict) and isinstance(result.get("success"), (int, float))
                and isinstance(result.get("episodes"), int) and isinstance(result.get("levels", {}), dict)):
            raise UserError(f"{path}: {arm} is not an arm's result (success, episodes, levels) as "
                            f"`reflectrl run` writes it")
    return results


#: recipe keys that may differ between the seeds of one sweep
_PER_SEED_KEYS = ("seed", "name", "out_dir")


def _run_recipe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        values = parse_yaml(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no config.yaml: name run directories that `reflectrl run` made") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"{path} cannot be read: {error}") from None
    if not isinstance(values, dict) or not isinstance(values.get("seed"), int):
        raise UserError(f"{path} is not a recipe with a seed")
    return values


def _differing_key(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first recipe key both recipes set to different values (keys only one has are a code version's
    new defaults, not a different recipe)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in (key for key in a if key in b):
            if not prefix and key in _PER_SEED_KEYS:
                continue
            found = _differing_key(a[key], b[key], f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if a == b else prefix.rstrip(".")


def summarize_runs(run_dirs: list[Path], out: Path, command: str) -> dict[str, Any]:
    """The seed summary of runs of one recipe made apart (other machines, other days, results folders
    that keep a run's eval.json, config.yaml and transcripts): refused unless they differ only in seed."""
    if len({run_dir.resolve() for run_dir in run_dirs}) != len(run_dirs):
        raise UserError(f"a run directory is named twice: {' '.join(map(str, run_dirs))}")
    recipes = {run_dir: _run_recipe(run_dir) for run_dir in run_dirs}
    by_seed: dict[int, Path] = {}
    first_dir, first = next(iter(recipes.items()))
    for run_dir, recipe in recipes.items():
        differing = _differing_key(first, recipe)
        if differing:
            raise UserError(f"{first_dir} and {run_dir} are not one recipe with another seed: "
                            f"{differing} differs")
        if recipe["seed"] in by_seed:
            raise UserError(f"{by_seed[recipe['seed']]} and {run_dir} are both seed {recipe['seed']}: "
                            f"name one run directory per seed")
        by_seed[recipe["seed"]] = run_dir
    if len(by_seed) < 2:
        raise UserError("a seed summary needs the run directories of at least two seeds")
    return write_summary(out, by_seed, command)


def run_seeds(config: RunConfig, seeds: list[int], command: str) -> dict[str, Any]:
    """Run (or resume) the recipe once per seed, then write the summary; returns it."""
    from reflectrl.pipeline import run_pipeline

    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct seeds, got {seeds}")
    for seed in seeds:
        run_pipeline(seed_config(config, seed), command=f"{command} (seed {seed})")
    return write_summary(config.run_dir / SEEDS_DIR, {seed: seed_config(config, seed).run_dir for seed in seeds},
                         command)
