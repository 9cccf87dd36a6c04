"""Parameter and FLOP counts of zoo models without computing anything: the model is built on the meta device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import build_args, build_model, count_params, get_spec

__all__ = ["ModelCost", "model_cost", "count_cost"]


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
    """Parameters and forward FLOPs of a zoo model: the spec's recorded figures at its paper shape (one clip, 400
    classes), otherwise `count_cost`."""
    args = build_args(name, tiny=tiny, frames=frames, size=size, num_classes=num_classes)
    spec = get_spec(name)
    paper_shape = (not tiny and batch == 1 and args["num_classes"] == 400 and args["frames"] == spec.frames
                   and args["size"] == spec.size)
    if paper_shape and spec.params is not None and spec.flops is not None:
        return ModelCost(spec.params, spec.flops, (1, 3, spec.frames, spec.size, spec.size))
    return count_cost(name, batch=batch, frames=frames, size=size, tiny=tiny, num_classes=num_classes)


def count_cost(name: str, *, batch: int = 1, frames: int | None = None, size: int | None = None,
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
