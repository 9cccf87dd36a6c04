"""TSM-R50: Temporal Shift Module on a 2-D ResNet-50 (Lin et al., ICCV 2019, arXiv 1811.08383).

Reference: mit-han-lab/temporal-shift-module (`ops/temporal_shift.py`, `ops/models.py`): residual ("blockres")
shift of 1/8 of the channels each way before the first 1x1 conv of every bottleneck, average consensus of
per-frame logits. The shift is built from slices and concatenation with zeros, not written into slices of a
zero tensor, so it exports to ONNX and TensorRT as the same computation (the reference's in-place version
traces to constants: temporal-shift-module#181).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import TINY_TRUNKS, FrameAveragedClassifier, TrunkConfig, batch_to_frames
from .registry import register_model
from .spec import ModelSpec

__all__ = ["TsmConfig", "TSM", "temporal_shift", "ShiftedConv2d"]


@dataclass(frozen=True)
class TsmConfig:
    trunk: TrunkConfig = TrunkConfig("resnet50")
    shift_div: int = 8
    dropout: float = 0.5


def temporal_shift(x: torch.Tensor, frames: int, shift_div: int) -> torch.Tensor:
    """Shift 1/shift_div of the channels one frame back in time and as many forward, zero-filled at the ends.

    x is (B*T, C, H, W). Channels [0, fold) take frame t+1, channels [fold, 2*fold) take frame t-1.
    """
    x5 = batch_to_frames(x, frames)  # (B, T, C, H, W)
    fold = x5.shape[2] // shift_div
    zero = torch.zeros_like(x5[:, :1, :fold])
    from_next = torch.cat((x5[:, 1:, :fold], zero), dim=1)
    from_prev = torch.cat((zero, x5[:, :-1, fold:2 * fold]), dim=1)
    shifted = torch.cat((from_next, from_prev, x5[:, :, 2 * fold:]), dim=2)
    return shifted.reshape(x.shape)


class ShiftedConv2d(nn.Conv2d):
    """A Conv2d that shifts its input in time first; its parameters keep the wrapped conv's names."""

    def __init__(self, conv: nn.Conv2d, frames: int, shift_div: int):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        self.weight, self.bias = conv.weight, conv.bias
        self.frames, self.shift_div = frames, shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(temporal_shift(x, self.frames, self.shift_div))


class TSM(FrameAveragedClassifier):
    """Per-frame ResNet with residual temporal shifts; logits averaged over frames."""

    def __init__(self, cfg: TsmConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.frames = frames
        self.trunk = cfg.trunk.create()
        for stage in (self.trunk.layer1, self.trunk.layer2, self.trunk.layer3, self.trunk.layer4):
            for block in stage:
                block.conv1 = ShiftedConv2d(block.conv1, frames, cfg.shift_div)
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_features = self.trunk.num_features
        self.fc = nn.Linear(self.num_features, num_classes)


register_model(
    ModelSpec(
        name="tsm-r50", paper_name="TSM-R50", category="baseline", paper_params_m=24.3,
        params=24_327_632, flops=130_814_574_592,
        version="ResNet-50 + temporal shift modules (residual shift, 1/8 each way)",
        source="mit-han-lab/temporal-shift-module", aliases=("tsm", "tsm-resnet50"),
    ),
    TSM, full=TsmConfig(), tiny=TsmConfig(trunk=TINY_TRUNKS["resnet50"]),
)
