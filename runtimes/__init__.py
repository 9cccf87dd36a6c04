"""Runtimes: what can run vcompile's models on this machine, and why not when it cannot.

Each runtime is registered by name with a probe that imports its package only when asked and says whether it
can build and run here. A broken install stays visible: the probe reports the original import error rather than
pretending the package is absent.

What a runtime supports is declared on its `Runner` class and readable from its `RuntimeInfo` without loading
anything or importing an optional package (tensorrt, coremltools, executorch stay unimported)::

    RUNTIMES["tensorrt"].devices         # ("cuda",)
    RUNTIMES["coreml"].thread_control    # False: a threads request is an error
    check_request("ptl", device="cuda")  # RunnerError: the ptl runtime runs on the CPU only, not 'cuda'; ...
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import shutil
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from ..compile import get_target
from ..compile.coreml import import_coremltools  # imports coremltools only when called (it warns loudly)
from ..errors import VcompileError
from .base import Runner, RunnerError, TensorMetadata

__all__ = ["RuntimeInfo", "Availability", "RUNTIMES", "resolve_runtime", "probe_all", "check_request", "load",
           "Runner", "RunnerError", "TensorMetadata"]


@dataclass(frozen=True)
class Availability:
    """Whether a runtime can build artifacts and run them here; ``detail`` says why not, or what it found."""

    can_build: bool
    can_run: bool
    version: str | None
    detail: str


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    target: str | None  # the compile target whose artifacts it runs; None for the PyTorch module itself
    package: str | None  # import name of the package it needs beyond the core
    extra: str | None  # the pip extra that installs it
    description: str
    probe: Callable[[], Availability]
    runner: str  # "module:Class" of its Runner in this package, imported only when used
    aliases: tuple[str, ...] = ()

    @property
    def runner_class(self) -> type[Runner]:
        """Its `Runner` class. Importing it imports no optional package: those load in ``activate``."""
        module, cls = self.runner.split(":")
        return getattr(importlib.import_module(f".{module}", __name__), cls)

    @property
    def devices(self) -> tuple[str, ...]:
        """Device kinds it runs on (``cuda`` also as ``cuda:N``); the first is its default device."""
        return self.runner_class.devices

    @property
    def default_device(self) -> str:
        return self.runner_class.devices[0]

    @property
    def precisions(self) -> tuple[str, ...]:
        """Precisions it executes; for an artifact runtime, the artifact's own (see `precision_from_artifact`)."""
        return self.runner_class.precisions

    @property
    def runs(self) -> tuple[str, ...]:
        """The precisions a case of this runtime can run in: its runner's, less those its target cannot build."""
        if self.target is None:
            return self.precisions
        built = get_target(self.target).precisions
        return tuple(p for p in self.precisions if p in built)

    @property
    def precision_from_artifact(self) -> bool:
        """Whether it runs the precision an artifact was built in (asking for another one is an error)."""
        return self.runner_class.precision_from_artifact

    @property
    def thread_control(self) -> bool:
        """Whether it honours a ``threads`` request (a request to one that does not is an error)."""
        return self.runner_class.thread_control


def _import(module: str):
    """Import an optional module: (module, None) if it works, (None, reason) if not."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None, "not installed"
    try:
        return importlib.import_module(module), None
    except Exception as err:  # noqa: BLE001 - a broken install must be reported, whatever it raises
        return None, f"installed but failed to import ({type(err).__name__}: {str(err).splitlines()[0][:120]})"


def _cuda_devices() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _probe_torch() -> Availability:
    gpus = _cuda_devices()
    where = "CPU" + (f" and CUDA ({', '.join(gpus)})" if gpus else "; CUDA not available")
    return Availability(True, True, torch.__version__, f"eager on {where}")


def _probe_inductor() -> Availability:
    """Inductor writes C++ (CPU) and Triton (CUDA) kernels and compiles them here: it needs a C++ compiler and
    Python's C headers (Triton's launcher includes Python.h too)."""
    compiler = next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = [what for what, found in (("a C++ compiler (g++ or clang++)", compiler),
                                        (f"Python's C headers ({headers})", headers.is_file())) if not found]
    if missing:
        return Availability(False, False, torch.__version__,
                            f"torch.compile needs {' and '.join(missing)}, which this machine lacks; install them "
                            "(Debian/Ubuntu: apt install g++ python3-dev)")
    return Availability(True, True, torch.__version__, f"torch.compile (Inductor, weight freezing) with {compiler}")


def _probe_onnxruntime() -> Availability:
    ort, why = _import("onnxruntime")
    if ort is None:
        return Availability(False, False, None, f"onnxruntime {why}")
    return Availability(True, True, ort.__version__, "providers: " + ", ".join(ort.get_available_providers()))


def _probe_tensorrt() -> Availability:
    trt, why = _import("tensorrt")
    if trt is None:
        return Availability(False, False, None, f'tensorrt {why}; pip install "vcompile[trt]" on a machine '
                                                "with an NVIDIA GPU and access to NVIDIA's package index")
    if not _cuda_devices():
        return Availability(False, False, trt.__version__, "TensorRT needs an NVIDIA GPU; none is visible")
    return Availability(True, True, trt.__version__, f"GPU: {', '.join(_cuda_devices())}")


def _probe_coreml() -> Availability:
    if importlib.util.find_spec("coremltools") is None:
        ct, why = None, "not installed"
    else:
        ct, why = None, None
        try:
            ct = import_coremltools()
        except Exception as err:  # noqa: BLE001 - a broken install must be reported, whatever it raises
            why = f"installed but failed to import ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    if ct is None:
        return Availability(False, False, None, f'coremltools {why}; pip install "vcompile[coreml]"')
    if platform.system() != "Darwin":
        return Availability(True, False, ct.__version__, "converts here; Core ML prediction runs only on macOS")
    return Availability(True, True, ct.__version__, "converts and predicts (macOS)")


def _probe_executorch() -> Availability:
    runtime, why = _import("executorch.runtime")
    if runtime is None:
        return Availability(False, False, None, f'executorch {why}; pip install "vcompile[mobile]"')
    return Availability(True, True, version("executorch"), "XNNPACK lowering; runs .pte on this CPU")


def _probe_openvino() -> Availability:
    ov, why = _import("openvino")
    if ov is None:
        return Availability(False, False, None, f'openvino {why}; pip install "vcompile[openvino]"')
    try:
        devices = ov.Core().available_devices
    except Exception as err:  # noqa: BLE001 - a broken plugin must be reported, whatever it raises
        return Availability(False, False, ov.__version__, f"OpenVINO cannot list its devices ({type(err).__name__})")
    if "CPU" not in devices:
        return Availability(True, False, ov.__version__, f"OpenVINO has no CPU plugin here (devices: {devices})")
    return Availability(True, True, ov.__version__, "CPU plugin; runs IR (.xml + .bin) converted from the ONNX")


def _probe_ptl() -> Availability:
    mobile, why = _import("torch.jit.mobile")
    if mobile is None or not hasattr(mobile, "_load_for_lite_interpreter"):
        return Availability(False, False, torch.__version__, f"this torch build has no lite interpreter ({why})")
    return Availability(True, True, torch.__version__, "TorchScript lite interpreter (.ptl) on this CPU")


RUNTIMES: dict[str, RuntimeInfo] = {r.name: r for r in (
    RuntimeInfo("torch", None, None, None, "PyTorch eager, fp32 or AMP, CPU or CUDA", _probe_torch,
                "pytorch:TorchRunner", ("eager",)),
    RuntimeInfo("inductor", None, None, None, "torch.compile (Inductor)", _probe_inductor,
                "pytorch:InductorRunner", ("compile",)),
    RuntimeInfo("onnxruntime", "onnx", "onnxruntime", None, "ONNX Runtime (CPU, CUDA, TensorRT EPs)",
                _probe_onnxruntime, "onnxruntime:OnnxRuntimeRunner", ("ort", "onnx")),
    RuntimeInfo("openvino", "openvino", "openvino", "openvino", "OpenVINO on the CPU (IR from the ONNX)",
                _probe_openvino, "openvino:OpenVinoRunner", ("ov",)),
    RuntimeInfo("tensorrt", "tensorrt", "tensorrt", "trt", "TensorRT engines (.plan)", _probe_tensorrt,
                "tensorrt:TensorRTRunner", ("trt",)),
    RuntimeInfo("coreml", "coreml", "coremltools", "coreml", "Core ML ML Program (.mlpackage)", _probe_coreml,
                "coreml:CoreMLRunner"),
    RuntimeInfo("executorch", "executorch", "executorch", "mobile", "ExecuTorch with XNNPACK (.pte)",
                _probe_executorch, "executorch:ExecuTorchRunner", ("et",)),
    RuntimeInfo("ptl", "ptl", None, None, "PyTorch Lite interpreter (.ptl)", _probe_ptl,
                "ptl:LiteRunner", ("pytorch-lite", "lite")),
)}


def resolve_runtime(name: str) -> RuntimeInfo:
    """A runtime by name or alias (``ort``, ``trt``, ``et``)."""
    key = name.strip().lower()
    for info in RUNTIMES.values():
        if key == info.name or key in info.aliases:
            return info
    raise VcompileError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")


def probe_all() -> dict[str, Availability]:
    """Probe every runtime (imports the optional packages that are installed)."""
    return {name: info.probe() for name, info in RUNTIMES.items()}


def check_request(runtime: str, device: str | None = None, precision: str | None = None,
                  threads: int | None = None, source: Any = None) -> tuple[str, str | None, int | None]:
    """Check a request against a runtime's declarations without loading anything or probing the machine.

    Returns ``(device, precision, threads)`` as the runner would use them (device None: the runtime's default;
    precision None: an artifact's own, when ``source`` is given, else fp32 for the torch runtimes), or raises a
    one-line `RunnerError` that names the runtime, what was asked, what it supports and the fix.
    """
    return resolve_runtime(runtime).runner_class.check_request(device, precision, threads, source)


def load(source, runtime: str, device: str | None = None, precision: str | None = None,
         threads: int | None = None) -> Runner:
    """A (not yet activated) `Runner` of ``runtime`` for ``source``: an `Artifact`, or a module for torch runtimes.

    Args:
        device: one of the runtime's `RuntimeInfo.devices` (``cuda:N`` too); None: its default (``cpu``; ``cuda``
            for tensorrt).
        precision: None: the artifact's own (fp32 for a module). An artifact runtime refuses any other precision
            than the artifact's; the torch runtimes run fp32, or fp16 and bf16 under autocast.
        threads: CPU threads, for runtimes whose `RuntimeInfo.thread_control` is True; None: the default.

    Raises:
        RunnerError: a request the runtime's declarations do not allow (checked first, before any probe).
        VcompileError: the runtime cannot run here (package missing, no GPU, not macOS), or ``source`` is not what
            it runs.
    """
    info = resolve_runtime(runtime)
    runner_cls = info.runner_class
    runner_cls.check_request(device, precision, threads, source)
    availability = info.probe()
    if not availability.can_run:
        raise VcompileError(f"the {info.name} runtime cannot run here: {availability.detail}")
    target = getattr(source, "target", None)
    if info.target is not None and target != info.target:
        raise VcompileError(f"the {info.name} runtime runs {info.target} artifacts, not {target or 'a module'}")
    return runner_cls(source, device=device, precision=precision, threads=threads)
