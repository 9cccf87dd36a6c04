"""NL-R50: a per-frame ResNet-50 with five embedded-Gaussian non-local blocks (Wang et al., CVPR 2018,
arXiv 1711.07971).

Reference: the non-local wrapper of mit-han-lab/temporal-shift-module (`ops/non_local.py`) and mmaction2's
TSM-R50-NL configuration: blocks after res3 {0, 2} and res4 {0, 2, 4}, inner width C/2, 1x2x2 max-pool
sub-sampling of phi and g, no 1/sqrt(d) scaling, output projection followed by BatchNorm, residual add.
The paper's 31.7M parameters match this 2-D design (31.69M), not an I3D trunk.

The 1x1x1 convolutions are written as 2-D 1x1 convolutions on the (B*T, C, H, W) layout and the sub-sampling
as a 2-D max-pool: the same parameters and the same function, without 3-D operators that mobile back ends lack.
The affinity softmax(theta^T phi) g over all T*H*W positions is `scaled_dot_product_attention` with scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import TINY_TRUNKS, FrameAveragedClassifier, TrunkConfig, batch_to_frames, frames_to_batch
from .registry import register_model
from .spec import ModelSpec

__all__ = ["NonLocalConfig", "NonLocalBlock", "NonLocalResNet"]


@dataclass(frozen=True)
class NonLocalConfig:
    trunk: TrunkConfig = TrunkConfig("resnet50")
    # Indices of the blocks of (layer1, layer2, layer3, layer4) followed by a non-local block.
    placement: tuple[tuple[int, ...], ...] = ((), (0, 2), (0, 2, 4), ())
    dropout: float = 0.5


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block over the whole clip: x + BN(W(softmax(theta^T phi) g)).

    Takes and returns per-frame features (B*T, C, H, W); attends across all T*H*W positions of a clip.
    """

    def __init__(self, channels: int, frames: int):
        super().__init__()
        inner = channels // 2
        self.frames = frames
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)  # the reference starts as identity

    def _clip_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, C', h, w) -> (B, 1, T*h*w, C'): one attention head over every position of the clip."""
        bt, c, h, w = x.shape
        return batch_to_frames(x, self.frames).permute(0, 1, 3, 4, 2).reshape(bt // self.frames, 1, -1, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bt, _, h, w = x.shape
        q = self._clip_tokens(self.theta(x))
        k = self._clip_tokens(self.pool(self.phi(x)))
        v = self._clip_tokens(self.pool(self.g(x)))
        y = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, T*h*w, C')
        y = y.reshape(bt // self.frames, self.frames, h, w, -1).permute(0, 1, 4, 2, 3).reshape(bt, -1, h, w)
        return x + self.bn(self.out(y))


class NonLocalResNet(FrameAveragedClassifier):
    """Per-frame ResNet with non-local blocks across the clip; logits averaged over frames (TSN consensus)."""

    def __init__(self, cfg: NonLocalConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.frames = frames
        self.trunk = cfg.trunk.create()  # kept exactly as timm builds it
        self.stages = [self.trunk.layer1, self.trunk.layer2, self.trunk.layer3, self.trunk.layer4]
        self.nonlocal_blocks = nn.ModuleDict({
            f"layer{s + 1}_{i}": NonLocalBlock(self.stages[s][i].conv3.out_channels, frames)
            for s, indices in enumerate(cfg.placement) for i in indices
        })
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_features = self.trunk.num_features
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, T, C, H/32, W/32): the trunk's res5 maps, non-local blocks in between."""
        t = self.trunk
        x = t.maxpool(t.act1(t.bn1(t.conv1(frames_to_batch(x)))))
        for s, stage in enumerate(self.stages):
            for i, block in enumerate(stage):
                x = block(x)
                key = f"layer{s + 1}_{i}"
                if key in self.nonlocal_blocks:
                    x = self.nonlocal_blocks[key](x)
        return batch_to_frames(x, self.frames)


register_model(
    ModelSpec(
        name="nl-r50", paper_name="NL-R50", category="stand-alone attention", paper_params_m=31.7,
        params=31_686_096, flops=292_251_238_400,
        version="ResNet-50 + 5 embedded-Gaussian non-local blocks (res3 x2, res4 x3)",
        source="mit-han-lab/temporal-shift-module ops/non_local.py; mmaction2 TSM-R50-NL",
        aliases=("nl-resnet50", "nonlocal-r50"),
    ),
    NonLocalResNet, full=NonLocalConfig(),
    # Two blocks in res3 and three in res4, to hold non-local blocks at res3 {0} and res4 {0, 2}.
    tiny=NonLocalConfig(trunk=TINY_TRUNKS["resnet50"].with_args(layers=(1, 2, 3, 1)), placement=((), (0,), (0, 2), ())),
)
