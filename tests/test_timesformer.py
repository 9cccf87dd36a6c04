"""TimeSformer: divided space-time attention against a slow, loop-by-loop formulation in the reference's token order."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

import vcompile.zoo.timesformer  # noqa: F401 - registers the family
from vcompile.zoo import build_model, count_params, create_model
from vcompile.zoo.timesformer import DividedSpaceTimeBlock


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _attention(seq: torch.Tensor, attn, heads: int) -> torch.Tensor:
    """Multi-head self-attention of one (L, D) sequence, one head at a time, with explicit matmul and softmax."""
    d = seq.shape[-1]
    hd = d // heads
    qkv = seq @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
    outs = []
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        weights = torch.softmax(q[:, cols] @ k[:, cols].T / hd ** 0.5, dim=-1)
        outs.append(weights @ v[:, cols])
    return torch.cat(outs, dim=1) @ attn.proj.weight.T + attn.proj.bias


def _slow_block(blk: DividedSpaceTimeBlock, x: torch.Tensor, frames: int, patches: int, heads: int) -> torch.Tensor:
    """One divided block on (B, 1 + N*T, D) tokens in the reference's (h w t) order: patch s, frame t at 1 + s*T + t."""
    out = []
    for b in range(x.shape[0]):
        cls, tokens = x[b, 0], x[b, 1:]
        # Temporal attention per patch position, over its T frames.
        after_time = tokens.clone()
        for s in range(patches):
            rows = [s * frames + t for t in range(frames)]
            res = _attention(_layer_norm(tokens[rows], blk.temporal_norm1), blk.temporal_attn, heads)
            after_time[rows] = tokens[rows] + res @ blk.temporal_fc.weight.T + blk.temporal_fc.bias
        # Spatial attention per frame, over the CLS token and the frame's N patches; CLS outputs averaged.
        spatial_res, cls_res = torch.zeros_like(tokens), []
        for t in range(frames):
            rows = [s * frames + t for s in range(patches)]
            seq = torch.cat((cls[None], after_time[rows]))
            res = _attention(_layer_norm(seq, blk.norm1), blk.attn, heads)
            cls_res.append(res[0])
            spatial_res[rows] = res[1:]
        y = torch.cat(((cls + torch.stack(cls_res).mean(0))[None], after_time + spatial_res))
        hidden = F.gelu(_layer_norm(y, blk.norm2) @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        out.append(y + hidden @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias)
    return torch.stack(out)


def _to_time_major(x: torch.Tensor, frames: int, patches: int) -> torch.Tensor:
    """Reorder (B, 1 + N*T, D) tokens from the reference's (h w t) order to the model's (t h w) order."""
    order = [0] + [1 + s * frames + t for t in range(frames) for s in range(patches)]
    return x[:, order]


def test_divided_block_matches_slow_reference():
    torch.manual_seed(0)
    frames, patches, dim, heads = 3, 5, 8, 2
    blk = DividedSpaceTimeBlock(dim, heads, 16, frames=frames, patches=patches, drop_path=0.1).double().eval()
    x_ref = torch.randn(2, 1 + frames * patches, dim, dtype=torch.float64)
    expected = _to_time_major(_slow_block(blk, x_ref, frames, patches, heads), frames, patches)
    with torch.no_grad():
        got = blk(_to_time_major(x_ref, frames, patches))
    assert got.shape == (2, 1 + frames * patches, dim)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # The block is not the identity, and its temporal part matters: the slow check is not vacuous.
    assert (got - _to_time_major(x_ref, frames, patches)).abs().mean() > 0.1


def test_tiny_model_matches_slow_reference():
    """Whole model: embeddings built in the reference's order (time fastest), slow blocks, final LN, CLS head."""
    model = create_model("timesformer", tiny=True).double()
    frames, grid, heads = 4, 4, 2
    patches = grid * grid
    x = torch.randn(2, 3, frames, 64, 64, dtype=torch.float64)
    tokens = torch.zeros(2, patches * frames, 64, dtype=torch.float64)
    with torch.no_grad():
        for b in range(2):
            for t in range(frames):
                emb = model.patch_embed.proj(x[b:b + 1, :, t]).flatten(2)[0].T  # (N, D), row-major grid
                emb = emb + model.pos_embed[0, 1:] + model.time_embed[0, t]
                tokens[b, [s * frames + t for s in range(patches)]] = emb
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1)
        h = torch.cat((cls, tokens), dim=1)
        for blk in model.blocks:
            h = _slow_block(blk, h, frames, patches, heads)
        expected = _layer_norm(h[:, 0], model.norm) @ model.head.weight.T + model.head.bias
        got = model(x)
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_parameter_count_is_vit_base_plus_temporal_branches():
    with torch.device("meta"):
        model = build_model("timesformer")
        vit_b = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=400)
    assert count_params(model) == 121_572_496
    temporal = 12 * (2 * 768 + (768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 768 + 768)) + 16 * 768
    assert count_params(model) == count_params(vit_b) + temporal
    # The reference's (and timm's) parameter names and shapes, so checkpoints load unchanged.
    ours = {k: v.shape for k, v in model.state_dict().items()}
    extra = {k for k in ours if k == "time_embed" or ".temporal_" in k}
    assert len(extra) == 12 * 8 + 1
    assert {k: v for k, v in ours.items() if k not in extra} == {k: v.shape for k, v in vit_b.state_dict().items()}
    assert ours["time_embed"] == (1, 16, 768) and ours["pos_embed"] == (1, 197, 768)


def test_embeddings_follow_clip_shape():
    with torch.device("meta"):
        model = build_model("timesformer", frames=8, size=112)
    assert model.time_embed.shape == (1, 8, 768) and model.pos_embed.shape == (1, 50, 768)
    assert count_params(model) == 121_572_496 - 8 * 768 - (197 - 50) * 768


def test_drop_path_is_linear_and_off_in_eval():
    model = create_model("timesformer", tiny=True)
    assert isinstance(model.blocks[0].drop_path, torch.nn.Identity)
    assert abs(model.blocks[1].drop_path.drop_prob - 0.1) < 1e-12
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
