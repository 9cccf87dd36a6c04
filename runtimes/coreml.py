"""Core ML runner: predicts with a ``.mlpackage`` ML Program through coremltools, on macOS only.

The device is a set of Core ML compute units, within which Core ML picks for itself: ``cpu`` (the default) is the
CPU only, ``gpu`` the CPU and GPU, ``ane`` (or ``npu``) the CPU and Neural Engine, ``all`` every unit. Core ML
has no thread setting, so a ``threads`` request is refused. The program's input shape is static (the build's).
"""

from __future__ import annotations

import platform

import numpy as np

from ..compile.coreml import INPUT_NAME, OUTPUT_NAME, import_coremltools
from .base import Runner, RunnerError, TensorMetadata

__all__ = ["CoreMLRunner", "NOT_MACOS", "COMPUTE_UNITS"]

NOT_MACOS = "Core ML prediction runs only on macOS; this machine can build and validate .mlpackage files"
COMPUTE_UNITS = {"cpu": "CPU_ONLY", "all": "ALL", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "npu": "CPU_AND_NE"}


class CoreMLRunner(Runner):
    """Runs a coreml `Artifact`: float32 ``video`` in, float32 ``logits`` out (the program computes in its own
    precision, fp16 by default)."""

    name = "coreml"
    devices = tuple(COMPUTE_UNITS)
    precisions = ("fp16", "fp32")
    precision_from_artifact = True
    thread_control = False
    shape_fix = "rebuild it for that batch and clip size (Core ML programs here are static)"

    def activate_impl(self) -> None:
        if platform.system() != "Darwin":
            raise RunnerError(NOT_MACOS)
        ct = import_coremltools()
        self.model = ct.models.MLModel(str(self.source.file()),
                                       compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[self.device]))

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        return {INPUT_NAME: TensorMetadata(np.dtype(np.float32), tuple(self.source.input_shape))}

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        return self.model.predict({INPUT_NAME: video})[OUTPUT_NAME]

    def deactivate_impl(self) -> None:
        self.model = None
