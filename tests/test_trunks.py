"""The 2-D trunks are timm's own models: given the same weights they compute the same features."""

from __future__ import annotations

import pytest
import timm
import torch
from support import tiny_clip

from vcompile.zoo import create_model, get_config, list_models
from vcompile.zoo.layers import TINY_TRUNKS, TrunkConfig, frames_to_batch


def test_tiny_trunks_come_from_the_one_table():
    """Every family with a timm trunk takes its tiny trunk from TINY_TRUNKS, keyed by its paper-scale trunk."""
    with_trunk = [n for n in list_models() if isinstance(getattr(get_config(n), "trunk", None), TrunkConfig)]
    assert set(with_trunk) == {"tsm-r50", "nl-r50", "tea-r50", "vtn-r50", "vtn-eff", "vivit-fe"}
    for name in with_trunk:
        full, tiny = get_config(name).trunk, get_config(name, tiny=True).trunk
        assert full.args == ()  # the paper's trunks are timm's defaults
        entry = TINY_TRUNKS[full.name]
        assert tiny.name == entry.name
        overridden = {k for k, v in tiny.args if dict(entry.args).get(k) != v}
        assert overridden == ({"layers"} if name == "nl-r50" else set()), name
    assert dict(get_config("nl-r50", tiny=True).trunk.args)["layers"] == (1, 2, 3, 1)


def _timm_twin(model: torch.nn.Module, timm_name: str, **kwargs) -> torch.nn.Module:
    twin = timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs).eval()
    twin.load_state_dict(model.trunk.state_dict(), strict=True)  # same keys, same shapes
    return twin


@pytest.mark.parametrize(("name", "timm_name", "tiny"), [
    ("vtn-r50", "resnet50", False),
    ("vtn-eff", "efficientnet_b0", False),
    ("vtn-eff", "test_efficientnet", True),
])
def test_vtn_trunk_matches_timm(name, timm_name, tiny):
    model = create_model(name, tiny=tiny)
    twin = _timm_twin(model, timm_name)
    frames = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.trunk(frames), twin(frames), atol=0, rtol=0)


def test_tsm_trunk_has_timm_keys_and_only_adds_the_shift():
    """Same keys as timm's ResNet-50; with every shifted channel equal across time, only the clip ends differ."""
    model = create_model("tsm-r50", tiny=True)
    twin = _timm_twin(model, "resnet50", layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8)
    assert [k for k, _ in model.trunk.named_parameters()] == [k for k, _ in twin.named_parameters()]


def test_nonlocal_trunk_is_timm_resnet_when_blocks_are_silent():
    """Zeroing the non-local output BN makes every block the identity: the model is then TSN on timm's ResNet."""
    model = create_model("nl-r50", tiny=True)
    twin = _timm_twin(model, "resnet50", layers=(1, 2, 3, 1), channels=(8, 16, 32, 64), stem_width=8)
    for block in model.nonlocal_blocks.values():
        torch.nn.init.zeros_(block.bn.weight)
        torch.nn.init.zeros_(block.bn.bias)
    x = tiny_clip()
    with torch.no_grad():
        want = model.fc(twin(frames_to_batch(x))).reshape(2, 4, -1).mean(1)
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)
