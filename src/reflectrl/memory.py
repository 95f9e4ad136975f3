"""Peak memory of this process, reported beside time by every training step and benchmark.

On Linux the peak can be reset (``reset_peak_rss``), so that each step of a
long run reports its own peak rather than the run's so far; and the C
allocator can be told to hand freed memory back (``release_freed_memory``),
so that one step's freed activations do not stay resident through the next.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_gb() -> float:
    """The most resident memory this process has held since start or the last ``reset_peak_rss``, in GB."""
    high_water = _status_kib("VmHWM")
    if high_water is not None:
        return round(high_water * 1024 / 1e9, 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB, macOS bytes
    return round(peak / (1e9 if sys.platform == "darwin" else 1e9 / 1024), 3)


def rss_gb() -> float | None:
    """The resident memory of this process now, in GB (None where /proc is missing)."""
    now = _status_kib("VmRSS")
    return None if now is None else round(now * 1024 / 1e9, 3)


def reset_peak_rss() -> bool:
    """Start a new peak (Linux: VmHWM drops to the present RSS); False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  (glibc's; absent from other C libraries)
    except (OSError, AttributeError):
        return None
    return libc


@functools.lru_cache(maxsize=1)
def freeze_long_lived() -> None:
    """Exempt what is alive now (before a process's first step) from every later garbage collection.

    That is torch's and transformers' modules and classes, over a million objects that live as long
    as the process: a full collection over them cost ~0.35 s, and ``release_freed_memory`` runs one
    after every step. Objects made later are collected as before.
    """
    gc.collect()
    gc.freeze()


def release_freed_memory() -> None:
    """Collect garbage and return the allocator's free pages to the system (between steps of a run)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_device_gb() -> float | None:
    """The most GPU memory torch has allocated so far, in GB; None without a GPU."""
    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1e9, 3)
