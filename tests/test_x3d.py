"""X3D-XS: exact size against pytorchvideo's create_x3d, stage layout, block wiring, and the head's global mean."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vcompile.zoo.x3d as x3d
from vcompile.zoo import build_model, create_model, get_spec
from vcompile.zoo.flops import model_cost
from vcompile.zoo.layers import SqueezeExcite3d
from vcompile.zoo.spec import KINETICS_MEAN, KINETICS_STD


def _round_width(width: float, multiplier: float, divisor: int = 8) -> int:
    """pytorchvideo `round_width` (min width = divisor)."""
    width *= multiplier
    out = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return int(out + divisor if out < 0.9 * width else out)


def test_config_follows_from_pytorchvideo_factors():
    cfg = x3d.X3D_XS
    width_factor, depth_factor, base_depths = 2.0, 2.2, (1, 2, 5, 3)
    stage_dims = [12]
    for _ in range(3):
        stage_dims.append(_round_width(stage_dims[-1], 2.0))
    assert cfg.stem_width == _round_width(12, width_factor) == 24
    assert cfg.widths == tuple(_round_width(d, width_factor) for d in stage_dims) == (24, 48, 96, 192)
    assert cfg.depths == tuple(math.ceil(d * depth_factor) for d in base_depths) == (3, 5, 11, 7)
    assert [int(2.25 * w) for w in cfg.widths] == [54, 108, 216, 432]
    assert [_round_width(int(2.25 * w), 0.0625) for w in cfg.widths] == [8, 8, 16, 32]


def test_exact_parameter_count():
    # pytorchvideo create_x3d (hub x3d_xs): 3.79M. SlowFast adds a BN to res2's first shortcut (+48 = 3,794,322).
    assert model_cost("x3d-xs").params == 3_794_274
    assert model_cost("x3d-xs", num_classes=600).params == 3_794_274 + 200 * 2049


def test_macs_at_reference_inputs():
    # X3D paper: XS 0.60 GFLOPs at 4x160^2, S 1.96 at 13x160^2, M 4.73 at 16x224^2 (same weights).
    assert model_cost("x3d-xs", frames=4, size=160).macs / 1e9 == pytest.approx(0.605, abs=0.005)
    assert model_cost("x3d-xs", frames=13, size=160).macs / 1e9 == pytest.approx(1.963, abs=0.005)
    assert model_cost("x3d-xs").macs / 1e9 == pytest.approx(4.73, abs=0.01)


def test_spec():
    spec = get_spec("X3D_XS")
    assert spec.name == "x3d-xs" and spec.category == "baseline" and spec.paper_params_m == 3.8
    assert (spec.mean, spec.std) == (KINETICS_MEAN, KINETICS_STD)
    assert spec.check_shape(4, 64) is None and spec.check_shape(16, 224) is None


def test_stage_layout():
    with torch.device("meta"):
        model = build_model("x3d-xs")
    blocks = [list(stage) for stage in model.stages]
    assert [len(b) for b in blocks] == [3, 5, 11, 7]
    for stage, (width, se_width) in zip(blocks, [(24, 8), (48, 8), (96, 16), (192, 32)], strict=True):
        inner = int(2.25 * width)
        for i, block in enumerate(stage):
            assert block.conv_b.groups == inner and block.conv_b.kernel_size == (3, 3, 3)
            assert block.conv_b.stride == ((1, 2, 2) if i == 0 else (1, 1, 1))
            assert block.conv_c.out_channels == width
            if i % 2 == 0:
                assert block.se.fc1.out_channels == se_width
            else:
                assert isinstance(block.se, nn.Identity)
            assert (block.shortcut_conv is not None) == (i == 0)
    # pytorchvideo: the width-preserving strided shortcut of res2 has a conv but no BN; the others have both.
    assert blocks[0][0].shortcut_bn is None
    assert all(stage[0].shortcut_bn is not None for stage in blocks[1:])
    assert model.stem.conv_t.groups == 24 and model.stem.conv_t.kernel_size == (5, 1, 1)
    assert model.head_conv.out_channels == 432 and model.post_conv.out_channels == 2048
    assert model.post_conv.bias is None and model.fc.in_features == 2048
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm3d))


def test_feature_map_sizes():
    with torch.device("meta"):
        model = build_model("x3d-xs")
    sizes = []
    model.stem.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.empty(2, 3, 16, 224, 224, device="meta"))
    assert sizes == [(24, 16, 112, 112), (24, 16, 56, 56), (48, 16, 28, 28), (96, 16, 14, 14), (192, 16, 7, 7)]


def _bn(x: torch.Tensor, bn: nn.BatchNorm3d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_squeeze_excite_matches_formula():
    torch.manual_seed(0)
    se = SqueezeExcite3d(12, 8)
    x = torch.randn(2, 12, 3, 5, 4)
    pooled = x.mean((2, 3, 4))
    hidden = torch.relu(pooled @ se.fc1.weight.flatten(1).T + se.fc1.bias)
    gate = torch.sigmoid(hidden @ se.fc2.weight.flatten(1).T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None, None])


@pytest.mark.parametrize("stride, dim_in, se_width", [(2, 16, 8), (1, 16, 0), (2, 8, 8)])
def test_block_matches_formula(stride, dim_in, se_width):
    """conv_a-BN-ReLU, depthwise conv_b-BN, SE, Swish, conv_c-BN, + shortcut, ReLU (pytorchvideo's order)."""
    torch.manual_seed(0)
    block = x3d.X3dBlock(dim_in, 36, 16, stride=stride, se_width=se_width)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    block.eval()
    x = torch.randn(2, dim_in, 4, 8, 8)
    y = torch.relu(_bn(F.conv3d(x, block.conv_a.weight), block.bn_a))
    y = _bn(F.conv3d(y, block.conv_b.weight, stride=(1, stride, stride), padding=1, groups=36), block.bn_b)
    if se_width:
        y = block.se(y)
    y = F.silu(y)
    y = _bn(F.conv3d(y, block.conv_c.weight), block.bn_c)
    shortcut = x
    if block.shortcut_conv is not None:
        shortcut = F.conv3d(x, block.shortcut_conv.weight, stride=(1, stride, stride))
    if block.shortcut_bn is not None:
        shortcut = _bn(shortcut, block.shortcut_bn)
    torch.testing.assert_close(block(x), torch.relu(shortcut + y))
    assert tuple(block(x).shape) == (2, 16, 4, 8 // stride, 8 // stride)


def test_global_mean_head_equals_pytorchvideo_pool():
    """pytorchvideo pools with AvgPool3d(kernel=(T, ceil(H/32), ceil(W/32)), stride 1); at the build size that is
    the global mean this model uses."""
    model = create_model("x3d-xs", tiny=True)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        feats = model.head_act(model.head_bn(model.head_conv(model.forward_features(x))))
        pooled = nn.AvgPool3d((4, math.ceil(64 / 32), math.ceil(64 / 32)), stride=1)(feats)
        assert tuple(pooled.shape[2:]) == (1, 1, 1)
        expected = model.fc(model.post_act(model.post_conv(pooled)).flatten(1))
        torch.testing.assert_close(model(x), expected)


def test_batch_independent_and_size_flexible():
    model = create_model("x3d-xs", tiny=True)
    x = torch.randn(3, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]))
        assert model(torch.randn(2, 3, 1, 48, 48)).shape == (2, 10)
