"""PyTorch runners: eager (fp32 or AMP) and Inductor (`torch.compile`). They run the module, not an artifact."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
from torch import nn

from .base import Runner, RunnerError, TensorMetadata, require_cuda

__all__ = ["TorchRunner", "InductorRunner", "INPUT_NAME"]

INPUT_NAME = "video"
_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """PyTorch eager mode. fp32 runs as is; fp16 and bf16 run under autocast (AMP), weights stay fp32.

    ``threads`` sets torch's intra-op threads (process-wide). The input is what the zoo model was built for:
    (any batch, 3, frames, size, size) from its ``build_args``; a module without them takes any (B, 3, T, H, W).
    """

    name = "torch"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16", "bf16")
    thread_control = True
    shape_fix = "create the model for that clip (create_model(name, frames=..., size=...))"

    def activate_impl(self) -> None:
        if not isinstance(self.source, nn.Module):
            raise RunnerError(f"the {self.name} runtime runs a PyTorch module, not {type(self.source).__name__}")
        if self.device.startswith("cuda"):
            require_cuda(self.name, self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module = self.prepare(self.source.eval().to(self.device))
        self.settings = {"intra_op_threads": str(torch.get_num_threads()),
                         "inter_op_threads": str(torch.get_num_interop_threads()),
                         "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
                         "autocast": "off" if self.precision == "fp32" else self.precision}

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        args = getattr(self.source, "build_args", None) or {}
        frames, size = args.get("frames"), args.get("size")
        return {INPUT_NAME: TensorMetadata(np.dtype(np.float32), (None, 3, frames, size, size))}

    def prepare(self, module: nn.Module) -> nn.Module:
        return module

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=_AMP_DTYPES[self.precision])

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            out = self.module(torch.from_numpy(video).to(self.device))
        return out.float().cpu().numpy()

    def bind_impl(self, video: np.ndarray):
        resident = torch.from_numpy(video).to(self.device)

        def step() -> None:
            with torch.inference_mode(), self._autocast():
                self.module(resident)

        return step

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def deactivate_impl(self) -> None:
        self.module = None


class InductorRunner(TorchRunner):
    """`torch.compile` with the Inductor back end and weight freezing (weights folded into the compiled graph as
    constants, as for inference: convolutions get their weights pre-packed). The first call for a shape compiles
    (tens of seconds, minutes for large models); a benchmark records it as ``first_run_ms``, outside the timed
    runs."""

    name = "inductor"

    def prepare(self, module: nn.Module) -> nn.Module:
        return torch.compile(module, backend="inductor", dynamic=False, options={"freezing": True})
