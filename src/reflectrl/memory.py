"""Peak memory of this process, reported beside time by every training step and benchmark."""

from __future__ import annotations

import resource
import sys

import torch


def peak_rss_gb() -> float:
    """The most resident memory this process has held so far, in GB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1e9 if sys.platform == "darwin" else 1e9 / 1024), 3)


def peak_device_gb() -> float | None:
    """The most GPU memory torch has allocated so far, in GB; None without a GPU."""
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1e9, 3)
