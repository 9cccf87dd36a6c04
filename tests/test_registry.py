"""The registry: names, aliases, seeding, weights files and shape checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import pytest
import torch
from support import tiny_clip

from vcompile.errors import InvalidShapeError, UnknownModelError, WeightsError
from vcompile.zoo import CATEGORIES, ModelSpec, create_model, get_config, get_spec, list_models, resolve_name

PAPER_MODELS = {"tsm-r50", "nl-r50", "tea-r50", "i3d-bert", "vtn-r50", "vtn-eff", "x3d-xs", "movinet-a0",
                "movinet-a2", "timesformer", "vivit-fe", "swin-t", "mvit-s"}


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_registered_models_are_the_papers():
    names = set(list_models())
    assert names <= PAPER_MODELS
    assert {"tsm-r50", "nl-r50", "vtn-r50", "vtn-eff"} <= names
    for name in names:
        assert get_spec(name).category in CATEGORIES


def _mutable_parts(value, path: str):
    """Paths of everything mutable inside a value: dicts, lists, sets, unfrozen dataclasses (walked recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not type(value).__dataclass_params__.frozen:
            yield f"{path}: unfrozen {type(value).__name__}"
        for f in dataclasses.fields(value):
            yield from _mutable_parts(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _mutable_parts(item, f"{path}[{i}]")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        yield f"{path}: {type(value).__name__}"


@pytest.mark.parametrize("name", list_models())
def test_configs_and_specs_are_immutable_and_hashable(name):
    for label, value in (("spec", get_spec(name)), ("full", get_config(name)), ("tiny", get_config(name, tiny=True))):
        assert dataclasses.is_dataclass(value), label
        assert not list(_mutable_parts(value, label))
        assert hash(value) == hash(dataclasses.replace(value))
    json.dumps(dataclasses.asdict(get_spec(name)))  # the CLI's `show` prints it


def test_unsupported_targets_are_pairs_with_a_lookup():
    base = dict(name="m", paper_name="M", category="baseline", paper_params_m=1.0, version="v", source="s")
    spec = ModelSpec(**base, unsupported={"coreml": "no 3-D pooling"})
    assert spec.unsupported == (("coreml", "no 3-D pooling"),)
    assert spec.unsupported == ModelSpec(**base, unsupported=(("coreml", "no 3-D pooling"),)).unsupported
    assert spec.unsupported_reason("coreml") == "no 3-D pooling" and spec.unsupported_reason("onnx") is None
    assert json.loads(json.dumps(dataclasses.asdict(spec)))["unsupported"] == [["coreml", "no 3-D pooling"]]
    assert hash(spec) == hash(dataclasses.replace(spec))
    assert ModelSpec(**base).unsupported == () and ModelSpec(**base).unsupported_reason("onnx") is None


@pytest.mark.parametrize("spelling", ["tsm-r50", "TSM-R50", "tsm_r50", "TSM_R50", " tsm-r50 ".strip(), "tsm"])
def test_aliases_resolve(spelling):
    assert resolve_name(spelling) == "tsm-r50"


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'tsm-r5'.*did you mean tsm-r50"):
        create_model("tsm-r5")
    with pytest.raises(UnknownModelError, match="vcompile models"):
        get_spec("qwertyuiop")


def test_list_models_filters_and_orders_by_category():
    assert list_models("vtn*") == ["vtn-eff", "vtn-r50"]
    order = [CATEGORIES.index(get_spec(n).category) for n in list_models()]
    assert order == sorted(order)


def test_seeded_init_is_deterministic_and_seed_dependent():
    a = create_model("vtn-r50", tiny=True, seed=0)
    b = create_model("vtn-r50", tiny=True, seed=0)
    c = create_model("vtn-r50", tiny=True, seed=1)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_seeded_init_is_bit_identical_across_processes():
    names = list_models()
    code = ("import hashlib, torch; from vcompile.zoo import create_model\n"
            f"for n in {names!r}:\n"
            "    h = hashlib.sha256()\n"
            "    for k, v in sorted(create_model(n, tiny=True, seed=3).state_dict().items()):\n"
            "        h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())\n"
            "    print(n, h.hexdigest())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    theirs = dict(line.split() for line in out.strip().splitlines())
    assert theirs == {n: _digest(create_model(n, tiny=True, seed=3)) for n in names}


def test_seeding_does_not_disturb_the_global_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_model("tsm-r50", tiny=True, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_random_init_leaves_no_parameter_all_zero():
    for name in list_models():
        model = create_model(name, tiny=True)
        zero = [k for k, p in model.named_parameters() if not p.any()]
        assert not zero, f"{name}: parameters left at zero: {zero[:5]}"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_round_trip(tmp_path, suffix):
    source = create_model("vtn-eff", tiny=True, seed=7)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)  # a wrapped checkpoint is unwrapped
    loaded = create_model("vtn-eff", tiny=True, seed=0, weights=path)
    x = tiny_clip()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    assert loaded.build_args["weights"] == str(path)


def test_weights_as_state_dict():
    source = create_model("tsm-r50", tiny=True, seed=2)
    loaded = create_model("tsm-r50", tiny=True, weights=source.state_dict())
    assert _digest(loaded) == _digest(source)


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        create_model("tsm-r50", tiny=True, weights=tmp_path / "nope.pt")


def test_corrupt_weights_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        create_model("tsm-r50", tiny=True, weights=path)


def test_mismatched_weights_name_the_first_keys():
    other = create_model("vtn-r50", tiny=True).state_dict()
    with pytest.raises(WeightsError, match=r"does not fit tsm-r50: \d+ missing: fc\.weight.*unexpected: "
                                           r"proj\.weight"):
        create_model("tsm-r50", tiny=True, weights=other)
    wrong = create_model("tsm-r50", tiny=True, num_classes=7).state_dict()
    with pytest.raises(WeightsError, match=r"wrong shape: fc\.weight \(7, 256\) vs \(10, 256\)"):
        create_model("tsm-r50", tiny=True, weights=wrong)


def test_impossible_shapes_are_rejected():
    with pytest.raises(InvalidShapeError, match="multiples of 32; got 50"):
        create_model("tsm-r50", size=50)
    with pytest.raises(InvalidShapeError, match="num_classes"):
        create_model("tsm-r50", tiny=True, num_classes=-1)
