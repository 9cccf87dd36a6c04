"""PyTorch Lite runner: runs a ``.ptl`` file in the TorchScript lite interpreter, on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from vcompile.runtimes.base import Runner, RunnerError

__all__ = ["LiteRunner"]


class LiteRunner(Runner):
    """Runs a ptl `Artifact` with ``torch.jit.mobile``; fp32, CPU only. ``threads`` sets torch's intra-op threads."""

    name = "ptl"

    def activate_impl(self) -> None:
        if self.device != "cpu":
            raise RunnerError(f"the {self.name} runtime runs on the CPU only, not {self.device}; use --device cpu")
        if self.precision != "fp32":
            raise RunnerError(f"the {self.name} runtime runs fp32 artifacts, not {self.precision}")
        from torch.jit.mobile import _load_for_lite_interpreter

        from vcompile.compile.ptl import quiet_lite_interpreter

        if self.threads:
            torch.set_num_threads(self.threads)
        with quiet_lite_interpreter():
            self.module = _load_for_lite_interpreter(str(self.source.file()), map_location="cpu")

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(video)).detach().numpy()

    def deactivate_impl(self) -> None:
        self.module = None
