"""Parameter and FLOP counts of zoo models without computing anything: the model is built on the meta device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_model, count_params

__all__ = ["ModelCost", "model_cost"]


@dataclass(frozen=True)
class ModelCost:
    """Size and compute of one model at one input shape.

    ``flops`` counts 2 per multiply-accumulate (`torch.utils.flop_counter`); the papers' "GFLOPs" are
    multiply-accumulates, given here as ``macs``.
    """

    params: int
    flops: int
    input_shape: tuple[int, ...]

    @property
    def macs(self) -> int:
        return self.flops // 2


def model_cost(name: str, *, batch: int = 1, frames: int | None = None, size: int | None = None,
               tiny: bool = False, num_classes: int | None = None) -> ModelCost:
    """Count parameters and forward FLOPs of a zoo model on meta tensors (fractions of a second per model)."""
    with torch.device("meta"):
        model = build_model(name, tiny=tiny, frames=frames, size=size, num_classes=num_classes)
    model = model.to("meta").eval()  # tables built with `cpu_table` move to meta too
    args = model.build_args
    shape = (batch, 3, args["frames"], args["size"], args["size"])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(shape, device="meta"))
    return ModelCost(params=count_params(model), flops=counter.get_total_flops(), input_shape=shape)
