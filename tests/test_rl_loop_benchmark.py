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
        [sys.executable, str(ROOT / "benchmarks" / "rl_loop.py"), "--model", "tiny", "--iterations", "1",
         "--batch-episodes", "2", "--max-steps", "2", "--reflection-tokens", "4", "--threads", "1",
         "--lever-repeats", "1", "--no-compile", "--device", "cpu", "--out", str(out)],
        check=True, cwd=ROOT, capture_output=True, timeout=600,
    )
    result = json.loads(out.read_text())
    ours, original = result["sides"]["ours"], result["sides"]["original"]
    assert ours["env_steps"] == original["env_steps"] > 0
    assert result["speedup_vs_original"] == ours["env_steps_per_s"] / original["env_steps_per_s"]
    assert set(ours["seconds"]) == {"reflection", "policy", "update", "env_and_other", "total"}
    assert all(result["peak_rss_gb"][side] > 0 for side in ("ours", "original"))
    assert {"cpu_count", "platform", "torch", "transformers"} <= set(result["machine"])
    assert {"iterations", "batch_episodes", "reflection_tokens", "max_length"} <= set(result["settings"])
    names = [lever["lever"] for lever in result["levers"]]
    assert any("bf16" in name for name in names) and any("merged" in name for name in names)
