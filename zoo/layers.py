"""Blocks shared by several families, written to export: rank <= 5, static shapes, no in-place slice writes.

Rules every zoo model follows (the compile targets depend on them):
- tensors of rank 5 at most; no ``torch.roll``; no in-place writes into slices; no einops;
- no Python-side state and no data-dependent control flow; every shape follows from the constructor;
- masks and index tables are computed once, on the CPU (`cpu_table`), and kept as buffers;
- nothing moves itself to a device (no ``.cuda()``).
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "frames_to_batch",
    "batch_to_frames",
    "make_divisible",
    "cpu_table",
    "create_trunk",
    "Attention",
    "Mlp",
    "TransformerEncoderLayer",
    "TokenClassifier",
    "SqueezeExcite3d",
]


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), frames of one clip adjacent, for per-frame 2-D trunks."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B*T, ...) -> (B, T, ...): undo `frames_to_batch` on per-frame features."""
    return x.reshape(-1, frames, *x.shape[1:])


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, not going more than 10% below it (MobileNet rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def cpu_table(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Compute an index table or mask on the CPU, even while a model is being built on the meta device."""
    with torch.device("cpu"):
        return fn()


def create_trunk(timm_name: str, **kwargs) -> nn.Module:
    """A randomly initialised timm image model without its classifier (``num_classes=0``: pooled features)."""
    return timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, D) tokens with a fused qkv projection.

    Uses `F.scaled_dot_product_attention`, which picks fused kernels in eager mode and exports to
    MatMul/Softmax; the (B, N, 3, heads, head_dim) view keeps the rank at 5.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    """Linear -> activation -> Linear, as in ViT."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerEncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + Attn(LN(x)), then x + MLP(LN(x)).

    Written out rather than taken from `nn.TransformerEncoderLayer`, whose inference fast path
    (`_native_multi_head_attention`) does not export everywhere.
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qkv_bias: bool = True, drop: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenClassifier(nn.Module):
    """A sequence classifier over (B, N, D) tokens: [CLS] + learned positions -> encoder layers -> LN -> Linear.

    The temporal head of the composite transformers (VTN, I3D-BERT) and of ViViT's factorised encoder.
    """

    def __init__(self, dim: int, tokens: int, depth: int, heads: int, mlp_hidden: int, num_classes: int,
                 drop: float = 0.0, head_drop: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[TransformerEncoderLayer(dim, heads, mlp_hidden, drop=drop, norm_eps=norm_eps)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head_drop = nn.Dropout(head_drop)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat((cls, tokens), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(self.head_drop(x[:, 0]))


class SqueezeExcite3d(nn.Module):
    """Squeeze-and-excitation over (B, C, T, H, W): global mean -> 1x1x1 conv -> act -> 1x1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1 = nn.Conv3d(channels, reduced, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv3d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3, 4), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(scale))))
