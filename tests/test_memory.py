"""Per-step peak memory: the peak restarts where a step starts, and freed memory goes back to the system."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from reflectrl.memory import peak_rss_gb, release_freed_memory, reset_peak_rss, rss_gb

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="VmHWM and clear_refs are Linux's")


def test_the_peak_restarts_at_a_reset_and_release_returns_freed_memory():
    block = torch.ones(400 * 2**20 // 4)  # 400 MiB, touched
    with_block = rss_gb()
    assert peak_rss_gb() >= with_block
    del block
    release_freed_memory()
    after = rss_gb()
    assert after < with_block - 0.3  # the freed block is no longer resident
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert peak_rss_gb() < with_block - 0.3  # the old peak is forgotten
    small = torch.ones(100 * 2**20 // 4)
    assert after + 0.09 <= peak_rss_gb() < with_block
    del small


def test_importing_reflectrl_bounds_onednns_kernel_cache_unless_the_user_set_it():
    """bf16 training on CPU held a oneDNN kernel per padded batch length met (1,024 by default)."""
    read = "import reflectrl, os; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {key: value for key, value in os.environ.items() if key != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    assert subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "64"
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "512"
    assert subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "512"
