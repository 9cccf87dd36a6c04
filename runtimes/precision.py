"""Which precision a request runs in on this machine, and why: what the CPU runs natively, and how ``amp`` and an
explicit precision resolve for one runtime on one device.

A precision is what an artifact is built in or a runtime computes in (`vcompile.compile.PRECISIONS`); ``amp`` is a
request, the paper's mixed precision, that resolves per device: fp16 autocast on CUDA (as the paper), bf16 on a CPU
with native bf16 (AVX-512 BF16, AMX, Arm's BF16 extension), fp32 on every other CPU. A request that cannot run as
asked is refused in one line (`PrecisionError`), never emulated and timed as if it were native: bf16 on a CPU
without it, or a precision the runtime does not execute.

The CPU's flags come from /proc/cpuinfo (Linux; macOS reports none, so its CPUs count as without native bf16).
``VCOMPILE_CPU_FLAGS_OFF=flag,flag`` hides flags the CPU has, to see what vcompile does on a smaller CPU (tests
use it); it can only take flags away, never claim one the CPU lacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..compile.base import PRECISIONS
from ..errors import VcompileError

__all__ = ["AMP", "REQUESTS", "BF16_FLAGS", "INT8_FLAGS", "FLAGS_OFF_ENV", "PrecisionError", "Resolved",
           "cpu_flags", "native_bf16", "resolve_precision"]

AMP = "amp"
REQUESTS = (AMP, *PRECISIONS)  # what a user may ask for
# Flags that mean the CPU computes bf16 natively (x86: AVX-512 BF16, AMX-BF16; Arm: FEAT_BF16).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# Flags that mean fast int8 dot products (x86: VNNI, AMX-INT8; Arm: dot product, int8 matrix multiply).
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
FLAGS_OFF_ENV = "VCOMPILE_CPU_FLAGS_OFF"


class PrecisionError(VcompileError):
    """A precision request that cannot run as asked on this runtime and device."""


@dataclass(frozen=True)
class Resolved:
    """What a request runs in, and one line saying why (kept on every record as ``precision_reason``)."""

    precision: str
    reason: str


@lru_cache(maxsize=1)
def _proc_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, less those named in ``VCOMPILE_CPU_FLAGS_OFF``."""
    off = {f.strip() for f in os.environ.get(FLAGS_OFF_ENV, "").split(",") if f.strip()}
    return _proc_flags() - off


def native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and the flags that say so (or that none does)."""
    found = [f for f in BF16_FLAGS if f in cpu_flags()]
    if found:
        return True, f"this CPU has native bf16 ({', '.join(found)})"
    return False, f"this CPU has no native bf16 (none of {', '.join(BF16_FLAGS)})"


def _either(items: tuple[str, ...]) -> str:
    """``fp32``, ``fp32 or int8``, ``fp32, fp16 or int8``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def resolve_precision(requested: str, device: str, runtime: str, supported: tuple[str, ...]) -> Resolved:
    """What ``requested`` runs in for ``runtime`` (which executes ``supported``) on ``device``.

    Raises:
        PrecisionError: an explicit precision the runtime does not execute, or bf16 on a CPU without native bf16.
    """
    on_cuda = device.startswith("cuda")
    if requested == AMP:
        if on_cuda:
            if "fp16" in supported:
                return Resolved("fp16", "amp on CUDA: fp16, as the paper")
            return Resolved("fp32", f"amp on CUDA: {runtime} runs no fp16, so fp32")
        has_bf16, why = native_bf16()
        if not has_bf16:
            return Resolved("fp32", f"amp on a CPU: {why}, so fp32")
        if "bf16" in supported:
            return Resolved("bf16", f"amp on a CPU: {why}")
        return Resolved("fp32", f"amp on a CPU: {why}, but {runtime} runs no bf16 here, so fp32")
    if requested not in REQUESTS:
        raise PrecisionError(f"unknown precision {requested!r}; choose from {', '.join(REQUESTS)}")
    if requested not in supported:
        raise PrecisionError(f"{runtime} runs {_either(supported)}, not {requested}; choose one of those (or amp)")
    if requested == "bf16" and not on_cuda:
        has_bf16, why = native_bf16()
        if not has_bf16:
            raise PrecisionError(f"--precision bf16 on the CPU: {why}, and vcompile does not time an emulated bf16 "
                                 f"as bf16; use fp32, or amp (bf16 where the CPU has it)")
        return Resolved("bf16", f"requested; {why}")
    return Resolved(requested, "requested")
