"""The RL-loop benchmark runs end to end on a tiny model and writes what the README quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_rl_loop_benchmark_writes_both_sides_on_the_same_steps(tmp_path):
    out = tmp_path / "rl_loop.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rl_loop.py"), "--model", "tiny", "--iterations", "2",
         "--batch-episodes", "2", "--max-steps", "2", "--reflection-tokens", "4", "--threads", "1",
         "--lever-repeats", "1", "--no-compile", "--device", "cpu", "--out", str(out)],
        check=True, cwd=ROOT, capture_output=True, timeout=600,
    )
    result = json.loads(out.read_text())
    assert {"speedup_vs_original", "env_steps_per_s", "peak_rss_gb", "goals", "sides", "iterations", "levers",
            "machine", "settings", "wall_time_s"} <= set(result)
    # the two sides played the same trajectories: iteration by iteration the same episodes, env steps
    # (at least one and at most max_steps per episode) and outcomes
    assert [row["iteration"] for row in result["iterations"]] == [0, 1]
    for row in result["iterations"]:
        ours, original = row["ours"], row["original"]
        assert ours["episodes"] == original["episodes"] == 2
        assert 2 <= ours["env_steps"] == original["env_steps"] <= 2 * 2
        assert ours["successes"] == original["successes"]
        # every state got one reflection, none longer than the budget
        assert ours["reflections"] == original["reflections"] == ours["env_steps"]
        assert ours["reflection_new_tokens"] <= 4 * ours["reflections"]
        assert original["reflection_new_tokens"] <= 4 * original["reflections"]
    sides = result["sides"]
    assert sides["ours"]["env_steps"] == sides["original"]["env_steps"] == sum(
        row["ours"]["env_steps"] for row in result["iterations"])
    for side in sides.values():
        seconds = side["seconds"]
        assert set(seconds) == {"reflection", "policy", "update", "env_and_other", "total"}
        assert min(seconds.values()) >= 0 and seconds["total"] > 0
    assert all(result["peak_rss_gb"][side] > 0 for side in ("ours", "original"))
    assert {"cpu_count", "platform", "torch", "transformers"} <= set(result["machine"])
    assert {"iterations", "batch_episodes", "reflection_tokens", "max_length"} <= set(result["settings"])
    names = [lever["lever"] for lever in result["levers"]]
    assert any("bf16" in name for name in names) and any("merged" in name for name in names)
