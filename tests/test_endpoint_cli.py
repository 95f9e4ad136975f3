"""`reflectrl eval --agent endpoint` end to end: the real CLI in a subprocess against a local chat server.

The class-level tests in test_openai_teacher.py call EndpointAgent directly; this
one goes through argument parsing, the recipe, evaluate_agent and play_episode,
the path a user takes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

from chat_server import ChatServer

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
    written = [done.stdout, done.stderr] + [p.name + p.read_text() for p in cache.iterdir()]
    assert len(written) > 2, "replies are cached"
    assert not any(secret in text for text in written for secret in SECRETS)


def test_cli_eval_endpoint_failure_is_a_clear_error_without_secrets(tmp_path):
    with ChatServer() as server:
        host = server.base_url.removeprefix("http://").removesuffix("/v1")
        server.fail_next(1, status=401)
        done = run_eval(f"http://alice:pw-s3cret@{host}/v1", "--api-key-env", "REFLECTRL_TEST_NO_KEY")
    assert done.returncode == 2
    assert "HTTP 401" in done.stderr and "REFLECTRL_TEST_NO_KEY" in done.stderr
    assert f"http://{host}/v1" in done.stderr
    assert "pw-s3cret" not in done.stderr + done.stdout
