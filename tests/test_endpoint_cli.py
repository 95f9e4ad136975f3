"""`reflectrl eval --agent endpoint` end to end: the real CLI in a subprocess against a local chat server.

The class-level tests in test_openai_teacher.py call EndpointAgent directly; this
one goes through argument parsing, the recipe, evaluate_agent and play_episode,
the path a user takes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

from chat_server import ChatServer
from rl_fixtures import cli_in_a_fresh_interpreter

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ("pw-s3cret", "key-s3cret")


def run_eval(base_url: str, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``reflectrl eval --agent endpoint`` on three held-out Taxi pickup tasks."""
    command = [
        sys.executable, "-m", "reflectrl.cli", "eval", "--config", "configs/taxi-tiny.yaml",
        "--agent", "endpoint", "--base-url", base_url, "--model", "m",
        "--set", "eval.episodes=3", "--set", "eval.levels=[{stage: pickup}]", *extra,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_eval_endpoint_agent_plays_and_reports(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "eval.json"
    with ChatServer(action_ids=True) as server:
        host = server.base_url.removeprefix("http://").removesuffix("/v1")
        url = f"http://alice:pw-s3cret@{host}/v1?api_key=key-s3cret"
        done = run_eval(url, "--cache-dir", str(cache), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics == json.loads(done.stdout)
    assert metrics["episodes"] == 3 and 0.0 <= metrics["success"] <= 1.0
    assert metrics["invalid_rate"] == 0.0, "the server always answers with a listed action id"
    assert list(metrics["levels"]) == ["stage=pickup"]
    assert server.request_count >= 3
    assert server.paths[0].endswith("?api_key=key-s3cret"), "credentials in the URL still reach the server"
    transcripts = tmp_path / "eval.episodes.jsonl"
    records = [json.loads(line) for line in transcripts.read_text().splitlines()]
    assert len(records) == 3 and all(r["transcript"] and r["level"] == "stage=pickup" for r in records)
    assert sum(r["success"] for r in records) / 3 == metrics["success"]
    written = [done.stdout, done.stderr, transcripts.read_text()] + [p.name + p.read_text() for p in cache.iterdir()]
    assert len(written) > 2, "replies are cached"
    assert not any(secret in text for text in written for secret in SECRETS)


def test_cli_eval_of_an_endpoint_loads_neither_transformers_nor_peft():
    """An agent without a local model starts in seconds: the recipe is read without the model libraries."""
    with ChatServer(action_ids=True) as server:
        command = ["eval", "--config", "configs/taxi-tiny.yaml", "--agent", "endpoint", "--base-url", server.base_url,
                   "--model", "m", "--set", "eval.episodes=1", "--set", "eval.levels=[{stage: pickup}]"]
        loaded = cli_in_a_fresh_interpreter([command], ("transformers", "peft", "accelerate"), cwd=ROOT)
    assert loaded == ([0], [])


def test_cli_eval_endpoint_failure_is_a_clear_error_without_secrets(tmp_path):
    with ChatServer() as server:
        host = server.base_url.removeprefix("http://").removesuffix("/v1")
        server.fail_next(1, status=401)
        done = run_eval(f"http://alice:pw-s3cret@{host}/v1", "--api-key-env", "REFLECTRL_TEST_NO_KEY")
    assert done.returncode == 2
    assert "HTTP 401" in done.stderr and "REFLECTRL_TEST_NO_KEY" in done.stderr
    assert f"http://{host}/v1" in done.stderr
    assert "pw-s3cret" not in done.stderr + done.stdout


def test_cli_eval_endpoint_deadline_and_attempts_are_settable():
    """A server dripping its replies holds the command for the attempts times the deadline the user chose:
    the recipe's, or the command line's over it."""
    with ChatServer() as server:
        for _ in range(2):
            server.drip_next("body", seconds=30)
        done = run_eval(server.base_url, "--set", "eval.endpoint.timeout=1", "--set", "eval.endpoint.attempts=5",
                        "--attempts", "2")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "failed after 2 attempts" in done.stderr and "no complete reply within 1s" in done.stderr
    assert server.request_count == 2


def test_cli_eval_endpoint_echoed_credentials_are_not_printed():
    with ChatServer() as server:
        host = server.base_url.removeprefix("http://").removesuffix("/v1")
        server.error_next(400, message="unexpected header Authorization: {authorization}")
        done = run_eval(f"http://alice:pw-s3cret@{host}/v1", "--api-key-env", "REFLECTRL_TEST_NO_KEY")
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "HTTP 400" in line and "Basic REDACTED" in line
    assert base64.b64encode(b"alice:pw-s3cret").decode() not in done.stderr and "pw-s3cret" not in done.stderr


def run_data(base_url: str, out_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``reflectrl data`` with the LLM teacher on one Taxi pickup episode (and one for validation)."""
    command = [
        sys.executable, "-m", "reflectrl.cli", "data", "--config", "configs/taxi-tiny.yaml", "--teacher", "openai",
        "--set", f"teacher.base_url={base_url}", "--set", "teacher.model=m", "--set", "data.episodes=1",
        "--set", "data.stages=[{stage: pickup}]", "--set", f"out_dir={out_dir}", *extra,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_cli_data_with_an_llm_teacher_shows_progress_and_keeps_its_data_when_only_the_deadline_changes(tmp_path):
    with ChatServer() as server:
        done = run_data(server.base_url, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        asked = server.request_count
        assert asked >= 2
        assert "episode" in done.stderr, "a progress bar over the episodes"
        assert "teacher: 1reply" in done.stderr, "a count of the teacher's replies"
        again = run_data(server.base_url, tmp_path, "--timeout", "5", "--attempts", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout) == json.loads(done.stdout)
    assert server.request_count == asked, "how long to wait for the teacher is no part of the data's recipe"


def test_cli_data_teacher_deadline_and_attempts_are_settable(tmp_path):
    with ChatServer() as server:
        server.drip_next("body", seconds=30)
        done = run_data(server.base_url, tmp_path, "--timeout", "1", "--attempts", "1")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "failed after 1 attempts" in done.stderr and "no complete reply within 1s" in done.stderr
    assert not (tmp_path / "taxi-tiny" / "data").exists()
