"""The run's report: a markdown table with intervals, the paper's numbers beside ours, and PNG curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reflectrl.errors import UserError
from reflectrl.eval.episodes import BLAME, SUCCESS, failure_breakdown, format_episode, player_breakdown
from reflectrl.eval.paired import compare, format_difference
from reflectrl.run_files import read_jsonl_tolerant, write_text_atomic

ARM_TITLES = {
    "random": "Random",
    "oracle": "Oracle",
    "sft": "SFT only (no reflection)",
    "sft_reflect": "SFT with reflection (no RL)",
    "sft_rl": "SFT + RL without reflection",
    "reflect_rl": "Reflect-RL",
    "reflect_rl_no_neg": "Reflect-RL without negative examples",
    "rl_only": "RL only (no SFT)",
    "endpoint": "Zero-shot LLM (endpoint)",
}

#: the paper whose numbers the report quotes beside ours
PAPER_CITATION = ("Zhou, Du and Li, \"Reflect-RL: Two-Player Online RL Fine-Tuning for LMs\", ACL 2024, "
                  "arXiv:2402.12621")
#: success rates reported in the paper, by env and arm, as a secondary summary gave them (not checked
#: against the paper)
PAPER_NUMBERS: dict[str, dict[str, str]] = {
    "taxi": {"reflect_rl": "58% (dropoff)", "sft_rl": "0% (dropoff)"},
    "autoexplore": {
        "reflect_rl": "36% (depth 1), 17% (depth 2)",
        "sft_rl": "20% (depth 1), 4% (depth 2)",
        "sft": "4% (depth 1)",
        "rl_only": "12% (depth 1)",
        "reflect_rl_no_neg": "33% (depth 1), 12% (depth 2)",
    },
    "alfworld": {"reflect_rl": "74%", "sft_rl": "66%"},
}


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _with_ci(metrics: dict[str, Any]) -> str:
    lo, hi = metrics["success_ci"]
    return f"{_pct(metrics['success'])} [{_pct(lo)}, {_pct(hi)}]"


def results_table(results: dict[str, dict[str, Any]], env_name: str) -> str:
    """Markdown table: greedy success [95% CI], sampled success when measured, return, steps, invalid rate,
    per-level greedy success, episodes, paper."""
    level_names: list[str] = []
    for metrics in results.values():
        for name in metrics.get("levels", {}):
            if name not in level_names:
                level_names.append(name)
    sampled = any("sampled" in metrics for metrics in results.values())
    paper = PAPER_NUMBERS.get(env_name, {})
    header = ["arm", "greedy success [95% CI]", *(["sampled success [95% CI]"] if sampled else []), "return",
              "steps", "invalid", *level_names, "episodes", "paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, metrics in results.items():
        row = [
            ARM_TITLES.get(arm, arm),
            _with_ci(metrics),
            *([_with_ci(metrics["sampled"]) if "sampled" in metrics else "-"] if sampled else []),
            f"{metrics['return']:+.2f}",
            f"{metrics['steps']:.1f}",
            "-" if metrics["invalid_rate"] is None else _pct(metrics["invalid_rate"]),
            *[
                _pct(metrics["levels"][name]["success"]) if name in metrics.get("levels", {}) else "-"
                for name in level_names
            ],
            str(metrics["episodes"]),
            paper.get(arm, "-"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _level_runs(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive training rows of one curriculum level each."""
    runs: list[list[dict[str, Any]]] = []
    for record in records:
        if not runs or runs[-1][-1]["level"] != record["level"]:
            runs.append([])
        runs[-1].append(record)
    return runs


def plot_curves(curves: dict[str, list[dict[str, Any]]], path: str | Path, window: int = 5) -> None:
    """Training success per iteration (a moving average over ``window`` iterations that restarts at every
    curriculum level, whose changes are marked), and held-out validation success (greedy) beside it."""
    import matplotlib  # here, not at the top: reading and comparing results stays instant

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (arm, records) in enumerate(curves.items()):
        color, title = colors[number % len(colors)], ARM_TITLES.get(arm, arm)
        training = [r for r in records if "success" in r]
        validated = [r for r in records if "val_success" in r]
        names = list(validated[0]["val_levels"]) if validated else []
        for index, run in enumerate(_level_runs(training)):
            y = [r["success"] for r in run]
            smooth = [sum(y[max(0, i - window + 1):i + 1]) / len(y[max(0, i - window + 1):i + 1]) for i in range(len(y))]
            axes[0].plot([r["iteration"] for r in run], smooth, color=color, label=title if index == 0 else None)
            if index:
                axes[0].axvline(run[0]["iteration"] - 0.5, color=color, linestyle=":", alpha=0.7)
                level = run[0]["level"]
                axes[0].annotate(names[level] if level < len(names) else f"level {level}",
                                 (run[0]["iteration"] - 0.5, 1.0), color=color, fontsize=8, rotation=90, va="top",
                                 ha="right")
        if validated:
            x = [r["iteration"] for r in validated]
            axes[1].plot(x, [r["val_success"] for r in validated], color=color, marker="o", label=f"{title} (mean)")
            for level in validated[0]["val_levels"]:
                axes[1].plot(x, [r["val_levels"].get(level, float("nan")) for r in validated], color=color,
                             linestyle="--", alpha=0.5, linewidth=1, label=f"{title}: {level}")
    axes[0].set_ylabel(f"training success (moving average of {window}, per level)")
    axes[1].set_ylabel("validation success (held-out, greedy)")
    for ax in axes:
        ax.set_xlabel("RL iteration")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def failure_table(episodes: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per arm and level, how many episodes ended each way (success first)."""
    breakdowns = {arm: failure_breakdown(records) for arm, records in episodes.items() if records}
    kinds = [SUCCESS] + sorted({kind for levels in breakdowns.values() for counts in levels.values()
                                for kind in counts} - {SUCCESS})
    lines = ["| arm | level | " + " | ".join(kinds) + " |", "|" + "---|" * (len(kinds) + 2)]
    for arm, levels in breakdowns.items():
        for level, counts in levels.items():
            lines.append(f"| {ARM_TITLES.get(arm, arm)} | {level} | "
                         + " | ".join(str(counts.get(kind, 0)) for kind in kinds) + " |")
    return "\n".join(lines)


def player_table(episodes: dict[str, list[dict[str, Any]]]) -> str | None:
    """Markdown: per arm with reflections and level, how often the reflection named a good action, the
    policy took the action named, and the action was good; and whose step each failed episode first
    went wrong on. None when no arm's steps were judged."""
    rows = []
    for arm, records in episodes.items():
        for level, counts in player_breakdown(records).items():
            steps = counts["steps"]
            rows.append(f"| {ARM_TITLES.get(arm, arm)} | {level} | {steps} | "
                        + " | ".join(_pct(counts[key] / steps) for key in ("reflection_good", "followed", "action_good"))
                        + f" | {counts['failed']} | " + " | ".join(str(counts[who]) for who in BLAME) + " |")
    if not rows:
        return None
    head = ("| arm | level | steps | reflection names a good action | policy takes the named action | "
            "action good | failed | first wrong step: reflector's | policy's | both | reflection named none |")
    return "\n".join([head, "|" + "---|" * 11, *rows])


def paired_table(episodes: dict[str, list[dict[str, Any]]], arm: str = "reflect_rl") -> str | None:
    """Markdown: ``arm`` against every other arm on the tasks both played (see ``eval.paired``); an arm without
    episodes is a row that says so, not left out. None when ``arm`` has no episodes or there is no other arm."""
    if not episodes.get(arm):
        return None
    title = ARM_TITLES.get(arm, arm)
    rows = []
    for other, records in episodes.items():
        if other == arm:
            continue
        if not records:
            rows.append(f"| {ARM_TITLES.get(other, other)} | not paired: no episodes of it were read |" + " |" * 6)
            continue
        try:
            result = compare(episodes[arm], records)
        except UserError as error:
            rows.append(f"| {ARM_TITLES.get(other, other)} | not paired: {error} |" + " |" * 6)
            continue
        rows.append(f"| {ARM_TITLES.get(other, other)} | {result['tasks']} | {result['both']} | {result['only_a']} | "
                    f"{result['only_b']} | {result['neither']} | {format_difference(result)} | {result['p']:.3g} |")
    if not rows:
        return None
    head = (f"| against | tasks | both solved | only {title} | only the other | neither | "
            f"{title} minus the other, points [95% CI] | exact McNemar p |")
    return "\n".join([head, "|" + "---|" * 8, *rows])


def failure_examples(episodes: dict[str, list[dict[str, Any]]], prefer: str = "reflect_rl") -> list[str]:
    """One short transcript for every way an episode failed: the shortest of its kind, from ``prefer``'s
    episodes when that arm failed this way, else from the first arm that did."""
    order = sorted(episodes, key=lambda arm: arm != prefer)
    examples: dict[str, tuple[str, dict[str, Any]]] = {}
    for arm in order:
        for record in sorted(episodes[arm], key=lambda r: r["steps"]):
            if record["outcome"] != SUCCESS and record["outcome"] not in examples:
                examples[record["outcome"]] = (arm, record)
    return [f"**{kind}** ({ARM_TITLES.get(arm, arm)}):\n\n```\n{format_episode(record, max_lines=12)}\n```"
            for kind, (arm, record) in sorted(examples.items())]


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return read_jsonl_tolerant(path)


def write_report(
    run_dir: str | Path,
    env_name: str,
    results: dict[str, dict[str, Any]],
    curves: dict[str, list[dict[str, Any]]],
    notes: list[str] | None = None,
    episodes: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Write report.md and training_curves.png into ``run_dir``; ``episodes``: each arm's greedy
    transcripts, for the breakdown of how episodes end."""
    run_dir = Path(run_dir)
    plot_curves(curves, run_dir / "training_curves.png")
    body = [
        f"# reflectrl report: {run_dir.name}",
        "",
        f"Environment: `{env_name}`. Success on held-out tasks, Wilson 95% interval in brackets: greedy "
        "(argmax actions and reflections) and, where measured, sampled (the authors' protocol: every task "
        "played several times with sampled actions; repeats of one task are not independent, so read its "
        "interval as optimistic). Per-level columns are greedy. "
        f"The paper column quotes Reflect-RL with GPT-2 XL from {PAPER_CITATION}, as a secondary summary gave "
        "the numbers; they were not checked against the paper.",
        "",
        results_table(results, env_name),
        "",
        "![training curves](training_curves.png)",
        "",
    ]
    for arm, records in curves.items():
        training = [r for r in records if "success" in r]
        if training:
            last = training[-1]
            body.append(f"- `{arm}`: {last['iteration']} RL iterations, {last['env_steps']} env steps, "
                        f"{last['seconds']:.0f} s")
    body += [f"- {note}" for note in notes or []]
    if episodes and any(episodes.values()):
        body += ["", "## How episodes end (greedy)", "",
                 "Every episode's transcript is in `eval/<arm>/episodes.jsonl`; "
                 "`reflectrl show <run> --arm <arm> --failed` prints them.", "",
                 failure_table(episodes), "", *[f"{example}\n" for example in failure_examples(episodes)]]
        players = player_table(episodes)
        if players is not None:
            body += ["## Reflector or policy (greedy)", "",
                     "At every step evaluation records the actions the env counts as good (its oracle's, or "
                     "any equally short move) and the action the reflection names. A failed episode's first "
                     "step off the good actions is the reflector's when the policy took the bad action the "
                     "reflection named, the policy's when it left a good named action.", "", players, ""]
        paired = paired_table(episodes)
        if paired is not None:
            body += ["## Reflect-RL against each arm, task by task (greedy)", "",
                     "Every arm plays the same tasks, so two arms' results are pairs: the difference gets "
                     "Newcombe's interval for paired proportions and the exact McNemar test, which can "
                     "separate two arms whose own intervals overlap (`reflectrl compare <run>`).", "",
                     paired, ""]
    return write_text_atomic(run_dir / "report.md", "\n".join(body) + "\n")
