"""`kill -9` a `reflectrl run` in data, SFT, RL and evaluation: every resume completes with the same eval.json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reflectrl.cli import main

from rl_fixtures import TINY, write_recipe

#: where to kill, in pipeline order: a glob under the run directory that exists only while that step works
KILL_POINTS = [
    ("data", ".tmp-data-*"),
    ("policy SFT", ".tmp-policy_noreflect-*/logs"),
    ("reflector SFT", ".tmp-reflector-*/logs"),
    ("RL, after its first checkpoint", "rl/sft_rl/checkpoint-1"),
    ("RL of the second arm", "rl/reflect_rl/metrics.jsonl"),
    ("evaluation", "eval/sft/result.json"),
]


def _recipe(tmp_path: Path, name: str) -> Path:
    return write_recipe(tmp_path / f"{name}.yaml", {
        "name": name, "seed": 0, "threads": 1, "out_dir": str(tmp_path / "runs"),
        "env": {"name": "taxi", "kwargs": {"max_steps": 8}},
        "model": {"name": "tiny", **TINY},
        "reflection_tokens": 6,
        "data": {"episodes": 24, "random_action_prob": 0.3},
        "sft": {"max_steps": 12, "batch_size": 8, "max_length": 256},
        "curriculum": {"levels": [{"stage": "pickup"}, {"stage": "full"}]},
        "rl": {"iterations": 4, "batch_episodes": 4, "checkpoint_every": 1},
        "eval": {"episodes": 6, "levels": [{"stage": "pickup"}, {"stage": "full"}]},
    })


def _command(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "reflectrl.cli", "run", "--config", str(recipe)]


def test_kill_nine_at_every_step_then_resume_gives_the_uninterrupted_results(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the uninterrupted run and the last resume in this process (one thread, as the recipe says); the killed ones apart
    assert main(["run", "--config", str(_recipe(tmp_path, "whole"))]) == 0
    expected = json.loads((tmp_path / "runs" / "whole" / "eval.json").read_text())

    recipe = _recipe(tmp_path, "killed")
    run = tmp_path / "runs" / "killed"
    killed_in = []
    for step, marker in KILL_POINTS:
        process = subprocess.Popen(_command(recipe), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while not list(run.glob(marker)) and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed_in.append(step)
        process.wait()
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.read().decode()[-3000:]
        process.stderr.close()
    assert len(killed_in) >= 5, killed_in
    assert main(["run", "--config", str(recipe)]) == 0
    assert json.loads((run / "eval.json").read_text()) == expected


def test_a_cut_training_set_stops_the_run_in_one_line_before_any_work(tmp_path, capsys):
    recipe = _recipe(tmp_path, "cut")
    assert main(["data", "--config", str(recipe)]) == 0
    run = tmp_path / "runs" / "cut"
    policy_set = run / "data" / "train" / "policy.jsonl"
    lines = policy_set.read_text().splitlines(keepends=True)
    policy_set.write_text("".join(lines[:len(lines) // 2]))
    capsys.readouterr()

    def error() -> str:
        assert main(["run", "--config", str(recipe)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {policy_set} "), err
        # nothing was made from it (steps.jsonl logs the data step itself)
        assert sorted(p.name for p in run.iterdir() if p.name != "steps.jsonl") == ["data"]
        return err[0]

    line = error()
    assert "bytes where" in line and f"delete {run / 'data'} to make the data again" in line
    # data made before files were recorded: the row count done.json holds still names the cut
    (run / "data" / "files.json").unlink()
    assert f"has {len(lines) // 2} rows where the data step wrote {len(lines)}" in error()
