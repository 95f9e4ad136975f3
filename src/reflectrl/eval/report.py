"""The run's report: a markdown table with intervals, the paper's numbers beside ours, and PNG curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reflectrl.run_files import read_jsonl_tolerant, write_text_atomic  # noqa: E402

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
            _pct(metrics["invalid_rate"]),
            *[
                _pct(metrics["levels"][name]["success"]) if name in metrics.get("levels", {}) else "-"
                for name in level_names
            ],
            str(metrics["episodes"]),
            paper.get(arm, "-"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[dict[str, Any]]], path: str | Path, window: int = 5) -> None:
    """Success and return against env steps, one line per RL arm (moving average over ``window`` iterations)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, records in curves.items():
        if not records:
            continue
        x = [r["env_steps"] for r in records]
        for ax, key in zip(axes, ("success", "return")):
            y = [r[key] for r in records]
            smooth = [sum(y[max(0, i - window + 1):i + 1]) / len(y[max(0, i - window + 1):i + 1]) for i in range(len(y))]
            ax.plot(x, smooth, label=ARM_TITLES.get(arm, arm))
    for ax, key in zip(axes, ("training success rate", "training return")):
        ax.set_xlabel("env steps")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return read_jsonl_tolerant(path)


def write_report(
    run_dir: str | Path,
    env_name: str,
    results: dict[str, dict[str, Any]],
    curves: dict[str, list[dict[str, Any]]],
    notes: list[str] | None = None,
) -> Path:
    """Write report.md and training_curves.png into ``run_dir``."""
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
        if records:
            last = records[-1]
            body.append(f"- `{arm}`: {last['iteration']} RL iterations, {last['env_steps']} env steps, "
                        f"{last['seconds']:.0f} s")
    body += [f"- {note}" for note in notes or []]
    return write_text_atomic(run_dir / "report.md", "\n".join(body) + "\n")
