"""Every registered model, parametrized over the registry: a new family is tested without editing this file."""

from __future__ import annotations

import pytest
import torch
from support import tiny_clip
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vcompile.zoo import TINY_CLASSES, count_params, create_model, get_spec, list_models
from vcompile.zoo.flops import model_cost

MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_paper_scale_params_and_forward(name):
    """Parameters within 1% of the paper's Table 4 (meta count == real count); finite (1, 400) logits."""
    spec = get_spec(name)
    meta = model_cost(name)
    assert abs(meta.params / 1e6 - spec.paper_params_m) / spec.paper_params_m < 0.01, meta.params
    model = create_model(name)
    assert count_params(model) == meta.params
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 400)
    assert torch.isfinite(out).all()
    assert out.std() > 0


@pytest.mark.parametrize("name", MODELS)
def test_tiny_forward_backward_reaches_every_parameter(name):
    model = create_model(name, tiny=True).train()
    assert count_params(model) < 2_000_000
    out = model(tiny_clip(batch=2))
    assert out.shape == (2, TINY_CLASSES)
    torch.nn.functional.cross_entropy(out, torch.tensor([1, 3])).backward()
    no_grad = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters that get no gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS)
def test_batch_items_are_independent(name):
    """Batch size is free and one clip's logits do not depend on its neighbours (eval mode)."""
    model = create_model(name, tiny=True)
    x = tiny_clip(batch=3)
    with torch.no_grad():
        together = model(x)
        alone = model(x[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)


class _OpRecorder(TorchDispatchMode):
    """Records every ATen op a forward runs and the highest rank of any tensor it produces."""

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()
        self.max_rank, self.worst = 0, ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ops.add(name)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dim() > self.max_rank:
                self.max_rank, self.worst = t.dim(), f"{name} -> {tuple(t.shape)}"
        return out


# Ops that break a target: rank > 5 views aside, these trace to constants, ScatterND or dynamic shapes.
FORBIDDEN_OPS = {"roll", "index_put", "index_put_", "tensor_split", "copy_", "slice_scatter", "select_scatter",
                 "masked_scatter", "masked_scatter_", "scatter", "scatter_", "nonzero", "_local_scalar_dense"}


@pytest.mark.parametrize("name", MODELS)
def test_export_rules_rank_and_ops(name):
    """Export-friendly by construction: no tensor above rank 5 and no op that export tools mistranslate."""
    model = create_model(name, tiny=True)
    recorder = _OpRecorder()
    with torch.no_grad(), recorder:
        model(tiny_clip(batch=2))
    assert recorder.max_rank <= 5, f"rank {recorder.max_rank} tensor: {recorder.worst}"
    assert not recorder.ops & FORBIDDEN_OPS


@pytest.mark.parametrize("name", MODELS)
def test_tiny_flops_are_counted(name):
    cost = model_cost(name, tiny=True)
    assert cost.params == count_params(create_model(name, tiny=True))
    assert cost.flops > 0 and cost.macs * 2 == cost.flops
    assert cost.input_shape == (1, 3, 4, 64, 64)
