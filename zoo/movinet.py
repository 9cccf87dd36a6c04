"""MoViNet-A0 and -A2, Base (non-causal, 3-D conv) mode (Kondratyuk et al., "MoViNets: Mobile Video Networks for
Efficient Video Recognition", CVPR 2021, arXiv 2103.11511).

Reference: Atze00/MoViNet-pytorch (`movinets/config.py`, `movinets/models.py`) with ``causal=False``,
``conv_type="3d"``, ``tf_like=False``: 3-D MBConv blocks with SE and a ReZero scalar, BatchNorm eps 1e-3, Swish, and
the explicit paddings of the port's configuration. The stream (causal) mode, with its activation buffers and
cumulative pooling, is not part of the zoo: the paper's parameter counts match Base mode at 400 classes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .layers import SqueezeExcite3d, VideoClassifier, make_divisible
from .registry import register_model
from .spec import ModelSpec

__all__ = ["MovinetBlockConfig", "MovinetConfig", "MoViNet", "MovinetBlock", "ConvBnAct3d"]

BN_EPS = 1e-3


@dataclass(frozen=True)
class MovinetBlockConfig:
    """One MBConv-3D block: a row of the port's configuration table.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        expanded: channels of the depthwise conv (the expansion width).
        kernel: depthwise kernel (t, h, w).
        stride: spatial stride of the depthwise conv (temporal stride is always 1).
        spatial_pad: pad the depthwise conv by k//2 spatially and the shortcut's average pool by 1; False for the
            port's unpadded strided blocks (A0's b1_l0 and b2_l0), which use no spatial padding in either.
    """

    in_channels: int
    out_channels: int
    expanded: int
    kernel: tuple[int, int, int]
    stride: int = 1
    spatial_pad: bool = True


@dataclass(frozen=True)
class MovinetConfig:
    """A MoViNet: stem width, blocks grouped by stage (named ``b{stage}_l{layer}`` as in the port), head widths."""

    stem_width: int
    stages: tuple[tuple[MovinetBlockConfig, ...], ...]
    head_width: int
    hidden: int = 2048
    dropout: float = 0.2


class ConvBnAct3d(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d (eps 1e-3) -> activation (identity if None)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), padding: tuple[int, int, int] = (0, 0, 0), groups: int = 1,
                 act_layer: type[nn.Module] | None = nn.SiLU):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm3d(out_ch, eps=BN_EPS)
        self.act = act_layer() if act_layer is not None else nn.Identity()


class MovinetBlock(nn.Module):
    """MBConv-3D: expand 1x1x1 -> depthwise k (stride) -> SE -> project 1x1x1; output = shortcut + alpha * branch.

    The shortcut is the identity, or [AvgPool3d (1, 3, 3) with the block's stride, if strided] + 1x1x1 conv + BN
    when the stride or the width changes. ``alpha`` is a ReZero scalar initialised to 0.
    """

    def __init__(self, cfg: MovinetBlockConfig):
        super().__init__()
        s = cfg.stride
        kt, kh, kw = cfg.kernel
        pad = (kt // 2, kh // 2, kw // 2) if cfg.spatial_pad else (kt // 2, 0, 0)
        self.expand = (ConvBnAct3d(cfg.in_channels, cfg.expanded) if cfg.expanded != cfg.in_channels
                       else nn.Identity())
        self.deep = ConvBnAct3d(cfg.expanded, cfg.expanded, cfg.kernel, stride=(1, s, s), padding=pad,
                                groups=cfg.expanded)
        self.se = SqueezeExcite3d(cfg.expanded, make_divisible(cfg.expanded // 4, 8), act_layer=nn.SiLU)
        self.project = ConvBnAct3d(cfg.expanded, cfg.out_channels, act_layer=None)
        self.res = None
        if s != 1 or cfg.in_channels != cfg.out_channels:
            layers: list[nn.Module] = []
            if s != 1:
                pad_avg = (0, 1, 1) if cfg.spatial_pad else (0, 0, 0)
                layers.append(nn.AvgPool3d((1, 3, 3), stride=(1, s, s), padding=pad_avg))
            layers.append(ConvBnAct3d(cfg.in_channels, cfg.out_channels, act_layer=None))
            self.res = nn.Sequential(*layers)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.res is None else self.res(x)
        x = self.project(self.se(self.deep(self.expand(x))))
        return shortcut + self.alpha * x


class MoViNet(VideoClassifier):
    """MoViNet Base: stem 1x3x3 conv (stride 2) -> MBConv-3D blocks -> conv7 -> global mean -> 1x1x1 conv head.

    The head is ``classifier``: 1x1x1 conv to ``hidden`` -> Swish -> dropout -> 1x1x1 conv to the classes, which is
    the classifier proper (``classifier.3``, a Conv3d); ``num_features`` is ``hidden``, the width it reads.
    """

    classifier_name = "classifier.3"

    def __init__(self, cfg: MovinetConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.conv1 = ConvBnAct3d(3, cfg.stem_width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        blocks, width = OrderedDict(), cfg.stem_width
        for i, stage in enumerate(cfg.stages):
            for j, block in enumerate(stage):
                if block.in_channels != width:
                    raise ValueError(f"block b{i}_l{j} takes {block.in_channels} channels but gets {width}")
                blocks[f"b{i}_l{j}"] = MovinetBlock(block)
                width = block.out_channels
        self.blocks = nn.Sequential(blocks)
        self.conv7 = ConvBnAct3d(width, cfg.head_width)
        self.num_features = cfg.hidden
        self.classifier = nn.Sequential(
            nn.Conv3d(cfg.head_width, cfg.hidden, 1),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            nn.Conv3d(cfg.hidden, num_classes, 1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """The port's initialisation: Kaiming-normal fan-out convs with zero bias, unit BN."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, head_width, T, H', W') feature map after conv7."""
        return self.conv7(self.blocks(self.conv1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        hidden, act, dropout, classifier = self.classifier
        x = dropout(act(hidden(x.mean((2, 3, 4), keepdim=True))))
        return x.flatten(1) if pre_logits else classifier(x).flatten(1)

    def new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Conv3d(self.num_features, num_classes, 1)


B = MovinetBlockConfig

# Atze00 movinets/config.py, MoViNetA0 and MoViNetA2; a row is B(in, out, expanded, kernel, spatial stride).
MOVINET_A0 = MovinetConfig(
    stem_width=8,
    stages=(
        (B(8, 8, 24, (1, 5, 5), 2),),
        (B(8, 32, 80, (3, 3, 3), 2, spatial_pad=False),
         B(32, 32, 80, (3, 3, 3)),
         B(32, 32, 80, (3, 3, 3))),
        (B(32, 56, 184, (5, 3, 3), 2, spatial_pad=False),
         B(56, 56, 112, (3, 3, 3)),
         B(56, 56, 184, (3, 3, 3))),
        (B(56, 56, 184, (5, 3, 3)),
         B(56, 56, 184, (3, 3, 3)),
         B(56, 56, 184, (3, 3, 3)),
         B(56, 56, 184, (3, 3, 3))),
        (B(56, 104, 384, (5, 3, 3), 2),
         B(104, 104, 280, (1, 5, 5)),
         B(104, 104, 280, (1, 5, 5)),
         B(104, 104, 344, (1, 5, 5))),
    ),
    head_width=480,
)

MOVINET_A2 = MovinetConfig(
    stem_width=16,
    stages=(
        (B(16, 16, 40, (1, 5, 5), 2),
         B(16, 16, 40, (3, 3, 3)),
         B(16, 16, 64, (3, 3, 3))),
        (B(16, 40, 96, (3, 3, 3), 2),
         B(40, 40, 120, (3, 3, 3)),
         B(40, 40, 96, (3, 3, 3)),
         B(40, 40, 96, (3, 3, 3)),
         B(40, 40, 120, (3, 3, 3))),
        (B(40, 72, 240, (5, 3, 3), 2),
         B(72, 72, 160, (3, 3, 3)),
         B(72, 72, 240, (3, 3, 3)),
         B(72, 72, 192, (3, 3, 3)),
         B(72, 72, 240, (3, 3, 3))),
        (B(72, 72, 240, (5, 3, 3)),
         B(72, 72, 240, (3, 3, 3)),
         B(72, 72, 240, (3, 3, 3)),
         B(72, 72, 240, (3, 3, 3)),
         B(72, 72, 144, (1, 5, 5)),
         B(72, 72, 240, (3, 3, 3))),
        (B(72, 144, 480, (5, 3, 3), 2),
         B(144, 144, 384, (1, 5, 5)),
         B(144, 144, 384, (1, 5, 5)),
         B(144, 144, 480, (1, 5, 5)),
         B(144, 144, 480, (1, 5, 5)),
         B(144, 144, 480, (3, 3, 3)),
         B(144, 144, 576, (1, 3, 3))),
    ),
    head_width=640,
)

# Same code, small widths; A0's keeps an unpadded strided block like A0's b1_l0.
MOVINET_A0_TINY = MovinetConfig(
    stem_width=8,
    stages=(
        (B(8, 8, 16, (1, 3, 3), 2),),
        (B(8, 16, 32, (3, 3, 3), 2, spatial_pad=False),
         B(16, 16, 32, (3, 3, 3))),
        (B(16, 24, 48, (3, 3, 3), 2),),
    ),
    head_width=64,
    hidden=128,
)

MOVINET_A2_TINY = MovinetConfig(
    stem_width=8,
    stages=(
        (B(8, 8, 16, (1, 3, 3), 2),),
        (B(8, 16, 32, (3, 3, 3), 2),
         B(16, 16, 40, (1, 3, 3))),
        (B(16, 24, 48, (5, 3, 3), 2),),
    ),
    head_width=64,
    hidden=128,
)

_SOURCE = "Atze00/MoViNet-pytorch (Base: causal=False, conv_type='3d', tf_like=False)"
# PyTorch's AvgPool3d needs an unpadded input of at least its 3x3 kernel, so the shortcut pool of b4_l0 needs a
# 3 px map: 57 px frames for A0 (two unpadded strided blocks) and 33 px for A2.

register_model(
    ModelSpec(
        name="movinet-a0", paper_name="MoViNet-A0", category="baseline", paper_params_m=2.7,
        params=2_701_999, flops=2_438_833_920,
        version="MoViNet-A0 Base (non-causal, 3-D conv)", source=_SOURCE,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), min_size=57, size_multiple=1,
    ),
    MoViNet, full=MOVINET_A0, tiny=MOVINET_A0_TINY,
)

register_model(
    ModelSpec(
        name="movinet-a2", paper_name="MoViNet-A2", category="baseline", paper_params_m=4.8,
        params=4_839_762, flops=7_401_291_264,
        version="MoViNet-A2 Base (non-causal, 3-D conv)", source=_SOURCE,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), min_size=33, size_multiple=1,
    ),
    MoViNet, full=MOVINET_A2, tiny=MOVINET_A2_TINY,
)
