"""I3D-BERT: a 3-D CNN with one BERT layer for late temporal modelling (Kalfaoglu et al. 2020, arXiv 2008.01232).

Reference read: artest08/LateTemporalModeling3DCNN (`models/rgb_I3D.py`, `models/rgb_resneXt3D.py`,
`models/BERT/*`). The paper's version ("I3D ResNet50 + one BERT layer", 50.6M parameters) is not in that repository
(its I3D model is Inception-v1 with a 1024-d BERT, about 25M); the configuration here is inferred by parameter
matching: a fully-inflated I3D ResNet-50 (every 3x3 conv a 3x3x3 conv, 5x7x7 stem with temporal stride 2) gives
T/2 temporal tokens of 2048 channels, spatially averaged, reduced to 512 by a linear layer (the same as a 1x1x1
conv followed by the pooling, which commutes with it), then [CLS] + learned positions -> one pre-norm BERT layer
(d 512, 8 heads, FFN 2048, GELU) -> dropout 0.8 -> Linear. 50.59M parameters at 400 classes.

Rewritten for export: nothing moves itself to a device (the reference calls ``.cuda()`` in every forward), and the
Bernoulli token masking the reference applies while training (a regulariser, absent at inference) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import TokenClassifier, VideoClassifier
from .registry import register_model
from .spec import ModelSpec

__all__ = ["I3dBertConfig", "I3DBottleneck", "I3DResNet", "I3DBert"]


@dataclass(frozen=True)
class I3dBertConfig:
    layers: tuple[int, ...] = (3, 4, 6, 3)
    channels: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    stem_kernel: tuple[int, int, int] = (5, 7, 7)
    embed_dim: int = 512
    depth: int = 1
    heads: int = 8
    mlp_hidden: int = 2048
    drop: float = 0.1
    head_drop: float = 0.8


class I3DBottleneck(nn.Module):
    """ResNet bottleneck inflated to 3-D: 1x1x1 -> 3x3x3 (spatial stride) -> 1x1x1, expansion 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=(1, stride, stride), padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv3d(inplanes, out, 1, stride=(1, stride, stride), bias=False),
                                            nn.BatchNorm3d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


class I3DResNet(nn.Module):
    """Fully-inflated I3D ResNet trunk: (B, 3, T, H, W) -> (B, C, T/2, H/32, W/32). Names follow torchvision's."""

    def __init__(self, layers: tuple[int, ...], channels: tuple[int, ...], stem_width: int,
                 stem_kernel: tuple[int, int, int]):
        super().__init__()
        padding = tuple(k // 2 for k in stem_kernel)
        self.conv1 = nn.Conv3d(3, stem_width, stem_kernel, stride=2, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = stem_width
        for i, (depth, planes) in enumerate(zip(layers, channels, strict=True)):
            blocks = []
            for j in range(depth):
                blocks.append(I3DBottleneck(inplanes, planes, stride=2 if i > 0 and j == 0 else 1))
                inplanes = planes * I3DBottleneck.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class I3DBert(VideoClassifier):
    """I3D ResNet trunk -> per-token spatial mean -> Linear to the BERT width -> one BERT layer -> classifier."""

    classifier_name = "bert.head"

    def __init__(self, cfg: I3dBertConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.trunk = I3DResNet(cfg.layers, cfg.channels, cfg.stem_width, cfg.stem_kernel)
        self.reduce = nn.Linear(self.trunk.num_features, cfg.embed_dim)
        self.bert = TokenClassifier(cfg.embed_dim, frames // 2, cfg.depth, cfg.heads, cfg.mlp_hidden, num_classes,
                                    drop=cfg.drop, head_drop=cfg.head_drop)
        self.num_features = cfg.embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1 + T/2, embed_dim): the BERT layer's normalised tokens, [CLS] first."""
        tokens = self.trunk(x).mean((3, 4)).transpose(1, 2)  # (B, T/2, C)
        return self.bert.forward_features(self.reduce(tokens))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.bert.forward_head(x, pre_logits)


register_model(
    ModelSpec(
        name="i3d-bert", paper_name="I3D-BERT", category="composite transformer", paper_params_m=50.6,
        params=50_592_976, flops=132_211_066_880,
        version="fully-inflated I3D ResNet-50 + one BERT layer (d 512, 8 heads) over T/2 tokens",
        source="artest08/LateTemporalModeling3DCNN", min_frames=2, frame_multiple=2,
        aliases=("i3d-r50-bert",),
    ),
    I3DBert, full=I3dBertConfig(),
    tiny=I3dBertConfig(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, embed_dim=32, heads=2,
                       mlp_hidden=64),
)
