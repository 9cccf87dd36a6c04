"""TEA-R50: Res2Net keys stay timm's, the temporal conv is a grouped Conv1d, ME follows the reference formula."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

import vcompile.zoo.tea  # noqa: F401 - registers the family
from vcompile.zoo.registry import build_model, count_params, create_model
from vcompile.zoo.tea import MotionExcitation, TeaBottleneck, TemporalConv, temporal_conv_init


def test_full_param_count():
    with torch.device("meta"):
        model = build_model("tea-r50")
    assert count_params(model) == 24_919_354
    assert abs(count_params(model) / 1e6 - 24.9) / 24.9 < 0.01


def test_trunk_keeps_timm_res2net_keys_and_shapes():
    with torch.device("meta"):
        model = build_model("tea-r50")
        ref = timm.create_model("res2net50_26w_4s", pretrained=False, num_classes=0)
    ours = {k: v.shape for k, v in model.trunk.state_dict().items() if ".me." not in k and ".shifts." not in k}
    theirs = {k: v.shape for k, v in ref.state_dict().items()}
    assert ours == theirs
    blocks = [m for m in model.modules() if isinstance(m, TeaBottleneck)]
    assert len(blocks) == 16
    assert all(len(b.shifts) == 4 for b in blocks)
    first_of_stage = (blocks[0], blocks[3], blocks[7], blocks[13])
    assert [b.me.conv1.out_channels for b in first_of_stage] == [6, 13, 26, 52]  # 104/208/416/832 // 16


def test_temporal_conv_init():
    assert torch.equal(temporal_conv_init(4, "fixed")[:, 0], torch.tensor([[0.0, 1, 0]] * 4))
    shift = temporal_conv_init(5, "shift")[:, 0]
    assert torch.equal(shift, torch.tensor([[0.0, 0, 1], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0]]))


def test_temporal_conv_matches_conv1d():
    torch.manual_seed(0)
    b, t, c, h, w = 2, 5, 6, 3, 4
    conv = TemporalConv(c, t)
    torch.nn.init.normal_(conv.weight)
    x = torch.randn(b * t, c, h, w)
    ref = x.reshape(b, t, c, h, w).permute(0, 3, 4, 2, 1).reshape(b * h * w, c, t)
    ref = F.conv1d(ref, conv.weight, padding=1, groups=c)
    ref = ref.reshape(b, h, w, c, t).permute(0, 4, 3, 1, 2).reshape(b * t, c, h, w)
    torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)


def test_temporal_conv_shift_init_moves_frames():
    x = torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 4, 1, 1)  # 1 clip, 3 frames, frame t has value t
    out = TemporalConv(4, 3, "shift")(x)[:, :, 0, 0]
    assert torch.equal(out, torch.tensor([[1.0, 1, 0, 0], [2, 2, 0, 0], [0, 0, 1, 1]]))


def test_motion_excitation_formula():
    torch.manual_seed(0)
    b, t, c, r = 2, 4, 32, 4
    me = MotionExcitation(c, t, r)
    for bn in (me.bn1, me.bn3):
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    me.eval()
    x = torch.randn(b * t, c, 7, 7)
    s = me.bn1(me.conv1(x))
    s5 = s.reshape(b, t, c // r, 7, 7)
    m5 = me.conv2(s).reshape(b, t, c // r, 7, 7)
    diff = F.pad(m5[:, 1:] - s5[:, :-1], (0, 0, 0, 0, 0, 0, 0, 1)).reshape(b * t, c // r, 7, 7)
    y = torch.sigmoid(me.bn3(me.conv3(diff.mean((2, 3), keepdim=True)))) - 0.5
    torch.testing.assert_close(me(x), x + x * y, rtol=1e-5, atol=1e-5)


def test_tiny_block_matches_timm_when_temporal_parts_are_neutral():
    """With identity temporal convs and ME off (y = 0), a TEA block computes timm's Bottle2neck."""
    model = create_model("tea-r50", tiny=True)
    ref = timm.create_model("res2net50_26w_4s", pretrained=False, num_classes=0,
                            layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8).eval()
    ref.load_state_dict({k: v for k, v in model.trunk.state_dict().items() if ".me." not in k and ".shifts." not in k})
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, TeaBottleneck):
                for shift in block.shifts:
                    shift.weight.copy_(temporal_conv_init(shift.weight.shape[0], "fixed"))
                block.me.bn3.weight.zero_()
                block.me.bn3.bias.zero_()
                block.me.bn3.running_mean.zero_()
        x = torch.randn(8, 3, 64, 64)
        torch.testing.assert_close(model.trunk(x), ref(x), rtol=1e-4, atol=1e-4)
