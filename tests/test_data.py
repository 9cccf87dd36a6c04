"""The data layer: seeded clips are deterministic, and the named clip sets never share a clip."""

from __future__ import annotations

import pytest
import torch

from vcompile.data import CLIP_SETS, clip_set, example_input

SHAPE = (1, 3, 4, 8, 8)


def test_the_same_seed_gives_the_same_clip_and_another_seed_another():
    assert torch.equal(example_input(SHAPE, 7), example_input(SHAPE, 7))
    assert not torch.equal(example_input(SHAPE, 7), example_input(SHAPE, 8))
    assert example_input(SHAPE).shape == SHAPE


def test_named_sets_are_disjoint_and_parity_keeps_its_seeds():
    sets = {name: clip_set(name, SHAPE, 5, seed=3) for name in CLIP_SETS}
    flat = [(name, clip) for name, clips in sets.items() for clip in clips]
    for i, (name_a, a) in enumerate(flat):
        for name_b, b in flat[i + 1:]:
            assert not torch.equal(a, b), f"a {name_a} clip equals a {name_b} clip"
    # `vcompile parity` compares on the clips it always used (seed + 1000 + i), so old results stay comparable.
    assert torch.equal(sets["parity"][2], example_input(SHAPE, 3 + 1000 + 2))
    assert torch.equal(sets["calibration"][0], clip_set("calibration", SHAPE, 1, seed=3)[0])


def test_unknown_set_and_impossible_counts_are_refused():
    with pytest.raises(ValueError, match="unknown clip set 'test'; choose from trace, parity"):
        clip_set("test", SHAPE, 1)
    with pytest.raises(ValueError, match="outside 0..1000"):
        clip_set("calibration", SHAPE, 5000)
