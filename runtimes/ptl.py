"""PyTorch Lite runner: runs a ``.ptl`` file in the TorchScript lite interpreter, on the CPU.

A trace records the batch symbolically unless the tracer warned that it froze a Python value into the graph: the
input's batch is dynamic for a build without tracer warnings, and the whole build shape is static otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.jit.mobile import _load_for_lite_interpreter

from ..compile.ptl import quiet_lite_interpreter
from .base import Runner, TensorMetadata

__all__ = ["LiteRunner", "INPUT_NAME"]

INPUT_NAME = "video"


class LiteRunner(Runner):
    """Runs a ptl `Artifact` with ``torch.jit.mobile``; fp32, CPU only. ``threads`` sets torch's intra-op threads."""

    name = "ptl"
    devices = ("cpu",)
    precisions = ("fp32",)
    precision_from_artifact = True
    thread_control = True
    shape_fix = "give a clip of that shape, or rebuild the artifact for it"

    def activate_impl(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        with quiet_lite_interpreter():
            self.module = _load_for_lite_interpreter(str(self.source.file()), map_location="cpu")

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        shape = tuple(self.source.input_shape)
        if not self.source.manifest.get("info", {}).get("tracer_warnings", ["unknown"]):
            shape = (None, *shape[1:])
        return {INPUT_NAME: TensorMetadata(np.dtype(np.float32), shape)}

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(video)).detach().numpy()

    def deactivate_impl(self) -> None:
        self.module = None
