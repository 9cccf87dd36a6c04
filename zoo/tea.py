"""TEA-R50: Temporal Excitation and Aggregation on Res2Net-50 (Li et al., CVPR 2020, arXiv 2004.01398).

Reference: Phoenix1327/tea-action-recognition (`ops/tea50_16f.py`, `Bottle2neckShift`): every Res2Net-50 26w x 4s
bottleneck gets a motion excitation (ME) module after its first 1x1 conv and a depthwise temporal conv (k=3) in
front of each of its four width splits (multiple temporal aggregation, MTA); TSN-style average of per-frame
logits. The trunk is timm's `res2net50_26w_4s`, whose blocks are wrapped so that their parameters keep timm's names.

Export-minded rewrites, all exact: the temporal conv is three shifted copies of the (B, T, C, H, W) tensor
weighted per channel (the reference permutes to (B*H*W, C, T) for a Conv1d); the ME difference is taken on
spatially pooled features (pooling is linear, so it commutes with the difference), built from slices and a zero
frame concatenated at the end (the reference uses F.pad on the time axis). T is baked in from the constructor,
as the reference's ``n_segment``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .layers import TINY_TRUNKS, FrameAveragedClassifier, TrunkConfig, batch_to_frames, cpu_table
from .registry import register_model
from .spec import ModelSpec

if TYPE_CHECKING:  # timm loads only when a model builds its trunk
    from timm.models.res2net import Bottle2neck

__all__ = ["TeaConfig", "TEA", "TeaBottleneck", "MotionExcitation", "TemporalConv", "temporal_conv_init"]


@dataclass(frozen=True)
class TeaConfig:
    trunk: TrunkConfig = TrunkConfig("res2net50_26w_4s")
    me_reduction: int = 16
    dropout: float = 0.5


def temporal_conv_init(channels: int, mode: str) -> torch.Tensor:
    """Initial (C, 1, 3) weight of a temporal conv: ``fixed`` is the identity; ``shift`` moves the first half of
    the channels one frame back (they read frame t+1) and the second half one frame forward (they read t-1)."""
    weight = torch.zeros(channels, 1, 3)
    if mode == "fixed":
        weight[:, 0, 1] = 1.0
    elif mode == "shift":
        fold = channels // 2
        weight[:fold, 0, 2] = 1.0
        weight[fold:2 * fold, 0, 0] = 1.0
        weight[2 * fold:, 0, 1] = 1.0
    else:
        raise ValueError(f"unknown temporal conv initialisation {mode!r}")
    return weight


class TemporalConv(nn.Module):
    """Depthwise temporal convolution, kernel 3, zero padding 1, no bias, on (B*T, C, H, W) frames.

    ``weight`` has the (C, 1, 3) shape of the equivalent grouped `nn.Conv1d`; the output at frame t is
    ``w0 * x[t-1] + w1 * x[t] + w2 * x[t+1]``, computed on the rank-5 (B, T, C, H, W) view.
    """

    def __init__(self, channels: int, frames: int, mode: str = "fixed"):
        super().__init__()
        self.frames = frames
        weight = torch.empty(channels, 1, 3)
        with torch.no_grad():
            weight.copy_(cpu_table(lambda: temporal_conv_init(channels, mode)))
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x5 = batch_to_frames(x, self.frames)  # (B, T, C, H, W)
        zero = torch.zeros_like(x5[:, :1])
        prev = torch.cat((zero, x5[:, :-1]), dim=1)
        nxt = torch.cat((x5[:, 1:], zero), dim=1)
        w = self.weight.reshape(1, 1, -1, 3, 1)
        out = prev * w[..., 0:1, :] + x5 * w[..., 1:2, :] + nxt * w[..., 2:3, :]
        return out.reshape(x.shape)


class MotionExcitation(nn.Module):
    """Motion excitation: channel attention from feature differences of adjacent frames.

    squeeze (1x1 conv + BN) -> diff[t] = dwconv3x3(s)[t+1] - s[t], zero at the last frame -> spatial mean ->
    1x1 conv + BN -> sigmoid - 0.5 = y; output x + x * y.
    """

    def __init__(self, channels: int, frames: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"motion excitation reduction {reduction} leaves no channels of {channels}")
        self.frames = frames
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.conv3 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.bn1(self.conv1(x))
        now = batch_to_frames(squeezed.mean((2, 3), keepdim=True), self.frames)  # (B, T, C/r, 1, 1)
        moved = batch_to_frames(self.conv2(squeezed).mean((2, 3), keepdim=True), self.frames)
        diff = moved[:, 1:] - now[:, :-1]
        diff = torch.cat((diff, torch.zeros_like(now[:, :1])), dim=1).flatten(0, 1)  # (B*T, C/r, 1, 1)
        y = torch.sigmoid(self.bn3(self.conv3(diff))) - 0.5
        return x + x * y


class TeaBottleneck(nn.Module):
    """A timm Res2Net `Bottle2neck` with ME after conv1 and a temporal conv before each width split's 3x3 conv.

    Takes over the timm block's modules under their names, so the Res2Net state-dict keys stay timm's.
    """

    def __init__(self, block: Bottle2neck, frames: int, me_reduction: int = 16):
        super().__init__()
        if block.scale < 2 or block.se is not None or block.drop_path is not None:
            raise ValueError("TEA needs a plain Res2Net bottleneck with scale >= 2 (no SE, no drop path)")
        self.width, self.is_first = block.width, block.is_first
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.convs, self.bns, self.pool = block.convs, block.bns, block.pool
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.downsample, self.relu = block.downsample, block.relu
        self.me = MotionExcitation(self.width * block.scale, frames, me_reduction)
        modes = ["fixed"] * block.num_scales + ["shift"]
        self.shifts = nn.ModuleList([TemporalConv(self.width, frames, mode) for mode in modes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.me(self.relu(self.bn1(self.conv1(x))))
        splits = torch.split(out, self.width, 1)
        outs = []
        sp = splits[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            sp = splits[i] if i == 0 or self.is_first else sp + splits[i]
            sp = self.relu(bn(conv(self.shifts[i](sp))))
            outs.append(sp)
        last = self.shifts[-1](splits[-1])
        outs.append(self.pool(last) if self.pool is not None else last)
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


class TEA(FrameAveragedClassifier):
    """Per-frame Res2Net with TEA bottlenecks; dropout, classifier, logits averaged over frames."""

    def __init__(self, cfg: TeaConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.frames = frames
        self.trunk = cfg.trunk.create()
        for stage in (self.trunk.layer1, self.trunk.layer2, self.trunk.layer3, self.trunk.layer4):
            for i, block in enumerate(stage):
                stage[i] = TeaBottleneck(block, frames, cfg.me_reduction)
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_features = self.trunk.num_features
        self.fc = nn.Linear(self.num_features, num_classes)


register_model(
    ModelSpec(
        name="tea-r50", paper_name="TEA-R50", category="stand-alone attention", paper_params_m=24.9,
        params=24_919_354, flops=137_867_351_040,
        version="Res2Net-50 26w4s + motion excitation and multiple temporal aggregation in every block",
        source="Phoenix1327/tea-action-recognition", min_frames=2, aliases=("tea", "tea-res2net50"),
    ),
    TEA, full=TeaConfig(), tiny=TeaConfig(trunk=TINY_TRUNKS["res2net50_26w_4s"], me_reduction=4),
)
