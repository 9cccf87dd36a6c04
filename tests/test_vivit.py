"""ViViT-FE: the spatial encoder is timm's DeiT, frame by frame; the parameter count is the paper's 25.38M."""

from __future__ import annotations

import timm
import torch

import vcompile.zoo.vivit  # noqa: F401 - registers the family
from vcompile.zoo import build_model, count_params, create_model
from vcompile.zoo.layers import TINY_TRUNKS


def test_spatial_trunk_matches_timm_frame_by_frame():
    model = create_model("vivit-fe", tiny=True)
    tiny_deit = dict(TINY_TRUNKS["deit_small_patch16_224"].args)
    ref = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=0, img_size=64, **tiny_deit)
    ref.load_state_dict(model.trunk.state_dict())
    ref.eval()
    x = torch.randn(3, 3, 4, 64, 64)
    with torch.no_grad():
        per_frame = torch.stack([ref(x[:, :, t]) for t in range(4)], dim=1)  # (B, T, D): CLS after final LN
        cls_after_norm = torch.stack([ref.forward_features(x[:, :, t])[:, 0] for t in range(4)], dim=1)
        ours = model.trunk(x.transpose(1, 2).reshape(12, 3, 64, 64)).reshape(3, 4, -1)
        logits = model(x)
        expected = model.temporal(per_frame)
    assert per_frame.shape == (3, 4, 32)
    torch.testing.assert_close(per_frame, cls_after_norm, rtol=0, atol=0)
    torch.testing.assert_close(ours, per_frame, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    # Clips stay separate: changing one clip leaves the others' logits alone.
    x2 = x.clone()
    x2[1] = torch.randn(3, 4, 64, 64)
    with torch.no_grad():
        logits2 = model(x2)
    torch.testing.assert_close(logits2[[0, 2]], logits[[0, 2]], rtol=1e-5, atol=1e-6)
    assert (logits2[1] - logits[1]).abs().max() > 1e-3


def test_frame_order_matters():
    model = create_model("vivit-fe", tiny=True)
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        assert (model(x) - model(x.flip(2))).abs().max() > 1e-4  # learned temporal positions


def test_parameter_count():
    with torch.device("meta"):
        model = build_model("vivit-fe")
        deit_s = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=0)
    assert count_params(model.trunk) == count_params(deit_s) == 21_665_664
    layers = 2 * (2 * 2 * 384 + (384 * 1152 + 1152) + (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384))
    assert count_params(model.temporal) == layers + 384 + 17 * 384 + 2 * 384 + (384 * 400 + 400) == 3_710_608
    assert count_params(model) == 25_376_272
    assert model.trunk.pos_embed.shape == (1, 197, 384)


def test_embeddings_follow_clip_shape():
    with torch.device("meta"):
        model = build_model("vivit-fe", frames=8, size=112)
    assert model.trunk.pos_embed.shape == (1, 50, 384)
    assert model.temporal.pos_embed.shape == (1, 9, 384)
