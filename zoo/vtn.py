"""VTN-R50 and VTN-EFF: a per-frame 2-D CNN followed by a temporal transformer (Neimark et al., ICCV-W 2021,
arXiv 2102.00719).

Reference: bomri/SlowFast (the official VTN: ViT-B per frame, a 3-layer Longformer over frame tokens, MLP head,
about 114M parameters). The paper's lightweight versions (26.5M and 6.8M) are pinned by both parameter counts at
once: ResNet-50 or EfficientNet-B0 per frame -> global average pool -> Linear to 256 -> [CLS] + learned
positions -> three encoder layers (d 256, MLP 1024) -> LayerNorm -> Linear (26.51M and 6.81M). With 17 tokens,
full attention replaces the Longformer's sliding chunks, which neither exports reliably nor saves work here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vcompile.zoo.layers import TokenClassifier, batch_to_frames, create_trunk, frames_to_batch
from vcompile.zoo.registry import register_model
from vcompile.zoo.spec import ModelSpec

__all__ = ["VtnConfig", "VTN"]


@dataclass(frozen=True)
class VtnConfig:
    trunk: str = "resnet50"
    trunk_args: dict = field(default_factory=dict)
    dim: int = 256
    depth: int = 3
    heads: int = 4
    mlp_hidden: int = 1024
    dropout: float = 0.1


class VTN(nn.Module):
    """Per-frame CNN features -> projection -> temporal transformer with a [CLS] token -> logits."""

    def __init__(self, cfg: VtnConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.frames = frames
        self.trunk = create_trunk(cfg.trunk, **cfg.trunk_args)
        self.proj = nn.Linear(self.trunk.num_features, cfg.dim)
        self.temporal = TokenClassifier(cfg.dim, frames, cfg.depth, cfg.heads, cfg.mlp_hidden, num_classes,
                                        drop=cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = batch_to_frames(self.proj(self.trunk(frames_to_batch(x))), self.frames)  # (B, T, dim)
        return self.temporal(tokens)


TINY_RESNET = dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8)
_TINY_HEAD = dict(dim=32, depth=2, heads=2, mlp_hidden=64)

_VTN_SOURCE = "bomri/SlowFast (official VTN); lightweight head inferred from the paper's parameter counts"
register_model(
    ModelSpec(
        name="vtn-r50", paper_name="VTN-R50", category="composite transformer", paper_params_m=26.5,
        version="ResNet-50 per frame + 3 temporal transformer layers (d 256)", source=_VTN_SOURCE,
    ),
    VTN, full=VtnConfig(), tiny=VtnConfig(trunk_args=TINY_RESNET, **_TINY_HEAD),
)
register_model(
    ModelSpec(
        name="vtn-eff", paper_name="VTN-EFF", category="composite transformer", paper_params_m=6.8,
        version="EfficientNet-B0 per frame + 3 temporal transformer layers (d 256)", source=_VTN_SOURCE,
        aliases=("vtn-effnet", "vtn-efficientnet"),
    ),
    VTN, full=VtnConfig(trunk="efficientnet_b0"), tiny=VtnConfig(trunk="test_efficientnet", **_TINY_HEAD),
)
