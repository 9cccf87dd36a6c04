"""X3D-XS (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020, arXiv 2004.04730).

Reference: facebookresearch/pytorchvideo `models/x3d.py` (`create_x3d`, hub `x3d_xs`) and SlowFast
`configs/Kinetics/X3D_XS.yaml`: width factor 2.0, depth factor 2.2, bottleneck factor 2.25, SE (ratio 1/16) on every
other block, Swish inside the bottleneck and ReLU elsewhere. X3D-XS, -S and -M share these weights and differ only in
input size; at the paper's 16 x 224 x 224 clip the compute is X3D-M's.

Differences from pytorchvideo, none of which changes the parameters or the function at the reference input sizes:
the head pools with a global mean instead of an `AvgPool3d` whose kernel is tied to the build-time input size, and it
returns logits (no softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import SqueezeExcite3d, VideoClassifier, make_divisible
from .registry import register_model
from .spec import KINETICS_MEAN, KINETICS_STD, ModelSpec

__all__ = ["X3dConfig", "X3D", "X3dBlock"]


@dataclass(frozen=True)
class X3dConfig:
    """An X3D network, with the width and depth factors already applied.

    Args:
        stem_width: channels of the stem (12 x width factor 2.0).
        stem_kernel_t: kernel length of the stem's depthwise temporal conv.
        widths: output channels of res2..res5.
        depths: blocks in res2..res5 (ceil of 1, 2, 5, 3 x depth factor 2.2).
        bottleneck_factor: inner (depthwise) width = int(factor x stage width).
        se_ratio: SE width = make_divisible(inner x ratio, 8), on blocks 0, 2, 4, ... of each stage.
        head_width: width of the head's second 1x1x1 conv (the first one widens to the last stage's inner width).
        dropout: dropout before the classifier.
    """

    stem_width: int = 24
    stem_kernel_t: int = 5
    widths: tuple[int, ...] = (24, 48, 96, 192)
    depths: tuple[int, ...] = (3, 5, 11, 7)
    bottleneck_factor: float = 2.25
    se_ratio: float = 0.0625
    head_width: int = 2048
    dropout: float = 0.5


class X3dBlock(nn.Module):
    """X3D residual bottleneck: 1x1x1 -> depthwise 3x3x3 (+ SE) -> Swish -> 1x1x1, added to the shortcut, then ReLU.

    As in pytorchvideo, a strided block whose width does not change gets a 1x1x1 shortcut conv without BN; a block
    that changes width gets conv + BN.
    """

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, stride: int, se_width: int):
        super().__init__()
        self.shortcut_conv = (nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
                              if dim_in != dim_out or stride > 1 else None)
        self.shortcut_bn = nn.BatchNorm3d(dim_out) if dim_in != dim_out else None
        self.conv_a = nn.Conv3d(dim_in, dim_inner, 1, bias=False)
        self.bn_a = nn.BatchNorm3d(dim_inner)
        self.act_a = nn.ReLU()
        self.conv_b = nn.Conv3d(dim_inner, dim_inner, 3, stride=(1, stride, stride), padding=1, groups=dim_inner,
                                bias=False)
        self.bn_b = nn.BatchNorm3d(dim_inner)
        self.se = SqueezeExcite3d(dim_inner, se_width) if se_width else nn.Identity()
        self.act_b = nn.SiLU()
        self.conv_c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.bn_c = nn.BatchNorm3d(dim_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(shortcut)
        if self.shortcut_bn is not None:
            shortcut = self.shortcut_bn(shortcut)
        x = self.act_a(self.bn_a(self.conv_a(x)))
        x = self.act_b(self.se(self.bn_b(self.conv_b(x))))
        x = self.bn_c(self.conv_c(x))
        return self.act(shortcut + x)


class X3dStem(nn.Module):
    """Spatial 1x3x3 conv (stride 2) -> depthwise temporal kx1x1 conv -> BN -> ReLU."""

    def __init__(self, width: int, kernel_t: int):
        super().__init__()
        self.conv_xy = nn.Conv3d(3, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(width, width, (kernel_t, 1, 1), padding=(kernel_t // 2, 0, 0), groups=width,
                                bias=False)
        self.bn = nn.BatchNorm3d(width)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_t(self.conv_xy(x))))


class X3D(VideoClassifier):
    """X3D: stem -> res2..res5 (spatial stride 2 each, temporal stride 1) -> projected-pool head -> logits.

    ``num_features`` is the head's width after pooling (``head_width``), which the classifier reads.
    """

    classifier_name = "fc"

    def __init__(self, cfg: X3dConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.stem = X3dStem(cfg.stem_width, cfg.stem_kernel_t)
        stages, dim_in = [], cfg.stem_width
        for width, depth in zip(cfg.widths, cfg.depths, strict=True):
            inner = int(cfg.bottleneck_factor * width)
            se_width = make_divisible(inner * cfg.se_ratio, 8) if cfg.se_ratio else 0
            stages.append(nn.Sequential(*[
                X3dBlock(dim_in if i == 0 else width, inner, width, stride=2 if i == 0 else 1,
                         se_width=se_width if i % 2 == 0 else 0)
                for i in range(depth)
            ]))
            dim_in = width
        self.stages = nn.Sequential(*stages)
        head_inner = int(cfg.bottleneck_factor * cfg.widths[-1])
        self.head_conv = nn.Conv3d(dim_in, head_inner, 1, bias=False)
        self.head_bn = nn.BatchNorm3d(head_inner)
        self.head_act = nn.ReLU()
        self.post_conv = nn.Conv3d(head_inner, cfg.head_width, 1, bias=False)
        self.post_act = nn.ReLU()
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_features = cfg.head_width
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """pytorchvideo's "resnet" initialisation: MSRA fan-out convs, unit BN, N(0, 0.01) classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, X3dBlock):
                nn.init.zeros_(m.bn_c.weight)  # SlowFast ZERO_INIT_FINAL_BN
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 192, T, H/32, W/32) feature map of res5."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """1x1x1 conv -> global mean -> 1x1x1 conv to ``head_width`` -> dropout -> classifier."""
        x = self.head_act(self.head_bn(self.head_conv(x)))
        x = self.post_act(self.post_conv(x.mean((2, 3, 4), keepdim=True)))
        x = self.dropout(x.flatten(1))
        return x if pre_logits else self.fc(x)


X3D_XS = X3dConfig()
X3D_TINY = X3dConfig(stem_width=8, widths=(8, 16, 24, 32), depths=(2, 1, 1, 1), head_width=64)

register_model(
    ModelSpec(
        name="x3d-xs", paper_name="X3D-XS", category="baseline", paper_params_m=3.8,
        params=3_794_274, flops=9_464_937_472,
        version="X3D-XS (width 2.0, depth 2.2, bottleneck 2.25); at 16x224 its compute is X3D-M's",
        source="facebookresearch/pytorchvideo (create_x3d, hub x3d_xs)",
        mean=KINETICS_MEAN, std=KINETICS_STD, min_size=32, size_multiple=1, aliases=("x3d",),
    ),
    X3D, full=X3D_XS, tiny=X3D_TINY,
)
