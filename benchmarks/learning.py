"""Learning benchmark: success vs env steps and wall time, Reflect-RL vs no reflection, same budget.

Runs (or reuses) the pipeline of a recipe (default: configs/taxi-tiny.yaml, the
demo) and writes benchmarks/results/learning.json and learning.png with the
RL training curves of both arms and their held-out evaluation.

    python benchmarks/learning.py [--config configs/taxi-tiny.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from reflectrl.config import load_config
from reflectrl.eval.report import plot_curves, read_metrics
from reflectrl.memory import peak_rss_gb
from reflectrl.pipeline import run_pipeline

RESULTS = Path(__file__).parent / "results"
ARMS = ("reflect_rl", "sft_rl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/taxi-tiny.yaml")
    args = parser.parse_args()
    config = load_config(args.config)
    arms = run_pipeline(config)
    curves = {arm: read_metrics(config.run_dir / "rl" / arm / "metrics.jsonl") for arm in ARMS}
    sft = {name: json.loads((config.run_dir / name / "sft_metrics.json").read_text())
           for name in ("reflector", "policy", "policy_noreflect")}
    sft_seconds = {name: metrics["seconds"] for name, metrics in sft.items()}
    result = {
        "config": args.config,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "sft_seconds": sft_seconds,
        # this process covers every step only where it ran them (not when it reuses a finished run);
        # the SFTs record their own peaks either way
        "peak_rss_gb": {"this_process": peak_rss_gb(), **{f"sft_{n}": m.get("peak_rss_gb") for n, m in sft.items()}},
        "arms": {
            arm: {
                "eval": arms[arm],
                "rl_seconds": curves[arm][-1]["seconds"] if curves[arm] else None,
                "rl_env_steps": curves[arm][-1]["env_steps"] if curves[arm] else None,
                "curve": [
                    {k: r[k] for k in ("iteration", "level", "env_steps", "seconds", "success", "return")}
                    for r in curves[arm]
                ],
            }
            for arm in ARMS
        },
        "reflect_rl_success": arms["reflect_rl"]["success"],
        "no_reflection_success": arms["sft_rl"]["success"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learning.json").write_text(json.dumps(result, indent=2))
    plot_curves(curves, RESULTS / "learning.png")
    print(json.dumps({k: result[k] for k in ("reflect_rl_success", "no_reflection_success", "sft_seconds")}, indent=2))


if __name__ == "__main__":
    main()
