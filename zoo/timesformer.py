"""TimeSformer-Base with divided space-time attention (Bertasius, Wang, Torresani, ICML 2021, arXiv 2102.05095).

Reference: facebookresearch/TimeSformer (`timesformer/models/vit.py`, `vit_base_patch16_224`, attention_type
``divided_space_time``): ViT-B/16 on every frame, with a temporal attention (own LayerNorm, attention and
``temporal_fc``) before the spatial attention of every block; the CLS token joins each frame's spatial attention and
its outputs are averaged over frames. Parameter names follow the reference, so its checkpoints load unchanged.

Patch tokens are kept time-major, ``(t h w)``, where the reference orders them ``(h w t)``. Every operation is
per-token or within a temporal/spatial group, so the mathematics is identical; the time-major order makes the patch
embedding and the spatial grouping plain reshapes, and each block needs one transpose each way around its temporal
attention. No einops, tensors of rank 4 at most, and the embeddings are built at exactly the clip length and grid
size, so the reference's interpolation branches do not exist here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import Attention, Mlp, VideoClassifier, drop_path_layer, frames_to_batch
from .registry import register_model
from .spec import ModelSpec

__all__ = ["TimesformerConfig", "PatchEmbed", "DividedSpaceTimeBlock", "TimeSformer"]


@dataclass(frozen=True)
class TimesformerConfig:
    patch_size: int = 16
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.1
    norm_eps: float = 1e-6


class PatchEmbed(nn.Module):
    """Non-overlapping square patches of every frame: (N, 3, H, W) -> (N, H/p * W/p, dim), row-major grid."""

    def __init__(self, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention, then spatial attention (with the CLS token), then MLP, each residual.

    Tokens are (B, 1 + T*N, D): CLS first, then the patch tokens time-major (frame 0's N patches, frame 1's, ...).
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, *, frames: int, patches: int, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.frames, self.patches = frames, patches
        self.temporal_norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.temporal_attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.temporal_fc = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.drop_path = drop_path_layer(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n, d = self.frames, self.patches, x.shape[-1]
        cls, xp = x[:, :1], x[:, 1:]
        # Temporal attention: one sequence of T tokens per patch position, (B*N, T, D).
        xt = xp.reshape(-1, t, n, d).transpose(1, 2).reshape(-1, t, d)
        res = self.temporal_fc(self.drop_path(self.temporal_attn(self.temporal_norm1(xt))))
        xp = xp + res.reshape(-1, n, t, d).transpose(1, 2).reshape(-1, t * n, d)
        # Spatial attention: one sequence of CLS + N tokens per frame, (B*T, 1+N, D); CLS outputs averaged over T.
        xs = torch.cat((cls.expand(-1, t, -1).reshape(-1, 1, d), xp.reshape(-1, n, d)), dim=1)
        res = self.drop_path(self.attn(self.norm1(xs)))
        cls = cls + res[:, 0].reshape(-1, t, d).mean(dim=1, keepdim=True)
        x = torch.cat((cls, xp + res[:, 1:].reshape(-1, t * n, d)), dim=1)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TimeSformer(VideoClassifier):
    """ViT with divided space-time attention over a (B, 3, T, H, W) clip; classifies the final CLS token."""

    classifier_name = "head"

    def __init__(self, cfg: TimesformerConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        grid = size // cfg.patch_size
        self.frames, self.patches, dim = frames, grid * grid, cfg.dim
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches + 1, dim))
        self.time_embed = nn.Parameter(torch.zeros(1, frames, dim))
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.Sequential(*[
            DividedSpaceTimeBlock(dim, cfg.heads, int(dim * cfg.mlp_ratio), frames=frames, patches=self.patches,
                                  qkv_bias=cfg.qkv_bias, drop_path=rate, norm_eps=cfg.norm_eps)
            for rate in rates])
        self.num_features = dim
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for block in list(self.blocks)[1:]:  # the reference starts every temporal branch but the first at zero
            nn.init.zeros_(block.temporal_fc.weight)
            nn.init.zeros_(block.temporal_fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1 + T*N, dim): the last block's tokens, CLS first, patches time-major."""
        t, n = self.frames, self.patches
        x = self.patch_embed(frames_to_batch(x))  # (B*T, N, D)
        d = x.shape[-1]
        x = x.reshape(-1, t, n, d) + self.pos_embed[:, 1:].unsqueeze(1) + self.time_embed.unsqueeze(2)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.blocks(torch.cat((cls, x.reshape(-1, t * n, d)), dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x[:, 0])  # LayerNorm is per token: only CLS is needed
        return x if pre_logits else self.head(x)


register_model(
    ModelSpec(
        name="timesformer", paper_name="TimeSformer", category="attention-only", paper_params_m=121.0,
        params=121_572_496, flops=784_132_104_192,
        version="TimeSformer-Base, ViT-B/16 with divided space-time attention",
        source="facebookresearch/TimeSformer", min_size=16, size_multiple=16,
        aliases=("timesformer-b", "timesformer-divst"),
    ),
    TimeSformer, full=TimesformerConfig(), tiny=TimesformerConfig(dim=64, depth=2, heads=2),
)
