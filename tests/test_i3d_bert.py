"""I3D-BERT: parameter counts of the inferred configuration, the trunk is an inflated torchvision ResNet-50."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet, resnet50

import vcompile.zoo.i3d_bert  # noqa: F401 - registers the family
from vcompile.zoo.i3d_bert import I3DResNet
from vcompile.zoo.registry import build_model, count_params, create_model


def test_full_param_counts():
    with torch.device("meta"):
        model = build_model("i3d-bert")
    assert count_params(model) == 50_592_976
    assert abs(count_params(model) / 1e6 - 50.6) / 50.6 < 0.01
    assert count_params(model.trunk) == 46_180_160
    assert count_params(model.reduce) == 2048 * 512 + 512
    assert model.bert.pos_embed.shape == (1, 16 // 2 + 1, 512)
    assert len(model.bert.blocks) == 1 and model.bert.blocks[0].attn.heads == 8
    assert model.bert.head.in_features == 512 and model.bert.head.out_features == 400


def test_trunk_is_inflated_resnet50():
    """Same keys as torchvision's ResNet-50; every conv kernel gains a temporal size (5 stem, 3 for 3x3, else 1)."""
    with torch.device("meta"):
        ours = I3DResNet((3, 4, 6, 3), (64, 128, 256, 512), 64, (5, 7, 7)).state_dict()
        ref = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        if value.dim() == 4:
            kt = 5 if key == "conv1.weight" else 3 if key.endswith("conv2.weight") else 1
            assert ours[key].shape == (value.shape[0], value.shape[1], kt, *value.shape[2:]), key
        else:
            assert ours[key].shape == value.shape, key


def test_centre_inflated_trunk_equals_2d_resnet_on_every_other_frame():
    torch.manual_seed(0)
    ref = ResNet(Bottleneck, [1, 1, 1, 1]).eval()
    trunk = I3DResNet((1, 1, 1, 1), (64, 128, 256, 512), 64, (5, 7, 7)).eval()
    state = {}
    with torch.no_grad():
        for key, value in ref.state_dict().items():
            target = trunk.state_dict().get(key)
            if target is None:
                continue
            if value.dim() == 4:  # put the 2-D kernel in the centre time slice, zeros elsewhere
                kt = target.shape[2]
                value = torch.cat([value.unsqueeze(2) if i == kt // 2 else torch.zeros_like(value).unsqueeze(2)
                                   for i in range(kt)], dim=2)
            elif key.endswith("running_var"):
                value = torch.rand_like(value) + 0.5
                ref.state_dict()[key].copy_(value)
            state[key] = value
    trunk.load_state_dict(state)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        out = trunk(x)
        body = nn.Sequential(*list(ref.children())[:-2])
        expected = torch.stack([body(x[:, :, t]) for t in (0, 2)], dim=2)
    assert out.shape == (2, 2048, 2, 2, 2)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_tokens_are_half_the_frames():
    model = create_model("i3d-bert", tiny=True, frames=8)
    seen = {}
    model.reduce.register_forward_hook(lambda m, i, o: seen.update(tokens=o.shape))
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 8, 64, 64))
    assert seen["tokens"] == (3, 4, 32)
    assert logits.shape == (3, 10)


def test_linear_reduction_equals_pointwise_conv_then_pool():
    model = create_model("i3d-bert", tiny=True)
    feats = torch.randn(2, model.trunk.num_features, 2, 2, 2)
    conv = nn.Conv3d(model.trunk.num_features, 32, 1)
    with torch.no_grad():
        conv.weight.copy_(model.reduce.weight[:, :, None, None, None])
        conv.bias.copy_(model.reduce.bias)
        via_conv = conv(feats).mean((3, 4)).transpose(1, 2)
        via_linear = model.reduce(feats.mean((3, 4)).transpose(1, 2))
    torch.testing.assert_close(via_linear, via_conv, rtol=1e-5, atol=1e-5)
