"""MViT-S: per-block table, exact sizes, numerical equivalence with torchvision's MViT, and a clean static export."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

import vcompile.zoo.mvit as mvit
from vcompile.zoo.registry import build_model, count_params, create_model

tv_mvit = pytest.importorskip("torchvision.models.video.mvit")


def torchvision_mvit(cfg: mvit.MvitConfig, frames: int, size: int, num_classes: int) -> nn.Module:
    """torchvision's MViT with the same configuration: v1 settings and a block_setting from `block_table`."""
    settings = [
        tv_mvit.MSBlockConfig(
            num_heads=b.heads, input_channels=b.dim, output_channels=b.dim_out,
            kernel_q=list(cfg.pool_kernel) if b.stride_q else [], kernel_kv=list(cfg.pool_kernel),
            stride_q=list(b.stride_q), stride_kv=list(b.stride_kv),
        )
        for b in mvit.block_table(cfg)
    ]
    return tv_mvit.MViT(
        spatial_size=(size, size), temporal_size=frames, block_setting=settings, residual_pool=False,
        residual_with_cls_embed=False, rel_pos_embed=False, proj_after_attn=False,
        stochastic_depth_prob=cfg.drop_path, num_classes=num_classes, patch_embed_kernel=cfg.patch_kernel,
        patch_embed_stride=cfg.patch_stride, patch_embed_padding=cfg.patch_padding,
    ).eval()


def test_block_table_is_the_reconstructed_mvit_s():
    table = mvit.block_table(mvit.MVIT_S)
    assert [b.heads for b in table] == [1] * 3 + [2] * 7 + [4] * 6
    assert [b.dim for b in table] == [128] * 3 + [256] * 7 + [512] * 6
    assert [b.dim_out for b in table] == [128, 128, 256] + [256] * 6 + [512] * 7
    assert [i for i, b in enumerate(table) if b.stride_q] == [3, 10]
    assert all(b.stride_q == (1, 2, 2) for b in table if b.stride_q)
    assert [b.stride_kv for b in table] == [(1, 8, 8)] * 3 + [(1, 4, 4)] * 7 + [(1, 2, 2)] * 6


def test_token_grids_and_drop_path_schedule():
    with torch.device("meta"):
        model = build_model("mvit-s")
    assert model.grid == (8, 28, 28)
    assert [b.out_grid for b in model.blocks][2:11] == [(8, 28, 28)] + [(8, 14, 14)] * 7 + [(8, 7, 7)]
    assert model.blocks[0].attn.pool_k.out_grid == (8, 4, 4)
    assert model.blocks[3].attn.pool_k.out_grid == (8, 7, 7)
    assert model.blocks[15].attn.pool_k.out_grid == (8, 4, 4)
    assert isinstance(model.blocks[0].drop_path, nn.Identity)
    assert model.blocks[15].drop_path.drop_prob == pytest.approx(0.2)
    assert model.blocks[8].drop_path.drop_prob == pytest.approx(0.2 * 8 / 15)


def test_parameter_counts():
    with torch.device("meta"):
        full, tiny = build_model("mvit-s"), build_model("mvit-s", tiny=True)
    assert count_params(full) == 26_038_032  # paper: 26.1M (-0.24%)
    assert abs(count_params(full) / 26.1e6 - 1) < 0.01
    assert count_params(tiny) == 102_234
    assert full.head.in_features == 512


def test_positional_embedding_matches_repeat_interleave_layout():
    model = create_model("mvit-s", tiny=True)
    t, h, w = model.grid
    reference = (torch.repeat_interleave(model.pos_embed_temporal[0, :, 0], h * w, dim=0)
                 + model.pos_embed_spatial[0, 0].repeat(t, 1))
    ours = (model.pos_embed_temporal + model.pos_embed_spatial).reshape(t * h * w, -1)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_batch_is_not_baked_in():
    model = create_model("mvit-s", tiny=True)
    x = torch.randn(3, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tiny", [True, False], ids=["tiny", "full"])
def test_equivalent_to_torchvision_mvit(tiny):
    cfg = mvit.MVIT_TINY if tiny else mvit.MVIT_S
    shape, classes = ((2, 3, 4, 64, 64), 10) if tiny else ((1, 3, 16, 224, 224), 400)
    torch.manual_seed(0)
    reference = torchvision_mvit(cfg, shape[2], shape[3], classes)
    with torch.no_grad():  # torchvision zero-initialises biases and LayerNorms; make every weight count
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model = create_model("mvit-s", tiny=tiny)
    model.load_state_dict(mvit.mvit_v1_from_torchvision(reference.state_dict()), strict=True)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = reference(x.clone())  # torchvision adds in place into its own intermediates
        out = model(x)
    assert out.shape == (shape[0], classes)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_traced_graph_has_no_inplace_or_split_ops():
    model = create_model("mvit-s", tiny=True)
    program = torch.export.export(model, (torch.randn(2, 3, 4, 64, 64),))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    banned = {"index_put", "tensor_split", "repeat_interleave", "slice_scatter", "copy_", "add_", "roll"}
    assert not {op for op in ops if any(f"aten.{b}." in op for b in banned)}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is deprecated, still tested
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_is_static_rank5_and_matches(tmp_path, dynamo):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = create_model("mvit-s", tiny=True)
    x = torch.randn(2, 3, 4, 64, 64)
    path = tmp_path / "mvit.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=18, dynamo=dynamo)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert not {"Loop", "If", "ScatterND", "ScatterElements"} & set(ops)
    ranks = [len(v.type.tensor_type.shape.dim) for v in (*graph.value_info, *graph.output)]
    assert len(ranks) > 100 and max(ranks) <= 5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(out - expected).max() < 1e-4
