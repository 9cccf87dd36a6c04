"""`localize_onnx` finds nothing in faithful exports and names the module whose weight was changed in the file.

Tiny zoo models are exported with both exporters (and simplified by onnxsim where said); a perturbed artifact has
one initializer scaled by 1.5 in the ONNX file, which must fail parity and be localised to its module.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.check.localize import Localization, _torchscript_scope, localize_onnx, localize_threshold
from vcompile.check.metrics import TOLERANCES, compare_logits
from vcompile.zoo import create_model

onnx = pytest.importorskip("onnx", reason="onnx is a core dependency; install vcompile")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a core dependency; install vcompile")

CLIP = tiny_clip(batch=1)
MODELS = ("tsm-r50", "vtn-eff", "x3d-xs", "movinet-a0", "timesformer", "i3d-bert")
DYNAMO_MODELS = ("tsm-r50", "movinet-a0", "timesformer", "i3d-bert")  # dynamo exports cost ~2 s each


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """``export(name, exporter, simplify=False)`` -> (model, path), each export made once per module."""
    folder, made = tmp_path_factory.mktemp("localize"), {}

    def get(name: str, exporter: str, simplify: bool = False):
        key = (name, exporter, simplify)
        if key not in made:
            model = create_model(name, tiny=True)
            path = folder / f"{name}-{exporter}.onnx"
            if (name, exporter, False) not in made:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(model, (CLIP,), str(path), dynamo=exporter == "dynamo", opset_version=18,
                                      input_names=["video"], output_names=["logits"])
                made[(name, exporter, False)] = (model, path)
            if simplify:
                onnxsim = pytest.importorskip("onnxsim", reason="onnxsim is a core dependency; install vcompile")
                simplified, ok = onnxsim.simplify(onnx.load(str(path)))
                assert ok
                path = folder / f"{name}-{exporter}-simplified.onnx"
                onnx.save(simplified, str(path))
                made[key] = (model, path)
        return made[key]

    return get


def _initializer_of(proto, model: torch.nn.Module, param: str, folded_bn: str | None = None) -> int:
    """Index of the initializer that holds ``param``: by name, else by value (transposed, as MatMul keeps a
    Linear's weight, or folded with the BatchNorm ``folded_bn`` as the TorchScript exporter stores a conv's)."""
    names = [init.name for init in proto.graph.initializer]
    if param in names:
        return names.index(param)
    weight = model.get_parameter(param).detach()
    if folded_bn is not None:
        bn = model.get_submodule(folded_bn)
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
    wanted = [weight.numpy()] + ([weight.numpy().T] if weight.dim() == 2 else [])
    for i, init in enumerate(proto.graph.initializer):
        value = onnx.numpy_helper.to_array(init)
        if any(value.shape == w.shape and np.allclose(value, w, rtol=1e-5, atol=1e-6) for w in wanted):
            return i
    raise LookupError(f"no initializer holds {param}")


def _perturb(path, out, model, param: str, folded_bn: str | None = None):
    proto = onnx.load(str(path))
    init = proto.graph.initializer[_initializer_of(proto, model, param, folded_bn)]
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(1.5), init.name))
    onnx.save(proto, str(out))
    return out


def _parity(model, path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: CLIP.numpy()})
    with torch.no_grad():
        return compare_logits(model(CLIP).numpy(), got, TOLERANCES["fp32"])


@pytest.mark.parametrize("name, exporter", [(name, "torchscript") for name in MODELS]
                         + [(name, "dynamo") for name in DYNAMO_MODELS])
def test_faithful_export_localizes_nothing(name, exporter, export):
    model, path = export(name, exporter)
    result = localize_onnx(model, path, CLIP)
    assert result.module is None, result.describe()
    assert result.mapping == "name scopes" and result.compared >= 30
    assert result.error < 1e-4  # measured: at most 2.2e-6 over the zoo; the threshold is 1e-3
    assert result.threshold == localize_threshold(TOLERANCES["fp32"]) == 1e-3


def test_onnxsim_rewrite_is_not_reported(export):
    """onnxsim folds MoViNet's ReZero scale into the project conv: that conv's value matches no PyTorch module,
    but its block agrees, so nothing is reported."""
    model, path = export("movinet-a0", "torchscript", simplify=True)
    result = localize_onnx(model, path, CLIP)
    assert result.module is None, result.describe()
    assert "blocks.b0_l0.project.conv" in result.healed


def test_simplified_dynamo_export_uses_parameter_names_or_restored_scopes(export):
    model, path = export("tsm-r50", "dynamo", simplify=True)
    _, exported = export("tsm-r50", "dynamo")
    bare = localize_onnx(model, path, CLIP)  # onnxsim dropped the name scopes
    restored = localize_onnx(model, path, CLIP, scopes_from=exported)
    assert (bare.module, bare.mapping) == (None, "parameter names") and bare.compared >= 15
    assert (restored.module, restored.mapping) == (None, "name scopes") and restored.compared > bare.compared


# (model, exporter, simplified, perturbed parameter, BatchNorm folded into it, module expected)
PERTURBATIONS = [
    # A Linear in a transformer block; MatMul keeps its weight transposed under an anonymous name.
    ("vtn-eff", "torchscript", False, "temporal.blocks.0.mlp.fc1.weight", None, "temporal.blocks.0.mlp.fc1"),
    ("timesformer", "dynamo", False, "blocks.1.mlp.fc1.weight", None, "blocks.1.mlp.fc1"),
    ("i3d-bert", "dynamo", False, "bert.blocks.0.attn.qkv.weight", None, "bert.blocks.0.attn.qkv"),
    # BatchNorm folded into the conv: the TorchScript exporter keeps the conv's scope on the fused Conv node.
    ("tsm-r50", "torchscript", False, "trunk.layer2.0.conv2.weight", "trunk.layer2.0.bn2", "trunk.layer2.0.conv2"),
    # The dynamo exporter tags the fused Conv with the BatchNorm's scope, but the node consumes the conv's
    # named weight, so the conv is named, not trunk.layer2.0.bn2 (which completes after it).
    ("tsm-r50", "dynamo", False, "trunk.layer2.0.conv2.weight", None, "trunk.layer2.0.conv2"),
    ("tsm-r50", "dynamo", True, "trunk.layer3.0.conv1.weight", None, "trunk.layer3.0.conv1"),
    ("x3d-xs", "torchscript", False, "stages.0.0.shortcut_conv.weight", None, "stages.0.0.shortcut_conv"),
    ("movinet-a0", "dynamo", False, "conv7.conv.weight", None, "conv7.conv"),
    # A parameter of the module's own ops (the class token it prepends): the first child sees a wrong input,
    # and the node that computed it belongs to the module itself.
    ("vtn-eff", "torchscript", False, "temporal.cls_token", None, "temporal"),
]


@pytest.mark.parametrize("name, exporter, simplify, param, folded_bn, expected", PERTURBATIONS,
                         ids=[f"{p[0]}-{p[1]}{'-sim' if p[2] else ''}-{p[5]}" for p in PERTURBATIONS])
def test_perturbed_weight_is_localized(name, exporter, simplify, param, folded_bn, expected, export, tmp_path):
    model, path = export(name, exporter, simplify)
    perturbed = _perturb(path, tmp_path / "perturbed.onnx", model, param, folded_bn)
    assert not _parity(model, perturbed).passed  # the perturbation is a parity failure
    result = localize_onnx(model, perturbed, CLIP)
    assert result.module == expected, result.describe()
    assert result.diverging[0] == expected and result.error > 10 * result.threshold
    assert expected in result.describe() and result.onnx_node


def test_torchscript_scopes_follow_the_calls():
    """A TorchScript scope names modules by the call stack: NL-R50 calls ``trunk.conv1`` from the top level."""
    callees = {"": ["trunk.conv1", "trunk.layer2.0", "nonlocal_blocks.layer2_0"],
               "trunk.layer2.0": ["trunk.layer2.0.conv1", "trunk.layer2.0.relu"],
               "nonlocal_blocks.layer2_0": ["nonlocal_blocks.layer2_0.g"]}
    assert _torchscript_scope("/conv1/Conv", callees) == "trunk.conv1"
    assert _torchscript_scope("/layer2.0/conv1/Conv", callees) == "trunk.layer2.0.conv1"
    assert _torchscript_scope("/layer2.0/relu_2/Relu", callees) == "trunk.layer2.0.relu"  # a third call
    assert _torchscript_scope("/layer2_0/g/Conv", callees) == "nonlocal_blocks.layer2_0.g"
    assert _torchscript_scope("/inner/layer2.0/Add", callees) == "trunk.layer2.0"  # past a wrapper
    assert _torchscript_scope("/Transpose", callees) == ""
    assert _torchscript_scope("node_Conv_12", callees) is None


def test_localization_round_trip():
    result = Localization("a.b", "/a/b/Conv", 0.5, 0.25, 1e-3, 10, 1, ("a.b", "a"), "name scopes")
    assert Localization(**result.to_dict()) == result and result.diverges
    assert "first divergence at a.b" in result.describe()
