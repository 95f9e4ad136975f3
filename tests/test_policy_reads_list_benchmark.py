"""The list-reading check runs end to end on a tiny recipe and writes its learning curve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_policy_reads_list_benchmark_writes_a_curve_on_the_shortest_rows(tmp_path):
    out = tmp_path / "policy_reads_list.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "policy_reads_list.py"), "--config",
         str(ROOT / "configs" / "taxi-tiny.yaml"), "--rows", "4", "--steps", "4", "--eval-every", "2",
         "--data-episodes", "4", "--run-dir", str(tmp_path / "runs"), "--out", str(out)],
        check=True, cwd=tmp_path, capture_output=True, timeout=600,
    )
    result = json.loads(out.read_text())
    assert result["rows"] == 4 and len(result["prompt_tokens"]) == 4
    assert result["prompt_tokens"] == sorted(result["prompt_tokens"])
    assert [point["step"] for point in result["curve"]] == [2, 4]
    assert all(0.0 <= point["accuracy"] <= 1.0 and point["loss"] > 0 for point in result["curve"])
    assert result["peak_rss_gb"] > 0 and result["seconds"] > 0
