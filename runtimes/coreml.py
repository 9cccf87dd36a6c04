"""Core ML runner: predicts with a ``.mlpackage`` ML Program through coremltools, on macOS only.

Core ML picks the compute units itself within what it is allowed: ``device="cpu"`` restricts it to the CPU, any
other device allows all units (CPU, GPU, Neural Engine); ``gpu`` and ``ane`` pin it to the CPU plus that unit.
Core ML has no thread setting, so ``threads`` is ignored.
"""

from __future__ import annotations

import platform

import numpy as np

from vcompile.runtimes.base import Runner, RunnerError

__all__ = ["CoreMLRunner", "NOT_MACOS"]

NOT_MACOS = "Core ML prediction runs only on macOS; this machine can build and validate .mlpackage files"
_COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "npu": "CPU_AND_NE"}


class CoreMLRunner(Runner):
    """Runs a coreml `Artifact`: float32 ``video`` in, float32 ``logits`` out (the program computes in its own
    precision, fp16 by default)."""

    name = "coreml"

    def activate_impl(self) -> None:
        if platform.system() != "Darwin":
            raise RunnerError(NOT_MACOS)
        from vcompile.compile.coreml import INPUT_NAME, OUTPUT_NAME, import_coremltools

        ct = import_coremltools()
        units = _COMPUTE_UNITS.get(self.device.split(":")[0].lower(), "ALL")
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        self.model = ct.models.MLModel(str(self.source.file()), compute_units=getattr(ct.ComputeUnit, units))

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        return self.model.predict({self.input_name: video})[self.output_name]

    def deactivate_impl(self) -> None:
        self.model = None
