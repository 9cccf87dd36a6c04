"""The native PyTorch training step the paper times: forward, cross-entropy, backward, AdamW step."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["TrainStep"]

_AMP = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TrainStep:
    """One full optimiser step per call, on a fixed seeded batch; AMP with a gradient scaler on CUDA fp16.

    Args:
        model: the zoo model (switched to train mode and moved to ``device``).
        clip: the (B, 3, T, H, W) input batch.
        precision: ``fp32``, or ``fp16``/``bf16`` for autocast mixed precision.
        device: ``cpu`` or ``cuda[:N]``.
    """

    def __init__(self, model: nn.Module, clip: torch.Tensor, precision: str = "fp32", device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.train().to(self.device)
        self.clip = clip.to(self.device)
        num_classes = model.build_args["num_classes"]
        self.labels = torch.arange(clip.shape[0], device=self.device) % num_classes
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=1e-5)
        self.amp_dtype = _AMP.get(precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = nn.functional.cross_entropy(self.model(self.clip), self.labels)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()
