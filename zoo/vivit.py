"""ViViT factorised encoder (Arnab et al., ICCV 2021, arXiv 2103.15691), in the paper's DeiT-small version.

Reference read: google-research/scenic (`projects/vivit/model.py`, class `SpaceTimeViViT` with
``attention_config.type='factorized_encoder'``): a spatial ViT encoder shared by every time step, whose CLS outputs
form the tokens of a temporal encoder with its own CLS token, learned positions and final LayerNorm, then a linear
classifier. The paper's 25.4M parameters are matched (25.38M) only by a timm ``deit_small_patch16_224`` applied to
each frame with 2-D 16x16 patches (no tubelets) and a 2-layer temporal encoder of the same width; this version is
inferred from that count (zoo-configs.md, section 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layers import TINY_TRUNKS, TokenClassifier, TrunkConfig, VideoClassifier, batch_to_frames, frames_to_batch
from .registry import register_model
from .spec import ModelSpec

__all__ = ["VivitConfig", "ViViTFactorisedEncoder"]


@dataclass(frozen=True)
class VivitConfig:
    trunk: TrunkConfig = TrunkConfig("deit_small_patch16_224")
    temporal_depth: int = 2
    temporal_heads: int = 6
    temporal_mlp_ratio: float = 4.0


class ViViTFactorisedEncoder(VideoClassifier):
    """Per-frame ViT (its CLS output after the final LayerNorm) -> temporal transformer over the T frame tokens."""

    classifier_name = "temporal.head"

    def __init__(self, cfg: VivitConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        self.frames = frames
        self.trunk = cfg.trunk.create(img_size=size)
        self.num_features = dim = self.trunk.num_features
        self.temporal = TokenClassifier(dim, frames, cfg.temporal_depth, cfg.temporal_heads,
                                        int(dim * cfg.temporal_mlp_ratio), num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1 + T, dim): the temporal encoder's normalised tokens, [CLS] first."""
        return self.temporal.forward_features(batch_to_frames(self.trunk(frames_to_batch(x)), self.frames))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.temporal.forward_head(x, pre_logits)


register_model(
    ModelSpec(
        name="vivit-fe", paper_name="ViViT-FE", category="attention-only", paper_params_m=25.4,
        params=25_376_272, flops=147_273_464_832,
        version="factorised encoder: DeiT-S per frame (16x16 2-D patches) + 2-layer temporal encoder",
        source="google-research/scenic (projects/vivit); spatial encoder timm deit_small_patch16_224",
        min_size=16, size_multiple=16, aliases=("vivit", "vivit-factorised-encoder", "vivit-factorized-encoder"),
    ),
    ViViTFactorisedEncoder, full=VivitConfig(),
    tiny=VivitConfig(trunk=TINY_TRUNKS["deit_small_patch16_224"], temporal_heads=2),
)
