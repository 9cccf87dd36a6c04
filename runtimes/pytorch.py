"""PyTorch runners: eager (fp32 or AMP) and Inductor (`torch.compile`). They run the module, not an artifact."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from vcompile.runtimes.base import Runner, RunnerError

__all__ = ["TorchRunner", "InductorRunner"]

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """PyTorch eager mode. fp32 runs as is; fp16 and bf16 run under autocast (AMP), weights stay fp32."""

    name = "torch"

    def activate_impl(self) -> None:
        if not isinstance(self.source, nn.Module):
            raise RunnerError(f"the {self.name} runtime runs a PyTorch module, not {type(self.source).__name__}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RunnerError(f"device {self.device} asked for, but CUDA is not available here; use --device cpu")
        if self.precision not in ("fp32", *_AMP_DTYPES):
            raise RunnerError(f"the {self.name} runtime runs fp32, fp16 or bf16, not {self.precision}")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module = self.prepare(self.source.eval().to(self.device))

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

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)


class InductorRunner(TorchRunner):
    """`torch.compile` with the Inductor back end; the first call compiles (minutes for large models)."""

    name = "inductor"

    def prepare(self, module: nn.Module) -> nn.Module:
        return torch.compile(module, backend="inductor", dynamic=False)
