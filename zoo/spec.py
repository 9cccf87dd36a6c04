"""`ModelSpec`: what vcompile knows about a zoo model besides its code (paper facts, input contract, limits)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSpec", "CATEGORIES", "IMAGENET_MEAN", "IMAGENET_STD", "KINETICS_MEAN", "KINETICS_STD"]

# The paper's four categories (Table 1), in the order its figures use.
CATEGORIES = ("stand-alone attention", "composite transformer", "attention-only", "baseline")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Facts about one model of the zoo.

    Args:
        name: canonical lowercase name, e.g. ``mvit-s``.
        paper_name: the name the paper prints, e.g. ``MViT-S``.
        category: one of `CATEGORIES`.
        paper_params_m: parameter count in millions at 400 classes, from the paper's Table 4.
        params: this implementation's parameter count at 400 classes, and ``flops`` its forward FLOPs (2 per
            multiply-accumulate) for one clip at ``frames`` x ``size``: counted by `vcompile.zoo.flops.count_cost`
            and kept here as data (as torchvision keeps its weights' metadata), so that listing the zoo builds
            nothing. A test keeps both equal to counting.
        version: which version of the model this is, in a few words (the paper's Table 1).
        source: the reference implementation its configuration follows.
        frames: clip length of the paper's protocol.
        size: frame height and width of the paper's protocol.
        mean: per-channel normalisation mean for RGB input in [0, 1].
        std: per-channel normalisation std.
        min_frames: fewest frames the architecture accepts.
        frame_multiple: clip lengths must be a multiple of this (tubelets, temporal strides).
        min_size: smallest frame size the architecture accepts.
        size_multiple: frame sizes must be a multiple of this (patching, windows, downsampling).
        aliases: other spellings that resolve to this model (case, `_` and `-` are ignored anyway).
        unsupported: known unsupported targets, as ``(target, reason)`` pairs (a mapping is accepted and stored as
            pairs); data, not try/except. Look one up with `unsupported_reason`.
    """

    name: str
    paper_name: str
    category: str
    paper_params_m: float
    version: str
    source: str
    params: int | None = None
    flops: int | None = None
    frames: int = 16
    size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    min_frames: int = 1
    frame_multiple: int = 1
    min_size: int = 32
    size_multiple: int = 32
    aliases: tuple[str, ...] = ()
    unsupported: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"{self.name}: category {self.category!r} is not one of {CATEGORIES}")
        object.__setattr__(self, "unsupported", tuple(dict(self.unsupported).items()))

    def unsupported_reason(self, target: str) -> str | None:
        """Why this model cannot be built for ``target``, or None if it is not known to be unsupported."""
        return dict(self.unsupported).get(target)

    def input_shape(self, batch: int = 1, frames: int | None = None, size: int | None = None) -> tuple[int, ...]:
        """The (B, C, T, H, W) input this model takes."""
        return (batch, 3, frames or self.frames, size or self.size, size or self.size)

    def check_shape(self, frames: int, size: int) -> str | None:
        """Return why ``frames`` x ``size`` cannot be run by this model, or None if it can."""
        if frames < self.min_frames or frames % self.frame_multiple:
            return (f"{self.name} needs at least {self.min_frames} frames, in multiples of {self.frame_multiple}; "
                    f"got {frames}")
        if size < self.min_size or size % self.size_multiple:
            return (f"{self.name} needs frames of at least {self.min_size} px, in multiples of "
                    f"{self.size_multiple}; got {size}")
        return None
