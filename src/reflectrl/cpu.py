"""What the CPU is: its model name and the flags that pick a run's dtype and attention kernel.

Timings are comparable only on the same CPU model, and two choices depend on its
units: bf16 (``ModelSpec.dtype: auto``) and the attention kernel (AMX favours
torch's fused one). All of it is read from ``/proc/cpuinfo``; elsewhere the flags
are empty and the choices fall back to fp32 and the matmul attention.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
#: flags of CPUs with bf16 units (x86: AVX-512 BF16, AMX; Arm: the BF16 extension)
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
AMX_FLAG = "amx_bf16"


@functools.lru_cache(maxsize=1)
def cpuinfo_text() -> str:
    """``/proc/cpuinfo``, or an empty text where the system has none."""
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags a ``/proc/cpuinfo`` text lists (x86 ``flags``, Arm ``Features`` lines)."""
    flags: set[str] = set()
    for line in (cpuinfo_text() if cpuinfo is None else cpuinfo).splitlines():
        key, _, values = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(values.split())
    return frozenset(flags)


def cpu_has_bf16_units(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bf16 natively (else bf16 autocast converts every operand and runs slower)."""
    return bool(BF16_FLAGS & cpu_flags(cpuinfo))


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX bf16 tiles, where torch's fused attention kernel beats the matmul form."""
    return AMX_FLAG in cpu_flags(cpuinfo)


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name."""
    for line in (cpuinfo_text() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
