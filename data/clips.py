"""Seeded clips: the standard-normal tensors (like normalised video) that builds, parity and benches feed a model.

Each purpose draws from its own named set, so that no two purposes see the same clip by accident: an accuracy
gate checks on ``held_apart`` clips, never on the ``calibration`` clips an int8 artifact was calibrated on.
"""

from __future__ import annotations

import torch

from ..errors import VcompileError

__all__ = ["CLIP_SETS", "MAX_CLIPS", "MAX_SEED", "check_seed", "example_input", "clip_set"]

# Offset of each named set's seeds from the build seed. ``trace`` is the example a build traces and checks on
# (and its second batch); ``parity`` the clips `vcompile parity` compares on. Offsets are MAX_CLIPS apart or
# more, so the sets are disjoint.
CLIP_SETS = {"trace": 0, "parity": 1000, "calibration": 100_000, "held_apart": 200_000}
MAX_CLIPS = 1000
# Seeds go to torch's and numpy's generators (64-bit), plus the offsets above: 0 .. 2**63 - 1 fits every use.
MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> int:
    """``seed`` if every generator vcompile seeds with it accepts it; else a `VcompileError` saying the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise VcompileError(f"seed {seed!r} is out of range; give an integer from 0 to {MAX_SEED}")
    return seed


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
