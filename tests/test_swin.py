"""Swin-T: equal to torchvision's swin3d_t (tiny and paper scale), window geometry, sub-blocks, export rules."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models.swin_transformer import PatchMerging as TvPatchMerging
from torchvision.models.video import swin3d_t
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d
from torchvision.models.video.swin_transformer import SwinTransformer3d as TvSwin3d

import vcompile.zoo.swin as swin
from vcompile.zoo import build_model, create_model, get_spec
from vcompile.zoo.flops import model_cost
from vcompile.zoo.spec import IMAGENET_MEAN, IMAGENET_STD


def _scramble(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights large enough that every bias entry, mask and branch visibly changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)


def _torchvision_like(cfg: swin.SwinConfig, num_classes: int) -> TvSwin3d:
    return TvSwin3d(patch_size=list(cfg.patch), embed_dim=cfg.dim, depths=list(cfg.depths),
                    num_heads=list(cfg.heads), window_size=list(cfg.window), num_classes=num_classes).eval()


def test_exact_parameter_count_and_macs():
    with torch.device("meta"):
        reference = swin3d_t()
    cost = model_cost("swin-t")
    assert cost.params == sum(p.numel() for p in reference.parameters()) == 28_158_070
    assert cost.macs / 1e9 == pytest.approx(43.882, abs=0.001)  # torchvision's _ops for swin3d_t
    assert model_cost("swin-t", tiny=True).params < 500_000


def test_spec():
    spec = get_spec("Swin3D_T")
    assert (spec.name, spec.category, spec.paper_params_m) == ("swin-t", "attention-only", 28.0)
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)  # torchvision's Swin3D_T transforms
    assert spec.check_shape(16, 224) is None and spec.check_shape(4, 64) is None
    assert spec.check_shape(15, 224) and spec.check_shape(16, 200)


@pytest.mark.parametrize("cfg, frames, size", [
    (swin.SWIN_TINY_TEST, 4, 64),  # padding 16 -> 21 and 8 -> 14 with shift 3, clipped windows in stages 3-4
    (swin.SwinConfig(dim=16, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), window=(2, 3, 3)), 8, 64),  # shifts in time
    (swin.SwinConfig(dim=16, depths=(1, 1, 2, 2), heads=(2, 2, 4, 4), window=(3, 5, 3)), 10, 96),
], ids=["registered-tiny", "window-2x3x3", "window-3x5x3"])
def test_matches_torchvision_small(cfg, frames, size):
    torch.manual_seed(0)
    reference = _torchvision_like(cfg, num_classes=7)
    _scramble(reference)
    ours = swin.SwinTransformer3d(cfg, num_classes=7, frames=frames, size=size).eval()
    ours.load_state_dict(swin.state_dict_from_torchvision(reference.state_dict()))
    clip = torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(clip), ours(clip)
    assert expected.abs().max() > 0.5
    assert (got - expected).abs().max() < 1e-5


def test_matches_torchvision_swin3d_t():
    torch.manual_seed(0)
    reference = swin3d_t().eval()
    ours = create_model("swin-t", weights=swin.state_dict_from_torchvision(reference.state_dict()))
    clip = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = reference(clip), ours(clip)
    assert got.shape == (1, 400)
    assert (got - expected).abs().max() < 1e-5


def test_window_geometry_at_paper_scale():
    with torch.device("meta"):
        model = build_model("swin-t")
    found = []
    for stage in model.stages:
        plain, shifted = (block.attn.layout for block in stage.blocks[:2])
        found.append((shifted.grid, shifted.geometry, shifted.num_windows, plain.geometry[1]))
    no_pad = (0, 0, 0)
    assert found == [
        ((8, 56, 56), ((8, 7, 7), (0, 3, 3), no_pad), 64, (0, 0, 0)),  # 8 frames = the window: no temporal shift
        ((8, 28, 28), ((8, 7, 7), (0, 3, 3), no_pad), 16, (0, 0, 0)),
        ((8, 14, 14), ((8, 7, 7), (0, 3, 3), no_pad), 4, (0, 0, 0)),
        ((8, 7, 7), ((8, 7, 7), (0, 0, 0), no_pad), 1, (0, 0, 0)),  # one window: no shift, no mask
    ]
    assert [len(stage.blocks) for stage in model.stages] == [2, 2, 6, 2]
    rates = [block.drop_path.drop_prob if hasattr(block.drop_path, "drop_prob") else 0.0
             for stage in model.stages for block in stage.blocks]
    assert rates == pytest.approx([0.1 * i / 11 for i in range(12)])


@pytest.mark.parametrize("shifts", [(0, 3, 3), (1, 2, 0), (3, 5, 1)])
def test_cyclic_shift_is_roll(shifts):
    x = torch.randn(2, 4, 7, 6, 3)
    assert torch.equal(swin.cyclic_shift(x, shifts), torch.roll(x, [-s for s in shifts], dims=(1, 2, 3)))


def test_partition_holds_the_reference_windows():
    layout = swin.WindowLayout(grid=(4, 9, 12), window=(2, 3, 4), shift=(1, 1, 2))
    (wd, wh, ww), (nd, nh, nw) = layout.geometry[0], layout.counts
    x = torch.randn(2, 4, 9, 12, 5)
    windows = layout.partition(x)
    assert windows.shape == (2 * nd * nh * nw, wd * wh * ww, 5)
    assert torch.equal(layout.reverse(windows), x)
    # The same windows as the reference's 8-D partition, windows and tokens in another (fixed) order.
    reference = x.view(2, nd, wd, nh, wh, nw, ww, 5).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, 5)
    ours_sorted = windows.reshape(2, nd, nw, nh, wh, wd, ww, 5).permute(0, 1, 3, 2, 5, 4, 6, 7)
    assert torch.equal(ours_sorted.reshape(reference.shape), reference)


@pytest.mark.parametrize("grid, shift", [((4, 10, 9), (1, 2, 2)), ((2, 8, 8), (1, 2, 2)), ((4, 8, 3), (0, 0, 0))])
def test_window_attention_matches_torchvision(grid, shift):
    window = (2, 4, 4)
    torch.manual_seed(0)
    reference = ShiftedWindowAttention3d(16, list(window), list(shift), num_heads=2).eval()
    _scramble(reference)
    ours = swin.WindowAttention3d(16, 2, swin.WindowLayout(grid, window, shift)).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if k != "relative_position_index"})
    x = torch.randn(3, *grid, 16)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < 1e-5


def test_patch_merging_matches_torchvision():
    torch.manual_seed(0)
    reference = TvPatchMerging(8)
    ours = swin.PatchMerging2d(8)
    _scramble(reference)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 6, 10, 8)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() < 1e-6


def test_tables_are_shared_buffers():
    model = create_model("swin-t", tiny=True)
    assert not any("relative_position_index" in k or "bias_index" in k or "attn_mask" in k for k in model.state_dict())
    first, second = model.stages[0].blocks
    assert first.attn.attn_mask is None and second.attn.attn_mask.shape == (9, 1, 98, 98)
    assert set(second.attn.attn_mask.unique().tolist()) == {-100.0, 0.0}


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_rank, self.ops = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.overloadpacket.__name__)
        for t in torch.utils._pytree.tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.max_rank = max(self.max_rank, t.dim())
        return out


def test_forward_and_backward_use_rank_5_and_no_roll():
    model = create_model("swin-t", tiny=True).train()
    clip = torch.randn(2, 3, 4, 64, 64)
    with _OpRecorder() as rec:
        model(clip).square().sum().backward()
    assert rec.max_rank == 5
    assert not {"roll", "index_put", "index_put_"} & rec.ops
    assert model.stages[0].blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0
