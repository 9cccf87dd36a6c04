"""Every registered model, parametrized over the registry: a new family is tested without editing this file."""

from __future__ import annotations

import pytest
import torch
from support import tiny_clip
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vcompile.zoo import TINY_CLASSES, count_params, create_model, get_spec, list_models
from vcompile.zoo.flops import count_cost, model_cost

MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_paper_scale_params(name):
    """Parameters within 1% of the paper's Table 4 (meta count == real count)."""
    spec = get_spec(name)
    meta = model_cost(name)
    assert abs(meta.params / 1e6 - spec.paper_params_m) / spec.paper_params_m < 0.01, meta.params
    assert count_params(create_model(name)) == meta.params


@pytest.mark.parametrize("name", MODELS)
def test_recorded_cost_is_what_counting_gives(name):
    """The params and FLOPs each spec records (so that `vcompile models` builds nothing) equal a fresh count; at any
    other shape `model_cost` counts."""
    spec, counted = get_spec(name), count_cost(name)
    assert (spec.params, spec.flops) == (counted.params, counted.flops), \
        f"update {name}'s ModelSpec: params={counted.params:_}, flops={counted.flops:_}"
    assert model_cost(name) == counted
    larger = spec.size + (spec.size_multiple if spec.size_multiple > 1 else 32)
    assert model_cost(name, size=larger) == count_cost(name, size=larger)
    assert model_cost(name, size=larger).flops > counted.flops
    assert model_cost(name, batch=2).flops == count_cost(name, batch=2).flops


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_paper_scale_forward(name):
    """A paper-scale forward pass at 1 x 3 x 16 x 224 x 224 gives finite (1, 400) logits (seconds per model)."""
    model = create_model(name)
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


def _apply_classifier(classifier: nn.Module, pre_logits: torch.Tensor) -> torch.Tensor:
    if isinstance(classifier, nn.Conv3d):  # MoViNet's 1x1x1 conv classifier
        return classifier(pre_logits[:, :, None, None, None]).flatten(1)
    return classifier(pre_logits)


@pytest.mark.parametrize("name", MODELS)
def test_timm_interface(name):
    """forward == forward_head(forward_features); pre-logits are what the classifier reads; it can be replaced."""
    model = create_model(name, tiny=True)
    x = tiny_clip(batch=2)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), logits, atol=1e-6, rtol=0)
        pre_logits = model.forward_head(features, pre_logits=True)
    assert isinstance(model.num_features, int) and pre_logits.shape == (2, model.num_features)
    classifier = model.get_classifier()
    assert isinstance(classifier, (nn.Linear, nn.Conv3d))
    assert getattr(classifier, "in_features", getattr(classifier, "in_channels", None)) == model.num_features
    assert model.num_classes == TINY_CLASSES
    with torch.no_grad():  # frame-averaging families average per-frame logits: equal up to rounding
        torch.testing.assert_close(_apply_classifier(classifier, pre_logits), logits, atol=1e-5, rtol=1e-5)

    keys = {k: v.shape for k, v in model.state_dict().items()}
    head_keys = {f"{model.classifier_name}.{k}" for k in classifier.state_dict()}
    assert head_keys and head_keys <= set(keys)
    model.reset_classifier(7)
    assert model.get_classifier() is not classifier and model.num_classes == 7
    resized = {k: v.shape for k, v in model.state_dict().items()}
    assert resized.keys() == keys.keys()
    assert {k for k in keys if resized[k] != keys[k]} == {k for k in head_keys if keys[k][0] == TINY_CLASSES}
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        torch.testing.assert_close(model.forward_features(x), features, atol=0, rtol=0)

    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    assert set(model.state_dict()) == set(keys) - head_keys
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, model.num_features)
    torch.testing.assert_close(out, pre_logits, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)


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
