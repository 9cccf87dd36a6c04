"""MoViNet-A0/A2 Base: exact sizes of the Atze00 port, its paddings and feature-map sizes, SE and ReZero wiring."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vcompile.zoo.movinet as movinet
from vcompile.zoo import build_model, create_model, get_spec
from vcompile.zoo.flops import model_cost
from vcompile.zoo.layers import make_divisible


@pytest.mark.parametrize("name, params_400, params_600", [
    ("movinet-a0", 2_701_999, 3_111_799),  # paper 2.7M; official 3.1M is at Kinetics-600
    ("movinet-a2", 4_839_762, 5_249_562),  # paper 4.8M; the port at 600 classes is 5.25M
])
def test_exact_parameter_count(name, params_400, params_600):
    assert model_cost(name).params == params_400
    assert model_cost(name, num_classes=600).params == params_600
    assert params_600 - params_400 == 200 * 2049


def test_macs_at_paper_input():
    # Port paddings at 16x224^2. A0's unpadded strided blocks (27 and 13 px maps) make it 1.22 rather than 1.32.
    assert model_cost("movinet-a0").macs / 1e9 == pytest.approx(1.219, abs=0.005)
    assert model_cost("movinet-a2").macs / 1e9 == pytest.approx(3.701, abs=0.005)


@pytest.mark.parametrize("name", ["movinet-a0", "movinet-a2"])
def test_spec(name):
    spec = get_spec(name.upper().replace("-", "_"))
    assert spec.name == name and spec.category == "baseline"
    assert spec.mean == (0.0, 0.0, 0.0) and spec.std == (1.0, 1.0, 1.0)
    assert spec.check_shape(4, 64) is None and spec.check_shape(16, 224) is None


def test_tables_match_the_port():
    a0, a2 = movinet.MOVINET_A0, movinet.MOVINET_A2
    assert [len(s) for s in a0.stages] == [1, 3, 3, 4, 4] and (a0.stem_width, a0.head_width) == (8, 480)
    assert [len(s) for s in a2.stages] == [3, 5, 5, 6, 7] and (a2.stem_width, a2.head_width) == (16, 640)
    unpadded = {f"b{i}_l{j}" for cfg in (a0, a2) for i, s in enumerate(cfg.stages) for j, b in enumerate(s)
                if not b.spatial_pad}
    assert unpadded == {"b1_l0", "b2_l0"} and all(b.spatial_pad for s in a2.stages for b in s)
    assert [b.expanded for s in a0.stages for b in s] == [24, 80, 80, 80, 184, 112, 184, 184, 184, 184, 184,
                                                          384, 280, 280, 344]


def _feature_sizes(name: str, size: int = 224) -> list[int]:
    with torch.device("meta"):
        model = build_model(name)
    sizes = []
    model.conv1.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    last = {}
    for block_name, block in model.blocks.named_children():
        last[block_name[1]] = block  # the last block of each stage
    for block in last.values():
        block.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        model(torch.empty(1, 3, 16, size, size, device="meta"))
    return sizes


def test_feature_map_sizes():
    # Stages b0, b1, b2, b3, b4 (b3 has stride 1).
    assert _feature_sizes("movinet-a0") == [112, 56, 27, 13, 13, 7]
    assert _feature_sizes("movinet-a2") == [112, 56, 28, 14, 14, 7]
    assert _feature_sizes("movinet-a0", 172) == [86, 43, 21, 10, 10, 5]


def test_block_layers():
    with torch.device("meta"):
        model = build_model("movinet-a0")
    b1 = model.blocks.b1_l0
    assert b1.deep.conv.padding == (1, 0, 0) and b1.deep.conv.stride == (1, 2, 2) and b1.deep.conv.groups == 80
    assert isinstance(b1.res[0], nn.AvgPool3d) and b1.res[0].padding == (0, 0, 0) and b1.res[0].stride == (1, 2, 2)
    assert model.blocks.b2_l0.deep.conv.padding == (2, 0, 0) and model.blocks.b2_l0.res[0].padding == (0, 0, 0)
    b4 = model.blocks.b4_l0
    assert b4.deep.conv.padding == (2, 1, 1) and b4.res[0].padding == (0, 1, 1) and b4.res[0].kernel_size == (1, 3, 3)
    assert model.blocks.b3_l0.res is None and model.blocks.b0_l0.res[1].conv.out_channels == 8
    assert model.blocks.b4_l1.deep.conv.padding == (0, 2, 2)
    for block in model.blocks:
        expanded = block.deep.conv.out_channels
        assert block.se.fc1.out_channels == make_divisible(expanded // 4, 8)
        assert block.se.fc1.bias is not None and isinstance(block.se.act, nn.SiLU)
        assert block.alpha.shape == () and block.project.act.__class__ is nn.Identity
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    assert [m.out_channels for m in model.classifier if isinstance(m, nn.Conv3d)] == [2048, 400]
    assert model.classifier[2].p == 0.2


def test_rezero_alpha_initialised_to_zero():
    with torch.device("meta"):
        model = build_model("movinet-a2")
    block = movinet.MovinetBlock(movinet.MOVINET_A2.stages[1][0])
    assert block.alpha.item() == 0.0 and block.alpha.requires_grad
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith("alpha")) == 26


def _bn(x: torch.Tensor, bn: nn.BatchNorm3d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("cfg", [
    movinet.MovinetBlockConfig(8, 16, 24, (3, 3, 3), 2, spatial_pad=False),
    movinet.MovinetBlockConfig(8, 16, 24, (5, 3, 3), 2),
    movinet.MovinetBlockConfig(16, 16, 40, (1, 5, 5)),
])
def test_block_matches_formula(cfg):
    torch.manual_seed(0)
    block = movinet.MovinetBlock(cfg)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    block.alpha.data.fill_(0.7)
    block.eval()
    x = torch.randn(2, cfg.in_channels, 4, 11, 11)
    s = cfg.stride
    pad = tuple(k // 2 for k in cfg.kernel) if cfg.spatial_pad else (cfg.kernel[0] // 2, 0, 0)
    y = F.silu(_bn(F.conv3d(x, block.expand.conv.weight), block.expand.bn))
    y = F.silu(_bn(F.conv3d(y, block.deep.conv.weight, stride=(1, s, s), padding=pad, groups=cfg.expanded),
                   block.deep.bn))
    se = block.se
    gate = F.conv3d(F.silu(F.conv3d(y.mean((2, 3, 4), keepdim=True), se.fc1.weight, se.fc1.bias)),
                    se.fc2.weight, se.fc2.bias)
    y = _bn(F.conv3d(y * torch.sigmoid(gate), block.project.conv.weight), block.project.bn)
    if block.res is None:
        shortcut = x
    else:
        shortcut = x
        if s > 1:
            shortcut = F.avg_pool3d(x, (1, 3, 3), (1, s, s), (0, 1, 1) if cfg.spatial_pad else 0)
        shortcut = _bn(F.conv3d(shortcut, block.res[-1].conv.weight), block.res[-1].bn)
    out = block(x)
    torch.testing.assert_close(out, shortcut + 0.7 * y)
    block.alpha.data.zero_()
    torch.testing.assert_close(block(x), shortcut)  # ReZero: a zero alpha leaves only the shortcut
    expected_hw = (11 + 2 * pad[1] - cfg.kernel[1]) // s + 1
    assert tuple(out.shape) == (2, cfg.out_channels, 4, expected_hw, expected_hw)


def test_head_is_global_mean_then_1x1x1_convs():
    model = create_model("movinet-a0", tiny=True)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x).mean((2, 3, 4))
        c1, c2 = model.classifier[0], model.classifier[3]
        expected = F.silu(feats @ c1.weight.flatten(1).T + c1.bias) @ c2.weight.flatten(1).T + c2.bias
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", ["movinet-a0", "movinet-a2"])
def test_batch_independent_and_small_inputs(name):
    model = create_model(name, tiny=True)
    x = torch.randn(3, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[2:], model(x[2:]))
    spec = get_spec(name)
    full = build_model(name, frames=1, size=spec.min_size).eval()
    with torch.no_grad():  # the smallest frames the spec admits reach the head at full scale, one pixel less does not
        assert full(torch.randn(2, 3, 1, spec.min_size, spec.min_size)).shape == (2, 400)
        with pytest.raises(RuntimeError, match="smaller than kernel size"):
            full(torch.randn(1, 3, 1, spec.min_size - 1, spec.min_size - 1))
    assert spec.check_shape(1, spec.min_size - 1) is not None


def test_table_continuity_is_checked():
    bad = movinet.MovinetConfig(stem_width=8, stages=((movinet.MovinetBlockConfig(16, 16, 32, (3, 3, 3)),),),
                                head_width=32)
    with pytest.raises(ValueError, match="b0_l0 takes 16 channels but gets 8"):
        movinet.MoViNet(bad, num_classes=10, frames=4, size=64)
