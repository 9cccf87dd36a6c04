"""The target rewrites compute what the original modules compute, on random inputs, for a grid of layer settings."""

import itertools

import pytest
import torch
from torch import nn

from vcompile.compile.rewrites import (
    REWRITES_BY_TARGET,
    AdaptiveAvgPool3dAsMean,
    BatchNorm3dAs2d,
    Conv3dAs2d,
    Pool3dAs2d,
    apply_rewrites,
    fold_batchnorm3d,
    lower_conv3d,
)
from vcompile.zoo import create_model

ATOL = 1e-5
LAYERS_3D = (nn.Conv3d, nn.AvgPool3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d, nn.BatchNorm3d)


def _clip(channels: int, t: int = 7, h: int = 11, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, channels, t, h, w, generator=torch.Generator().manual_seed(seed))


def _conv_cases():
    """Kernel x stride x padding x groups with dilation 1, then dilations over a smaller set; bias alternates."""
    kernels = [(1, 1, 1), (3, 3, 3), (1, 3, 3), (3, 1, 1), (5, 3, 3), (2, 4, 4), (1, 1, 3)]
    strides = [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 1, 1)]
    paddings = [0, 1, (2, 0, 1), "same"]
    groups = [1, 2, 8]  # 8 = depthwise (8 input channels)
    cases = [(k, s, p, 1, g) for k, s, p, g in itertools.product(kernels, strides, paddings, groups)]
    cases += [(k, s, p, d, g) for k, s, p, d, g in itertools.product(kernels[1:4], strides[:3], paddings[1:3],
                                                                       [(2, 1, 1), (1, 2, 2)], [1, 8])]
    return [(*case, i % 2 == 0) for i, case in enumerate(cases) if case[2] != "same" or case[1] == (1, 1, 1)]


CONV_CASES = _conv_cases()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_conv3d_rewrite_matches_conv3d_on_a_grid():
    torch.manual_seed(0)
    checked, modes = 0, set()
    x = _clip(8)
    for k, s, p, d, g, bias in CONV_CASES:
        conv = nn.Conv3d(8, 16, k, s, p, d, groups=g, bias=bias)
        with torch.no_grad():
            try:
                ref = conv(x)
            except RuntimeError:  # a dilated kernel longer than the padded clip: PyTorch rejects it too
                continue
            for stack_taps in (False, True):
                new = lower_conv3d(conv, stack_taps=stack_taps)
                out = new(x)
                assert isinstance(new, Conv3dAs2d)
                assert out.shape == ref.shape, (k, s, p, d, g, new.mode)
                assert (out - ref).abs().max().item() <= ATOL, (k, s, p, d, g, new.mode)
                modes.add(new.mode)
        checked += 1
    assert checked > 200
    assert modes == {"time", "rows", "stacked", "taps"}


def test_conv3d_rewrite_stacks_taps_only_for_narrow_inputs():
    assert lower_conv3d(nn.Conv3d(3, 8, (3, 7, 7))).mode == "stacked"
    assert lower_conv3d(nn.Conv3d(64, 8, (3, 3, 3))).mode == "taps"
    assert lower_conv3d(nn.Conv3d(8, 8, (3, 3, 3), groups=8)).mode == "taps"


@pytest.mark.parametrize("h", [14, 15])
def test_strided_pointwise_conv_restarts_at_every_frame(h):
    """The (T*H, W) view with a row stride must not mix frames, also for an odd frame height."""
    conv = nn.Conv3d(4, 6, 1, stride=(1, 2, 2))
    x = _clip(4, t=3, h=h, w=9)
    new = lower_conv3d(conv)
    assert new.mode == "rows"
    torch.testing.assert_close(new(x), conv(x), atol=ATOL, rtol=0)


def _pool_cases():
    kernels = [(1, 3, 3), (3, 3, 3), (2, 2, 2), (1, 1, 1), (3, 1, 1)]
    strides = [None, 1, (1, 2, 2), (2, 2, 2), (2, 1, 1)]
    paddings = [0, (0, 1, 1), 1]
    for cls, k, s, p, ceil, include in itertools.product((nn.AvgPool3d, nn.MaxPool3d), kernels, strides, paddings,
                                                          (False, True), (True, False)):
        if cls is nn.MaxPool3d and not include:
            continue
        yield cls, k, s, p, ceil, include


def test_pool3d_rewrite_matches_pool3d_on_a_grid():
    checked = 0
    x = _clip(4)
    for cls, k, s, p, ceil, include in _pool_cases():
        pool = cls(k, s, p, ceil_mode=ceil, **({"count_include_pad": include} if cls is nn.AvgPool3d else {}))
        try:
            ref = pool(x)
        except RuntimeError:  # padding larger than half the kernel: PyTorch rejects it too
            continue
        new = lower_conv3d(pool)
        assert isinstance(new, Pool3dAs2d)
        out = new(x)
        assert out.shape == ref.shape, (cls.__name__, k, s, p, ceil, include)
        assert (out - ref).abs().max().item() <= ATOL, (cls.__name__, k, s, p, ceil, include)
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("dilation", [(1, 2, 2), (2, 1, 1)])
def test_dilated_max_pool3d_rewrite(dilation):
    pool = nn.MaxPool3d(3, 1, 1, dilation=dilation)
    x = _clip(3)
    torch.testing.assert_close(lower_conv3d(pool)(x), pool(x), atol=0, rtol=0)


def test_adaptive_pool_and_batch_norm_rewrites():
    x = _clip(5)
    pool = nn.AdaptiveAvgPool3d(1)
    assert isinstance(lower_conv3d(pool), AdaptiveAvgPool3dAsMean)
    torch.testing.assert_close(lower_conv3d(pool)(x), pool(x), atol=ATOL, rtol=0)
    assert lower_conv3d(nn.AdaptiveAvgPool3d((2, 1, 1))).__class__ is nn.AdaptiveAvgPool3d  # only "to 1" rewrites
    bn = nn.BatchNorm3d(5).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    assert isinstance(lower_conv3d(bn), BatchNorm3dAs2d)
    torch.testing.assert_close(lower_conv3d(bn)(x), bn(x), atol=ATOL, rtol=0)
    assert isinstance(lower_conv3d(nn.BatchNorm3d(5).train()), nn.BatchNorm3d)  # training BN keeps batch stats


def test_lower_conv3d_copies_and_keeps_the_original():
    conv = nn.Conv3d(3, 4, 3, padding=1)
    before = conv.weight.detach().clone()
    new = lower_conv3d(conv)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    assert isinstance(conv, nn.Conv3d)
    torch.testing.assert_close(conv.weight, before, atol=0, rtol=0)


def _randomise_norms(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.normal_(generator=gen)
                m.bias.normal_(generator=gen)
    return module.eval()


class _ConvNormCases(nn.Module):
    """conv_a -> bn_a folds; conv_b's output also feeds the sum, and shared_bn runs twice: neither folds."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4)
        self.conv_b, self.bn_b = nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4)
        self.conv_c, self.conv_d, self.shared_bn = nn.Conv3d(4, 4, 1), nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4)

    def forward(self, x):
        x = self.bn_a(self.conv_a(x))
        y = self.conv_b(x)
        x = self.bn_b(y) + y
        return self.shared_bn(self.conv_c(x)) + self.shared_bn(self.conv_d(x))


def test_fold_batchnorm3d_folds_only_single_use_pairs():
    model = _randomise_norms(_ConvNormCases())
    x = _clip(3)
    folded = fold_batchnorm3d(model, x)
    assert isinstance(folded.bn_a, nn.Identity) and folded.conv_a.bias is not None
    assert isinstance(folded.bn_b, nn.BatchNorm3d) and isinstance(folded.shared_bn, nn.BatchNorm3d)
    assert isinstance(model.bn_a, nn.BatchNorm3d)  # the original is untouched
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max().item() <= ATOL
    assert fold_batchnorm3d(model.train(), x) is model  # training norms use batch statistics: nothing to fold
    no_norm = nn.Sequential(nn.Conv3d(3, 4, 1)).eval()
    assert fold_batchnorm3d(no_norm, x) is no_norm


@pytest.mark.parametrize("name", ["x3d-xs", "movinet-a0", "movinet-a2", "i3d-bert"])
def test_whole_tiny_models_equal_before_and_after(name):
    model = create_model(name, tiny=True)
    x = _clip(3, t=4, h=64, w=64, seed=1)
    new, applied = apply_rewrites(model, "executorch", x)
    assert applied == ["fold_batchnorm3d", "lower_conv3d"]
    assert not any(isinstance(m, LAYERS_3D) for m in new.modules()), "a 3-D layer survived the rewrite"
    assert any(isinstance(m, LAYERS_3D) for m in model.modules()), "the original model was changed"
    with torch.no_grad():
        ref, out = model(x), new(x)
    assert out.shape == ref.shape == (2, 10)
    assert (out - ref).abs().max().item() <= 1e-4
    again, applied = apply_rewrites(model, "executorch")  # traced at the zoo model's own build shape
    assert applied == ["fold_batchnorm3d", "lower_conv3d"]


def test_apply_rewrites_skips_models_without_3d_layers_and_unknown_targets():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    same, applied = apply_rewrites(model, "executorch", torch.zeros(1, 3, 8, 8))
    assert same is model and applied == []
    conv = nn.Conv3d(3, 4, 3)
    assert apply_rewrites(conv, "no-such-target") == (conv, [])
    assert [r.name for r in REWRITES_BY_TARGET["executorch"]] == ["fold_batchnorm3d", "lower_conv3d"]
