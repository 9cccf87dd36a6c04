"""The environment fingerprint written into every result record and shown by `vcompile doctor`."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

from .. import __version__
from ..runtimes.precision import FLAGS_OFF_ENV, cpu_flags

__all__ = ["PACKAGES", "package_versions", "usable_cores", "cpu_info", "gpu_info", "git_commit", "environment"]

# Distributions whose versions change what vcompile builds or measures.
PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxscript", "onnxsim", "onnxruntime", "onnxruntime-gpu",
            "openvino", "coremltools", "executorch", "tensorrt", "av", "numpy")

# The instruction sets that decide which kernels a CPU runtime picks (and whether bf16 or int8 run natively).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "i8mm", "bf16")


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata without importing anything."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one (Linux), else every core (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, object]:
    """CPU model, architecture, cores and the `ISA_FLAGS` it has, as vcompile sees them (see
    `vcompile.runtimes.precision.cpu_flags`; flags hidden by its environment variable are named)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    info = {"model": model, "arch": platform.machine(), "logical_cores": os.cpu_count(),
            "usable_cores": usable_cores(), "isa": [f for f in ISA_FLAGS if f in flags]}
    if os.environ.get(FLAGS_OFF_ENV):
        info["flags_hidden"] = os.environ[FLAGS_OFF_ENV]
    return info


def gpu_info() -> list[dict[str, object]]:
    """CUDA devices torch can see, with compute capability, memory and driver version."""
    if not torch.cuda.is_available():
        return []
    driver = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        pass
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_mb": props.total_memory // 2**20, "driver": driver, "cuda": torch.version.cuda})
    return gpus


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit vcompile runs from (with ``-dirty`` if the tree has changes), or None outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, object]:
    """Everything that identifies where a number was measured."""
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpu_info(),
        "packages": package_versions(),
        "vcompile": __version__,
        "git_commit": git_commit(),
    }
