"""Seeded clips: the standard-normal tensors (like normalised video) that builds, parity and benches feed a model.

Each purpose draws from its own named set, so that no two purposes see the same clip by accident: an accuracy
gate checks on ``held_apart`` clips, never on the ``calibration`` clips an int8 artifact was calibrated on.
"""

from __future__ import annotations

import torch

__all__ = ["CLIP_SETS", "MAX_CLIPS", "example_input", "clip_set"]

# Offset of each named set's seeds from the build seed. ``trace`` is the example a build traces and checks on
# (and its second batch); ``parity`` the clips `vcompile parity` compares on. Offsets are MAX_CLIPS apart or
# more, so the sets are disjoint.
CLIP_SETS = {"trace": 0, "parity": 1000, "calibration": 100_000, "held_apart": 200_000}
MAX_CLIPS = 1000


def example_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The seeded clip of ``shape`` (standard normal, like normalised video); the same seed gives the same clip."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def clip_set(name: str, shape: tuple[int, ...], count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` clips of ``shape`` from the named set ``name`` (see `CLIP_SETS`), for build seed ``seed``."""
    if name not in CLIP_SETS:
        raise ValueError(f"unknown clip set {name!r}; choose from {', '.join(CLIP_SETS)}")
    if not 0 <= count <= MAX_CLIPS:
        raise ValueError(f"clip count {count} is outside 0..{MAX_CLIPS}")
    start = seed + CLIP_SETS[name]
    return [example_input(shape, start + i) for i in range(count)]
