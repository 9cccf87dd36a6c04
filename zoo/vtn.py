"""VTN-R50 and VTN-EFF: a per-frame 2-D CNN followed by a temporal transformer (Neimark et al., ICCV-W 2021,
arXiv 2102.00719).

Reference: bomri/SlowFast (the official VTN: ViT-B per frame, a 3-layer Longformer over frame tokens, MLP head,
about 114M parameters). The paper's lightweight versions (26.5M and 6.8M) are pinned by both parameter counts at
once: ResNet-50 or EfficientNet-B0 per frame -> global average pool -> Linear to 256 -> [CLS] + learned
positions -> three encoder layers (d 256, MLP 1024) -> LayerNorm -> Linear (26.51M and 6.81M). With 17 tokens,
full attention replaces the Longformer's sliding chunks, which neither exports reliably nor saves work here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import TINY_TRUNKS, TokenClassifier, TrunkConfig, VideoClassifier, batch_to_frames, frames_to_batch
from .registry import register_model
from .spec import ModelSpec

__all__ = ["VtnConfig", "VTN"]


@dataclass(frozen=True)
class VtnConfig:
    trunk: TrunkConfig = TrunkConfig("resnet50")
    dim: int = 256
    depth: int = 3
    heads: int = 4
    mlp_hidden: int = 1024
    dropout: float = 0.1


class VTN(VideoClassifier):
    """Per-frame CNN features -> projection -> temporal transformer with a [CLS] token -> logits."""

    classifier_name = "temporal.head"

    def __init__(self, cfg: VtnConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.frames = frames
        self.trunk = cfg.trunk.create()
        self.proj = nn.Linear(self.trunk.num_features, cfg.dim)
        self.temporal = TokenClassifier(cfg.dim, frames, cfg.depth, cfg.heads, cfg.mlp_hidden, num_classes,
                                        drop=cfg.dropout)
        self.num_features = cfg.dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1 + T, dim): the temporal encoder's normalised tokens, [CLS] first."""
        tokens = batch_to_frames(self.proj(self.trunk(frames_to_batch(x))), self.frames)  # (B, T, dim)
        return self.temporal.forward_features(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.temporal.forward_head(x, pre_logits)


_TINY_HEAD = dict(dim=32, depth=2, heads=2, mlp_hidden=64)

_VTN_SOURCE = "bomri/SlowFast (official VTN); lightweight head inferred from the paper's parameter counts"
register_model(
    ModelSpec(
        name="vtn-r50", paper_name="VTN-R50", category="composite transformer", paper_params_m=26.5,
        params=26_509_776, flops=130_886_446_080,
        version="ResNet-50 per frame + 3 temporal transformer layers (d 256)", source=_VTN_SOURCE,
    ),
    VTN, full=VtnConfig(), tiny=VtnConfig(trunk=TINY_TRUNKS["resnet50"], **_TINY_HEAD),
)
register_model(
    ModelSpec(
        name="vtn-eff", paper_name="VTN-EFF", category="composite transformer", paper_params_m=6.8,
        params=6_812_684, flops=12_396_906_496,
        version="EfficientNet-B0 per frame + 3 temporal transformer layers (d 256)", source=_VTN_SOURCE,
        aliases=("vtn-effnet", "vtn-efficientnet"),
    ),
    VTN, full=VtnConfig(trunk=TrunkConfig("efficientnet_b0")),
    tiny=VtnConfig(trunk=TINY_TRUNKS["efficientnet_b0"], **_TINY_HEAD),
)
