"""The pretrained-budget benchmark runs end to end on a tiny model and writes what the README quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from reflectrl.agent.models import native_bf16

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"forward_reflector_row", "reflector_sft_row", "forward_policy_row", "policy_sft_row", "policy_step_row",
         "rl_update_row_mb2", "rl_update_row_mb4", "reflection_decode_token_b1", "reflection_decode_token_b4"}


def _run(out: Path, *extra: str) -> dict:
    # decode per token is a difference of two timings: 32 tokens keep it above the noise of a loaded machine
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pretrained_budget.py"), "--model", "tiny", "--episodes", "2",
         "--rows", "4", "--rl-rows", "4", "--reflection-tokens", "32", "--repeats", "1", "--out", str(out), *extra],
        check=True, cwd=ROOT, capture_output=True, timeout=600,
    )
    return json.loads(out.read_text())


def test_budget_benchmark_times_every_kind_of_work_against_the_forward_of_the_same_rows(tmp_path):
    result = _run(tmp_path / "budget.json")
    assert set(result["work"]) == KINDS
    for values in result["work"].values():
        assert values["cpu_s_min"] > 0 and values["wall_s_min"] > 0 and values["peak_rss_gb"] > 0
    for kind in ("reflector", "policy"):
        work = result["work"]
        assert result[f"{kind}_train_vs_forward"] == work[f"{kind}_sft_row"]["cpu_s_min"] / work[f"forward_{kind}_row"]["cpu_s_min"]
    assert {"cpu_model", "threads", "amx", "torch"} <= set(result["machine"]) and result["machine"]["threads"] == 1
    setup = result["setup"]
    assert setup["recipe"] == "configs/autoexplore-smollm2.yaml" and setup["dtype"] == ("bfloat16" if native_bf16() else "float32")
    assert setup["lora"]["r"] == 16 and setup["lora"]["alpha"] == 32 and setup["action_scoring"] == "text"
    assert len(setup["rows"]["policy"]["tokens"]) == 4 and min(setup["rows"]["policy"]["actions"]) > 1

    again = _run(tmp_path / "again.json", "--only", "policy", "--baseline", str(tmp_path / "budget.json"),
                 "--set", "model.lora.dropout=0")
    assert set(again["work"]) == {"forward_policy_row", "policy_sft_row"} and "reflector_train_vs_forward" not in again
    assert again["setup"]["lora"]["dropout"] == 0
    assert again["before"]["speedup_cpu"]["policy_sft_row"] == (
        result["work"]["policy_sft_row"]["cpu_s_min"] / again["work"]["policy_sft_row"]["cpu_s_min"])
