"""MViT-S: Multiscale Vision Transformer v1, small (Fan et al., ICCV 2021, arXiv 2104.11227).

References read: torchvision `models/video/mvit.py` (`MViT`, `mvit_v1_b`), SlowFast `MVIT_B_16x4_CONV.yaml` and
pytorchvideo `create_multiscale_vision_transformers`. The paper's MViT-S (26.1M parameters) has no released
configuration; this one is the third-party reconstruction of `makecent/ProgPreTrain` (`small_16x4`): 16 blocks,
3x8x8 patches with stride 2x8x8 and padding 1x0x0 (8x28x28 tokens at 16x224x224), widths 128/256/512 with
1/2/4 heads, query pooling 1x2x2 at blocks 3 and 10, key/value pooling with an adaptive stride starting at 1x8x8,
conv pooling (depthwise Conv3d + LayerNorm), separable absolute positions and a class token. It reproduces the paper's
parameter count; `mvit_v1_from_torchvision` maps torchvision's weights of the same configuration.

Written for export, unlike the references: the token grids are Python ints fixed in the constructor, the class
token is split off by slicing (no `tensor_split`), pooling folds heads into the batch so tensors stay rank 5,
positional embeddings and shortcuts are added out of place, and attention is `F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Mlp, VideoClassifier, drop_path_layer
from .registry import register_model
from .spec import KINETICS_MEAN, KINETICS_STD, ModelSpec

__all__ = ["MvitConfig", "BlockSetting", "block_table", "TokenPool", "PoolingAttention", "MultiscaleBlock", "MViT",
           "mvit_v1_from_torchvision"]

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class MvitConfig:
    """MViT v1 architecture. At each block in ``stage_starts`` the query grid is pooled by ``q_stride`` and the
    heads double; the block before it doubles the width in its MLP. The key/value stride starts at ``kv_stride``
    and is divided by ``q_stride`` at every stage start, so keys and values stay at the same coarse grid."""

    embed_dim: int = 128
    depth: int = 16
    heads: int = 1
    stage_starts: tuple[int, ...] = (3, 10)
    patch_kernel: Triple = (3, 8, 8)
    patch_stride: Triple = (2, 8, 8)
    patch_padding: Triple = (1, 0, 0)
    pool_kernel: Triple = (3, 3, 3)
    q_stride: Triple = (1, 2, 2)
    kv_stride: Triple = (1, 8, 8)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.2
    dropout: float = 0.5
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class BlockSetting:
    """One block of the per-block table (the form of torchvision's `MSBlockConfig`); empty strides: no pooling."""

    heads: int
    dim: int
    dim_out: int
    stride_q: tuple[int, ...]
    stride_kv: Triple


def block_table(cfg: MvitConfig) -> list[BlockSetting]:
    """Expand a config into per-block widths, heads and pooling strides (SlowFast's adaptive kv-stride rule)."""
    table, dim, heads, kv = [], cfg.embed_dim, cfg.heads, cfg.kv_stride
    for i in range(cfg.depth):
        stride_q: tuple[int, ...] = ()
        if i in cfg.stage_starts:
            heads, stride_q = heads * 2, cfg.q_stride
            kv = tuple(max(k // q, 1) for k, q in zip(kv, cfg.q_stride))
        dim_out = dim * 2 if i + 1 in cfg.stage_starts else dim
        table.append(BlockSetting(heads, dim, dim_out, stride_q, kv))
        dim = dim_out
    return table


def _pooled_size(grid: Triple, kernel: Triple, stride: Triple, padding: Triple) -> Triple:
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(grid, kernel, stride, padding))


class TokenPool(nn.Module):
    """Conv pooling of per-head tokens: depthwise Conv3d over the token grid, class token kept, then LayerNorm.

    Takes and returns (B, heads, 1 + T*H*W, head_dim); the grid is folded as (B*heads, head_dim, T, H, W), a
    channels-last view of the tokens, so the convolution needs no transposing copy in and none out.
    """

    def __init__(self, head_dim: int, grid: Triple, kernel: Triple, stride: Triple, norm_eps: float = 1e-6):
        super().__init__()
        padding = tuple(k // 2 for k in kernel)
        self.grid = grid
        self.out_grid = _pooled_size(grid, kernel, stride, padding)
        self.conv = nn.Conv3d(head_dim, head_dim, kernel, stride=stride, padding=padding, groups=head_dim, bias=False)
        self.norm = nn.LayerNorm(head_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, heads, _, c = x.shape
        tokens = x[:, :, 1:].reshape(b * heads, *self.grid, c).permute(0, 4, 1, 2, 3)  # channels-last Conv3d input
        tokens = self.conv(tokens).permute(0, 2, 3, 4, 1).reshape(b, heads, -1, c)
        return self.norm(torch.cat((x[:, :, :1], tokens), dim=2))


class PoolingAttention(nn.Module):
    """Multi-head pooling attention (MViT v1): queries, keys and values pooled on the token grid, no residual pool."""

    def __init__(self, dim: int, heads: int, grid: Triple, kernel: Triple, stride_q: tuple[int, ...],
                 stride_kv: Triple, qkv_bias: bool = True, norm_eps: float = 1e-6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pool_q = TokenPool(self.head_dim, grid, kernel, stride_q, norm_eps) if stride_q else None
        pool_kv = math.prod(kernel) > 1 or math.prod(stride_kv) > 1
        self.pool_k = TokenPool(self.head_dim, grid, kernel, stride_kv, norm_eps) if pool_kv else None
        self.pool_v = TokenPool(self.head_dim, grid, kernel, stride_kv, norm_eps) if pool_kv else None
        self.out_grid = self.pool_q.out_grid if self.pool_q is not None else grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.pool_q is not None:
            q = self.pool_q(q)
        if self.pool_k is not None:
            k, v = self.pool_k(k), self.pool_v(v)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, -1, d))


class MultiscaleBlock(nn.Module):
    """MViT v1 block: x + Attn(LN(x)) with a max-pooled shortcut when queries are pooled, then the MLP, which
    changes the width (the shortcut is then projected from LN(x), as in SlowFast and torchvision)."""

    def __init__(self, setting: BlockSetting, grid: Triple, cfg: MvitConfig, drop_path: float = 0.0):
        super().__init__()
        dim, dim_out = setting.dim, setting.dim_out
        self.grid = grid
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = PoolingAttention(dim, setting.heads, grid, cfg.pool_kernel, setting.stride_q, setting.stride_kv,
                                     cfg.qkv_bias, cfg.norm_eps)
        self.out_grid = self.attn.out_grid
        self.pool_skip = None
        if setting.stride_q:
            kernel = tuple(s + 1 if s > 1 else s for s in setting.stride_q)
            self.pool_skip = nn.MaxPool3d(kernel, setting.stride_q, tuple(k // 2 for k in kernel))
        self.drop_path = drop_path_layer(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), dim_out)
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_skip is None:
            return x
        b, _, c = x.shape
        tokens = self.pool_skip(x[:, 1:].reshape(b, *self.grid, c).permute(0, 4, 1, 2, 3))
        return torch.cat((x[:, :1], tokens.permute(0, 2, 3, 4, 1).reshape(b, -1, c)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._skip(x) + self.drop_path(self.attn(self.norm1(x)))
        x_norm = self.norm2(x)
        shortcut = x if self.proj is None else self.proj(x_norm)
        return shortcut + self.drop_path(self.mlp(x_norm))


class MViT(VideoClassifier):
    """MViT v1: Conv3d patches, [CLS] + separable positions, multiscale blocks, LN, dropout, linear classifier."""

    classifier_name = "head"

    def __init__(self, cfg: MvitConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_embed = nn.Conv3d(3, dim, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding)
        self.grid = _pooled_size((frames, size, size), cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding)
        t, h, w = self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, 1, h * w, dim))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, 1, dim))
        self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, dim))
        blocks, grid = [], self.grid
        for i, setting in enumerate(block_table(cfg)):
            blocks.append(MultiscaleBlock(setting, grid, cfg, drop_path=cfg.drop_path * i / max(cfg.depth - 1, 1)))
            grid = blocks[-1].out_grid
        self.blocks = nn.Sequential(*blocks)
        self.num_features = blocks[-1].mlp.fc2.out_features
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.cls_token, self.pos_embed_spatial, self.pos_embed_temporal, self.pos_embed_class):
            nn.init.trunc_normal_(p, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1 + t*h*w, C): the normalised tokens of the last block's grid, [CLS] first."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        pos = (self.pos_embed_temporal + self.pos_embed_spatial).reshape(1, -1, x.shape[2])
        pos = torch.cat((self.pos_embed_class, pos), dim=1)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + pos
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)


def mvit_v1_from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and reshape) a state dict of `torchvision.models.video.MViT` (v1 settings) for `MViT`."""
    renames = (("conv_proj.", "patch_embed."), ("attn.project.0.", "attn.proj."), ("pool.weight", "conv.weight"),
               ("norm_act.0.", "norm."), ("mlp.0.", "mlp.fc1."), ("mlp.3.", "mlp.fc2."), (".project.", ".proj."),
               ("head.1.", "head."))
    out = {}
    for key, value in state.items():
        if key.startswith("pos_encoding."):
            name = key.removeprefix("pos_encoding.")
            key, shape = {"class_token": ("cls_token", (1, 1)), "class_pos": ("pos_embed_class", (1, 1)),
                          "spatial_pos": ("pos_embed_spatial", (1, 1, -1)),
                          "temporal_pos": ("pos_embed_temporal", (1, -1, 1))}[name]
            value = value.reshape(*shape, value.shape[-1])
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


MVIT_S = MvitConfig()
MVIT_TINY = MvitConfig(embed_dim=16, depth=4, stage_starts=(1, 3), kv_stride=(1, 4, 4))

register_model(
    ModelSpec(
        name="mvit-s", paper_name="MViT-S", category="attention-only", paper_params_m=26.1,
        params=26_038_032, flops=50_682_147_328,
        version="MViT v1 small 16x4 (reconstructed: 128-256-512 wide, 1-2-4 heads, 3x8x8 patches)",
        source="torchvision MViT with a custom block_setting; makecent/ProgPreTrain small_16x4",
        mean=KINETICS_MEAN, std=KINETICS_STD, min_frames=2, frame_multiple=2, min_size=32, size_multiple=8,
        aliases=("mvit", "mvit-v1-s"),
    ),
    MViT, full=MVIT_S, tiny=MVIT_TINY,
)
