"""Core ML target: every zoo model's tiny variant converts to an ML Program whose saved spec has the expected
interface; on macOS, Core ML's prediction matches PyTorch to fp16 tolerance."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.compile import BuildError, BuildOptions, build, get_target
from vcompile.zoo import create_model, list_models

pytest.importorskip("coremltools", reason='the coreml target needs coremltools: pip install "vcompile[coreml]"')

import vcompile.compile.coreml as coreml  # noqa: E402 - after the skip, so that coremltools is there
from vcompile.runtimes.base import RunnerError  # noqa: E402
from vcompile.runtimes.coreml import NOT_MACOS, CoreMLRunner  # noqa: E402

ON_MACOS = platform.system() == "Darwin"
FP16 = BuildOptions(tiny=True, batch=2, precision="fp16")


def _interface(artifact) -> tuple[list, list]:
    """(name, shape, dtype) of the saved package's inputs and outputs, read from its spec by coremltools."""
    ct = coreml.import_coremltools()
    spec = ct.utils.load_spec(str(artifact.file()))
    dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    return tuple([(f.name, list(f.type.multiArrayType.shape), dtype(f.type.multiArrayType.dataType)) for f in fs]
                 for fs in (spec.description.input, spec.description.output))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def test_coreml_target_defaults_to_fp16():
    target = get_target("mlpackage")
    assert target.name == "coreml" and target.default_precision == "fp16"
    assert set(target.precisions) == {"fp16", "fp32"}


@pytest.mark.parametrize("name", list_models())
def test_coreml_builds_a_valid_mlprogram(name, tmp_path):
    artifact = build(name, "coreml", FP16, out=tmp_path)
    info = artifact.manifest["info"]
    assert artifact.file().name == "model.mlpackage" and artifact.file().is_dir()
    assert (artifact.file() / "Manifest.json").is_file() and artifact.manifest["files"]["model"]["bytes"] > 1000
    assert _interface(artifact) == ([("video", [2, 3, 4, 64, 64], "FLOAT32")], [("logits", [2, 10], "FLOAT32")])
    assert info["frontend"] == "torch.export"  # every zoo model converts from torch.export, none needs the trace
    assert info["format"] == "mlprogram" and info["deployment_target"] == "iOS17" and info["opset"] == ["CoreML7"]
    assert info["compute_precision"] == "fp16" and info["op_histogram"].get("cast") == 2  # fp32 I/O, fp16 inside
    assert info["ops"] == sum(info["op_histogram"].values())
    assert {"linear", "conv"} & set(info["op_histogram"])


def test_coreml_fp32_has_no_casts_and_a_new_key(tmp_path):
    fp16 = build("x3d-xs", "coreml", FP16, out=tmp_path)
    fp32 = build("x3d-xs", "coreml", BuildOptions(tiny=True, batch=2, precision="fp32"), out=tmp_path)
    assert fp32.key != fp16.key and fp32.manifest["info"]["compute_precision"] == "fp32"
    assert "cast" not in fp32.manifest["info"]["op_histogram"]
    assert _interface(fp32) == _interface(fp16)
    weights = [a.file() / "Data" / "com.apple.CoreML" / "weights" / "weight.bin" for a in (fp16, fp32)]
    assert weights[0].stat().st_size < 0.6 * weights[1].stat().st_size  # fp16 weights: half the bytes
    assert build("x3d-xs", "coreml", FP16, out=tmp_path).cached


def test_coreml_fold_limit_keeps_broadcast_constants_unfolded():
    class BroadcastBias(torch.nn.Module):  # like Swin's bias + shift mask: two small tables, one big sum
        def __init__(self):
            super().__init__()
            self.register_buffer("rows", torch.randn(32, 1))
            self.register_buffer("cols", torch.randn(32))

        def forward(self, x):
            return (x + (self.rows + self.cols)).mean((2, 3, 4))

    model, x = BroadcastBias().eval(), torch.randn(2, 3, 4, 32, 32)
    assert coreml.largest_tensor(model) == 32
    program = coreml.exported_program_from_module(model, x)
    adds = []
    for limit in (None, coreml.largest_tensor(model)):
        spec = coreml.mlprogram_from_torch(program, tuple(x.shape), "fp16", limit).get_spec()
        main = spec.mlProgram.functions["main"]
        ops = main.block_specializations[main.opset].operations
        adds.append(sum(op.type == "add" for op in ops))
        biggest = max(np.prod([d.constant.size for d in op.attributes["val"].type.tensorType.dimensions])
                      for op in ops if op.type == "const")
        assert biggest == (32 * 32 if limit is None else 32)
    assert adds == [1, 2]  # folded into a stored 32 x 32 table, or added at run time


def test_coreml_falls_back_to_trace_and_reports_both_failures(tmp_path, monkeypatch):
    def no_export(*args, **kwargs):
        raise RuntimeError("export refused for this test")

    def no_trace(*args, **kwargs):
        raise ValueError("no trace")

    monkeypatch.setattr(coreml, "exported_program_from_module", no_export)
    artifact = build("x3d-xs", "coreml", FP16, out=tmp_path / "trace")
    assert artifact.manifest["info"]["frontend"] == "torch.jit.trace"
    assert "export refused for this test" in artifact.manifest["info"]["fallback_reason"]
    assert _interface(artifact)[1] == [("logits", [2, 10], "FLOAT32")]

    monkeypatch.setattr(coreml, "traced_module_from_module", no_trace)
    with pytest.raises(BuildError, match=r"torch.export path: RuntimeError: export refused.*"
                                         r"torch.jit.trace path: ValueError: no trace"):
        build("x3d-xs", "coreml", FP16, out=tmp_path / "none")


@pytest.mark.skipif(ON_MACOS, reason="checks the message given off macOS")
def test_coreml_runner_says_it_needs_macos():
    with pytest.raises(RunnerError) as caught:
        CoreMLRunner(object()).activate()
    assert str(caught.value) == NOT_MACOS


@pytest.mark.macos
@pytest.mark.skipif(not ON_MACOS, reason="Core ML prediction runs only on macOS")
@pytest.mark.parametrize("name", list_models())
def test_coreml_prediction_matches_pytorch(name, tmp_path):
    from vcompile.runtimes import load

    artifact = build(name, "coreml", FP16, out=tmp_path)
    x = tiny_clip(batch=2, seed=1)
    with torch.no_grad():
        want = create_model(name, tiny=True)(x).numpy()
    for device in ("cpu", "all"):
        with load(artifact, "coreml", device=device) as runner:
            got = runner.infer(x.numpy())
        assert got.shape == want.shape and got.dtype == np.float32
        assert _cosine(got, want) >= 0.999, f"{name} on {device}: cosine {_cosine(got, want):.5f}"
