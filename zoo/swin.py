"""Swin-T: Video Swin Transformer, tiny (Liu et al., CVPR 2022, arXiv 2106.13230).

Reference: SwinTransformer/Video-Swin-Transformer (`mmaction/models/backbones/swin_transformer.py`,
`configs/recognition/swin/swin_tiny_patch244_window877_kinetics400_1k.py`) and torchvision's port
(`torchvision/models/video/swin_transformer.py`, `swin3d_t`), whose computation this file reproduces exactly:
torchvision's weights load through `state_dict_from_torchvision` and give the same logits.

Written for export. Every shape follows from (frames, size), so the window geometry (windows clipped to the
feature size, shifts dropped where clipped, padding to window multiples) is decided once in ``__init__``, and the
relative-position index and the shifted-window masks are tables built there. The window partition is a single
rank-5 permute (windows in (d, w, h) order, tokens in (h, d, w) order; the tables are built in the same order by
running the partition on a grid of positions), the cyclic shift is slices and concatenation instead of
``torch.roll``, and attention is `F.scaled_dot_product_attention` with the bias and mask as one additive mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Mlp, VideoClassifier, cpu_table, drop_path_layer
from .registry import register_model
from .spec import ModelSpec

__all__ = [
    "SwinConfig",
    "WindowLayout",
    "WindowAttention3d",
    "SwinBlock3d",
    "PatchMerging2d",
    "SwinTransformer3d",
    "cyclic_shift",
    "state_dict_from_torchvision",
]

Triple = tuple[int, int, int]
MASK_VALUE = -100.0  # the reference's value for token pairs from different regions of a shifted window


@dataclass(frozen=True)
class SwinConfig:
    patch: Triple = (2, 4, 4)
    dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: Triple = (8, 7, 7)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.1
    head_drop: float = 0.5
    norm_eps: float = 1e-5


def cyclic_shift(x: torch.Tensor, shifts: Triple) -> torch.Tensor:
    """``torch.roll(x, [-s for s in shifts], dims=(1, 2, 3))`` as slices and concatenation (out[i] = x[i + s])."""
    for dim, s in zip((1, 2, 3), shifts):
        if s:
            n = x.shape[dim]
            x = torch.cat((x.narrow(dim, s, n - s), x.narrow(dim, 0, s)), dim=dim)
    return x


@dataclass(frozen=True)
class WindowLayout:
    """Static geometry of (shifted) window attention on a (T, H, W) token grid, with its tables.

    As in the reference, an axis no longer than the window is covered by one window and not shifted; other axes
    are zero-padded (after the block's first LayerNorm) to a multiple of the window.
    """

    grid: Triple
    window: Triple  # the configured window; the relative-position table is sized by it
    shift: Triple

    @cached_property
    def geometry(self) -> tuple[Triple, Triple, Triple]:
        """(window, shift, pad) after clipping to the grid."""
        clipped = [g <= w for g, w in zip(self.grid, self.window)]
        win = tuple(g if c else w for g, w, c in zip(self.grid, self.window, clipped))
        shift = tuple(0 if c else s for s, c in zip(self.shift, clipped))
        pad = tuple(-g % w for g, w in zip(self.grid, win))
        return win, shift, pad

    @property
    def padded(self) -> Triple:
        return tuple(g + p for g, p in zip(self.grid, self.geometry[2]))

    @property
    def counts(self) -> Triple:
        return tuple(p // w for p, w in zip(self.padded, self.geometry[0]))

    @property
    def tokens(self) -> int:
        return math.prod(self.geometry[0])

    @property
    def num_windows(self) -> int:
        return math.prod(self.counts)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) on the padded grid -> (B * windows, tokens, C), one permute of rank 5."""
        (wd, wh, ww), (_, nh, nw), c = self.geometry[0], self.counts, x.shape[-1]
        if self.num_windows == 1:
            return x.reshape(-1, self.tokens, c)
        x = x.reshape(-1, wd, nh * wh, nw, ww * c).permute(0, 3, 2, 1, 4)  # (B*nd, nw, nh*wh, wd, ww*C)
        return x.reshape(-1, self.tokens, c)

    def reverse(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `partition`: (B * windows, tokens, C) -> (B, T, H, W, C) on the padded grid."""
        (wd, wh, ww), (_, nh, nw), c = self.geometry[0], self.counts, x.shape[-1]
        if self.num_windows > 1:
            x = x.reshape(-1, nw, nh * wh, wd, ww * c).permute(0, 3, 2, 1, 4)  # (B*nd, wd, nh*wh, nw, ww*C)
        return x.reshape(-1, *self.padded, c)

    def positions(self) -> torch.Tensor:
        """(windows, tokens): flat (d, h, w) position on the padded, shifted grid of every window slot."""
        grid = torch.arange(math.prod(self.padded)).reshape(1, *self.padded, 1)
        return self.partition(grid).reshape(self.num_windows, self.tokens)

    def bias_index(self) -> torch.Tensor:
        """(tokens * tokens,) rows of the relative-position table, for token pairs in partition order.

        Like the reference, a clipped window uses the first ``tokens`` rows and columns of the configured
        window's index (positions flattened in (d, h, w) order of the clipped window).
        """

        def build() -> torch.Tensor:
            win, (cd, ch, cw) = self.geometry[0], self.window
            pos = self.positions()[0]
            _, hp, wp = self.padded
            local = (pos // (hp * wp) % win[0] * win[1] + pos // wp % hp % win[1]) * win[2] + pos % wp % win[2]
            coords = torch.stack((local // (ch * cw), local // cw % ch, local % cw))  # in the configured window
            rel = coords[:, :, None] - coords[:, None, :] + torch.tensor([cd - 1, ch - 1, cw - 1]).view(3, 1, 1)
            return ((rel[0] * (2 * ch - 1) + rel[1]) * (2 * cw - 1) + rel[2]).reshape(-1)

        return cpu_table(build)

    def attn_mask(self) -> torch.Tensor | None:
        """(windows, 1, tokens, tokens) additive mask of token pairs from different regions, or None if unshifted."""
        win, shift, _ = self.geometry
        if not any(shift):
            return None

        def build() -> torch.Tensor:
            label = torch.zeros((), dtype=torch.long)
            for axis, (p, w, s) in enumerate(zip(self.padded, win, shift)):
                i = torch.arange(p)
                region = (i >= p - w).long() + (i >= p - s).long() if s else torch.zeros(p, dtype=torch.long)
                label = label.unsqueeze(-1) * 3 + region.view((1,) * axis + (p,))
            label = label.reshape(-1)[self.positions()]  # (windows, tokens)
            differ = label[:, None, :] != label[:, :, None]
            return torch.where(differ, MASK_VALUE, 0.0).unsqueeze(1)

        return cpu_table(build)


class WindowAttention3d(nn.Module):
    """(Shifted) window multi-head self-attention with a 3-D relative-position bias, on (B, T, H, W, C)."""

    def __init__(self, dim: int, heads: int, layout: WindowLayout, qkv_bias: bool = True,
                 tables: tuple[torch.Tensor, torch.Tensor | None] | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.layout = dim, heads, layout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        wd, wh, ww = layout.window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        bias_index, attn_mask = tables or (layout.bias_index(), layout.attn_mask())
        self.register_buffer("bias_index", bias_index, persistent=False)
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, tokens, tokens) bias gathered from the learned table."""
        n = self.layout.tokens
        return self.relative_position_bias_table.t().index_select(1, self.bias_index).reshape(self.heads, n, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = self.layout
        _, shift, (pd, ph, pw) = layout.geometry
        (t, h, w), p = layout.grid, layout.padded
        batch = x.shape[0]
        if pd or ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
        x = layout.partition(cyclic_shift(x, shift))
        windows, n, c = x.shape
        q, k, v = self.qkv(x).reshape(windows, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = self.relative_position_bias().unsqueeze(0)
        if self.attn_mask is not None:
            mask = (mask + self.attn_mask).expand(batch, -1, -1, -1, -1).reshape(windows, self.heads, n, n)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        # An explicit copy: torch.export records a free reshape here as a view, which breaks when the SDPA is
        # decomposed into a kernel with another output layout (it happens when the mask needs a gradient).
        x = self.proj(x.clone(memory_format=torch.contiguous_format).reshape(windows, n, c))
        x = cyclic_shift(layout.reverse(x), tuple((size - s) % size for size, s in zip(p, shift)))
        if pd or ph or pw:
            x = x[:, :t, :h, :w]
        return x


class SwinBlock3d(nn.Module):
    """x + DropPath(WindowAttention(LN(x))), then x + DropPath(MLP(LN(x))), on (B, T, H, W, C)."""

    def __init__(self, dim: int, heads: int, layout: WindowLayout, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_eps: float = 1e-5,
                 tables: tuple[torch.Tensor, torch.Tensor | None] | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowAttention3d(dim, heads, layout, qkv_bias=qkv_bias, tables=tables)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path_layer(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging2d(nn.Module):
    """Spatial 2x2 merge: (B, T, H, W, C) -> LN -> Linear -> (B, T, H/2, W/2, 2C); H and W must be even.

    Channels are concatenated in the reference's order (h, w) = (0, 0), (1, 0), (0, 1), (1, 1), by one rank-5
    permute instead of four strided slices.
    """

    def __init__(self, dim: int, norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        x = x.reshape(-1, 2, w // 2, 2, c).permute(0, 2, 3, 1, 4).reshape(b, t, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class PatchEmbed3d(nn.Module):
    """Non-overlapping tubelets: Conv3d with kernel = stride = patch, then LayerNorm; returns (B, T, H, W, C)."""

    def __init__(self, patch: Triple, dim: int, norm_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


class SwinStage(nn.Module):
    """Blocks alternating plain and shifted windows (shift = window // 2), then an optional patch merge."""

    def __init__(self, dim: int, depth: int, heads: int, grid: Triple, window: Triple, drop_path: list[float],
                 cfg: SwinConfig, downsample: bool):
        super().__init__()
        layouts = (WindowLayout(grid, window, (0, 0, 0)), WindowLayout(grid, window, tuple(w // 2 for w in window)))
        tables = [(layout.bias_index(), layout.attn_mask()) for layout in layouts[:depth]]  # shared by the blocks
        self.blocks = nn.Sequential(*[
            SwinBlock3d(dim, heads, layouts[i % 2], cfg.mlp_ratio, cfg.qkv_bias, drop_path[i], cfg.norm_eps,
                        tables[i % 2])
            for i in range(depth)])
        self.downsample = PatchMerging2d(dim, cfg.norm_eps) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.blocks(x))


class SwinTransformer3d(VideoClassifier):
    """Video Swin Transformer: tubelet embedding, four stages of (shifted) window attention, mean-pooled head."""

    classifier_name = "head"

    def __init__(self, cfg: SwinConfig, *, num_classes: int, frames: int, size: int):
        super().__init__()
        pt, ph, pw = cfg.patch
        if frames % pt or size % ph or size % pw:
            raise ValueError(f"{frames}x{size}x{size} is not a multiple of the {cfg.patch} patch")
        self.patch_embed = PatchEmbed3d(cfg.patch, cfg.dim, cfg.norm_eps)
        grid = (frames // pt, size // ph, size // pw)
        total = sum(cfg.depths)
        rates = [cfg.drop_path * i / max(total - 1, 1) for i in range(total)]
        stages = []
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads)):
            last = i == len(cfg.depths) - 1
            if not last and (grid[1] % 2 or grid[2] % 2):
                raise ValueError(f"patch merging after stage {i + 1} needs an even token grid, got {grid}")
            start = sum(cfg.depths[:i])
            stages.append(SwinStage(cfg.dim * 2**i, depth, heads, grid, cfg.window, rates[start:start + depth], cfg,
                                    downsample=not last))
            grid = grid if last else (grid[0], grid[1] // 2, grid[2] // 2)
        self.stages = nn.Sequential(*stages)
        self.num_features = cfg.dim * 2 ** (len(cfg.depths) - 1)
        self.norm = nn.LayerNorm(self.num_features, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.head_drop)
        self.head = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, T/2, H/32, W/32, C) normalised tokens, channels last."""
        return self.norm(self.stages(self.patch_embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean(dim=(1, 2, 3)))
        return x if pre_logits else self.head(x)


def state_dict_from_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision `SwinTransformer3d` state dict (e.g. ``swin3d_t``'s) to this model's keys.

    torchvision's ``features.{2i}.{j}`` is ``stages.{i}.blocks.{j}``, ``features.{2i+1}`` (patch merging) is
    ``stages.{i}.downsample``, ``mlp.0``/``mlp.3`` are ``mlp.fc1``/``mlp.fc2``; its ``relative_position_index``
    buffers are dropped (this model builds its own index for its token order).
    """
    out = {}
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            continue
        parts = key.split(".")
        if parts[0] == "features":
            i = int(parts[1])
            if i % 2 == 0:
                parts = ["stages", str(i // 2), "blocks", *parts[2:]]
                if parts[4] == "mlp":
                    parts[5] = {"0": "fc1", "3": "fc2"}[parts[5]]
            else:
                parts = ["stages", str(i // 2), "downsample", *parts[2:]]
        out[".".join(parts)] = value
    return out


SWIN_T = SwinConfig()
SWIN_TINY_TEST = SwinConfig(dim=16, depths=(2, 2, 2, 1), heads=(1, 2, 4, 8))

register_model(
    ModelSpec(
        name="swin-t", paper_name="Swin-T", category="attention-only", paper_params_m=28.0,
        params=28_158_070, flops=87_764_459_520,
        version="Video Swin Transformer Tiny: patch 2x4x4, window 8x7x7, depths 2-2-6-2 (torchvision swin3d_t)",
        source="SwinTransformer/Video-Swin-Transformer; torchvision swin3d_t",
        min_frames=2, frame_multiple=2, min_size=32, size_multiple=32,
        aliases=("swin3d-t", "video-swin-t"),
    ),
    SwinTransformer3d, full=SWIN_T, tiny=SWIN_TINY_TEST,
)
