"""Blocks shared by several families, written to export: rank <= 5, static shapes, no in-place slice writes.

Rules every zoo model follows (the compile targets depend on them):
- tensors of rank 5 at most; no ``torch.roll``; no in-place writes into slices; no einops;
- no Python-side state and no data-dependent control flow; every shape follows from the constructor;
- masks and index tables are computed once, on the CPU (`cpu_table`), and kept as buffers;
- nothing moves itself to a device (no ``.cuda()``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VideoClassifier",
    "FrameAveragedClassifier",
    "TrunkConfig",
    "TINY_TRUNKS",
    "frames_to_batch",
    "batch_to_frames",
    "make_divisible",
    "cpu_table",
    "create_trunk",
    "drop_path_layer",
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
    import timm  # about 1.5 s (it imports torchvision's model zoo): only for the models that have a timm trunk

    return timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)


def drop_path_layer(rate: float) -> nn.Module:
    """Stochastic depth on a residual branch at ``rate`` (timm's ``DropPath``); identity when ``rate`` is 0."""
    if rate <= 0:
        return nn.Identity()
    from timm.layers import DropPath

    return DropPath(rate)


@dataclass(frozen=True)
class TrunkConfig:
    """A timm image model run on every frame: its timm name and build arguments, as immutable (name, value) pairs."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, name: str, **args: Any) -> TrunkConfig:
        return cls(name, tuple(args.items()))

    def with_args(self, **args: Any) -> TrunkConfig:
        """The same trunk with some build arguments added or replaced."""
        return TrunkConfig.of(self.name, **{**dict(self.args), **args})

    def create(self, **extra: Any) -> nn.Module:
        """Build it with `create_trunk`; ``extra`` adds arguments that follow from the clip (``img_size``)."""
        return create_trunk(self.name, **dict(self.args), **extra)


# The trunks of the tiny test variants, keyed by the paper-scale trunk each stands in for: the same timm code with
# few blocks and small widths. A family that needs more blocks overrides them with `TrunkConfig.with_args`.
TINY_TRUNKS: Mapping[str, TrunkConfig] = MappingProxyType({
    "resnet50": TrunkConfig.of("resnet50", layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8),
    "res2net50_26w_4s": TrunkConfig.of("res2net50_26w_4s", layers=(1, 1, 1, 1), channels=(8, 16, 32, 64),
                                       stem_width=8),
    "efficientnet_b0": TrunkConfig.of("test_efficientnet"),
    "deit_small_patch16_224": TrunkConfig.of("deit_small_patch16_224", embed_dim=32, depth=2, num_heads=2),
})


class VideoClassifier(nn.Module):
    """Base of every zoo model: timm's model interface over a (B, 3, T, H, W) clip.

    ``forward(x)`` is ``forward_head(forward_features(x))``. A family implements `forward_features` (the clip's
    features before pooling, in the family's own layout) and `forward_head` (pooling and classifier; with
    ``pre_logits=True`` it returns the (B, num_features) vector the classifier reads), sets ``num_features`` and
    names its final classifier module, a dotted path such as ``"temporal.head"``, in ``classifier_name``.
    """

    classifier_name: str
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final classifier module (`nn.Identity` after ``reset_classifier(0)``)."""
        return self.get_submodule(self.classifier_name)

    @property
    def num_classes(self) -> int:
        """Width of the logits; 0 once the classifier is `nn.Identity`."""
        classifier = self.get_classifier()
        return getattr(classifier, "out_features", getattr(classifier, "out_channels", 0))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs.

        ``num_classes=0`` puts `nn.Identity` in its place, so that the model returns its (B, num_features) pre-logits.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be 0 (no classifier) or more, got {num_classes}")
        classifier = self.new_classifier(num_classes) if num_classes else nn.Identity()
        like = next(self.parameters(), None)
        if like is not None:
            classifier = classifier.to(like.device, like.dtype)
        self.set_submodule(self.classifier_name, classifier)

    def new_classifier(self, num_classes: int) -> nn.Module:
        """A fresh classifier of the family's kind, from ``num_features`` to ``num_classes``."""
        return nn.Linear(self.num_features, num_classes)


class FrameAveragedClassifier(VideoClassifier):
    """A timm 2-D CNN on every frame and a classifier on every frame's pooled features, with the logits averaged
    over the clip (TSN's average consensus).

    A subclass sets ``frames``, ``trunk`` (a timm model with ``num_classes=0``), ``dropout`` and ``fc``. Features
    are (B, T, C, h, w). As the classifier is linear, the frame-averaged features it returns as pre-logits give the
    same logits up to rounding.
    """

    classifier_name = "fc"
    frames: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return batch_to_frames(self.trunk.forward_features(frames_to_batch(x)), self.frames)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.trunk.forward_head(x.flatten(0, 1)))  # (B*T, C): per-frame pooled features
        if not pre_logits:
            x = self.fc(x)
        return batch_to_frames(x, self.frames).mean(dim=1)


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

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, 1 + N, D) encoded and normalised, [CLS] first."""
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        x = torch.cat((cls, tokens), dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The [CLS] token -> dropout -> classifier; the (B, D) [CLS] vector if ``pre_logits``."""
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(tokens))


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
