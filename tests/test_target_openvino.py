"""The openvino target and runtime: every tiny model converts from its verified ONNX to IR and computes what
PyTorch computes at f32; the settings are read back; broken IR and a missing package are one line each."""

from __future__ import annotations

import numpy as np
import pytest
from support import tiny_clip

from vcompile.check.parity import build_verified, run_parity
from vcompile.compile import BuildOptions, build, get_target
from vcompile.errors import VcompileError
from vcompile.runtimes import RUNTIMES, load
from vcompile.runtimes import precision as prec
from vcompile.runtimes.base import RunnerError
from vcompile.zoo import create_model, list_models

pytest.importorskip("openvino", reason='the openvino target needs openvino (pip install "vcompile[openvino]")')

TINY = BuildOptions(tiny=True, batch=1)


@pytest.mark.parametrize("name", list_models())
def test_openvino_matches_pytorch(name, artifacts):
    rows = run_parity(name, ["openvino"], options=BuildOptions(tiny=True), samples=2, out=artifacts).rows
    assert [(r.runtime, r.status) for r in rows] == [("openvino", "pass")], [r.message for r in rows]
    assert rows[0].agreement.max_abs <= 1e-4 and rows[0].agreement.cosine >= 0.9999


def test_ir_is_fp32_and_the_runner_says_how_it_ran(artifacts):
    artifact = build_verified("x3d-xs", "openvino", TINY, out=artifacts)
    assert artifact.manifest["parity"]["status"] == "pass" and artifact.manifest["parity"]["batches"] == [1, 2]
    assert artifact.manifest["parity"]["clips"] == "trace"
    assert {f["name"] for f in artifact.manifest["files"].values()} == {"model.xml", "model.bin"}
    assert 'element_type="f16"' not in artifact.file().read_text()  # weights were not compressed to fp16
    onnx = build_verified("x3d-xs", "onnx", TINY, out=artifacts)
    assert artifact.manifest["info"]["onnx"]["key"] == onnx.key and artifact.manifest["key_inputs"]["dependency"]
    model, clip = create_model("x3d-xs", tiny=True), tiny_clip(batch=3, seed=5)  # another batch than built for
    with load(artifact, "openvino", threads=1) as runner:
        got = runner.infer(clip.numpy())
        assert runner.settings["INFERENCE_PRECISION_HINT"] == "f32"
        assert runner.settings["INFERENCE_NUM_THREADS"] == "1" and runner.settings["PERFORMANCE_HINT"] == "LATENCY"
        assert runner.settings["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
        assert runner.get_input_metadata()["video"].shape == (None, 3, 4, 64, 64)
    np.testing.assert_allclose(got, model(clip).detach().numpy(), atol=1e-4, rtol=1e-3)
    with pytest.raises(RunnerError, match="runs fp32, bf16 or int8 artifacts, not 'fp16'"):
        load(artifact, "openvino", precision="fp16")
    with pytest.raises(RunnerError, match="this one is fp32, not bf16"):
        load(artifact, "openvino", precision="bf16")
    with pytest.raises(RunnerError, match="runs on the CPU only"):
        load(artifact, "openvino", device="cuda")


def test_a_truncated_bin_is_rebuilt_and_a_broken_ir_is_one_line(tmp_path):
    artifact = build("x3d-xs", "openvino", TINY, out=tmp_path)
    weights = artifact.file("weights")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RunnerError) as caught:  # run as it is, it cannot load, and says so in one line
        load(artifact, "openvino").activate()
    assert "cannot load" in str(caught.value) and "\n" not in str(caught.value)
    rebuilt = build("x3d-xs", "openvino", TINY, out=tmp_path)
    assert not rebuilt.cached and rebuilt.file("weights").stat().st_size > weights.stat().st_size // 2 + 1
    with load(rebuilt, "openvino") as runner:
        assert runner.infer(tiny_clip(batch=1).numpy()).shape == (1, 10)


def test_without_openvino_the_target_and_runtime_say_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    reason = get_target("ov").unavailable_reason()
    assert "needs the 'openvino' package" in reason and 'pip install "vcompile[openvino]"' in reason
    availability = RUNTIMES["openvino"].probe()
    assert not availability.can_run and 'pip install "vcompile[openvino]"' in availability.detail
    ir = type("IR", (), {"target": "openvino", "manifest": {"options": {"precision": "fp32"}}})()
    with pytest.raises(VcompileError, match="the openvino runtime cannot run here: openvino not installed"):
        load(ir, "openvino")


@pytest.mark.skipif(not prec.native_bf16()[0], reason="bf16 runs only on a CPU with native bf16, and this one has "
                                                        "none (no avx512_bf16, amx_bf16 or Arm bf16)")
def test_a_bf16_artifact_runs_in_bf16_and_passes_its_gate(tmp_path):
    artifact = build_verified("x3d-xs", "openvino", BuildOptions(tiny=True, batch=1, precision="bf16"), out=tmp_path)
    fp32 = build_verified("x3d-xs", "openvino", TINY, out=tmp_path)
    assert artifact.key != fp32.key and artifact.manifest["options"]["precision"] == "bf16"
    parity = artifact.manifest["parity"]
    assert parity["status"] == "pass" and parity["cosine"] >= 0.999 and parity["top1"] == 1.0, parity
    assert parity["clips"] == "held_apart" and parity["batches"] == [1, 1, 1, 1, 2]  # the gate's clips, not trace
    with load(artifact, "openvino", threads=1) as runner:
        assert runner.precision == "bf16" and runner.settings["INFERENCE_PRECISION_HINT"] == "bf16"
        got = runner.infer(tiny_clip(batch=1).numpy())
    with load(fp32, "openvino", threads=1) as runner:
        exact = runner.infer(tiny_clip(batch=1).numpy())
    assert 0 < np.abs(got - exact).max() < 0.1  # it really ran in bf16: close to fp32, not equal to it


def test_a_bf16_artifact_is_not_checked_on_a_cpu_without_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv(prec.FLAGS_OFF_ENV, ",".join(prec.BF16_FLAGS))
    artifact = build_verified("x3d-xs", "openvino", BuildOptions(tiny=True, batch=1, precision="bf16"), out=tmp_path)
    parity = artifact.manifest["parity"]
    assert parity["status"] == "not run" and "this CPU has no native bf16" in parity["reason"]
