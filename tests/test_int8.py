"""int8 artifacts: quantized from the verified fp32 artifact on calibration clips, gated on held-apart clips."""

from __future__ import annotations

import numpy as np
import pytest
from support import tiny_clip

from vcompile.check.parity import build_verified
from vcompile.compile import CALIBRATION_CLIPS, BuildOptions
from vcompile.runtimes import load

INT8 = BuildOptions(tiny=True, batch=1, precision="int8")


def test_onnx_int8_is_quantized_from_the_fp32_graph_and_gated(artifacts):
    fp32 = build_verified("x3d-xs", "onnx", BuildOptions(tiny=True, batch=1), out=artifacts)
    int8 = build_verified("x3d-xs", "onnx", INT8, out=artifacts)
    assert int8.key != fp32.key and int8.manifest["info"]["fp32"]["key"] == fp32.key
    ops = int8.manifest["info"]["ops"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= ops["Conv"] > 0  # every convolution's weight
    info = int8.manifest["info"]
    assert info["calibration"] == {"set": "calibration", "clips": CALIBRATION_CLIPS} and info["kept_float"] == []
    assert info["format"] == "QDQ" and info["weights"] == "int8 per channel"
    gate = int8.manifest["parity"]
    assert gate["status"] == "pass" and gate["clips"] == "held_apart" and gate["cosine"] >= 0.99, gate
    assert sorted(p.name for p in int8.path.iterdir()) == ["manifest.json", "model.onnx"]  # no scratch left behind
    with load(int8, "onnxruntime", threads=1) as runner:
        assert runner.precision == "int8"
        got = runner.infer(tiny_clip(batch=3).numpy())  # the batch stays dynamic
    with load(fp32, "onnxruntime", threads=1) as runner:
        exact = runner.infer(tiny_clip(batch=3).numpy())
    assert got.shape == (3, 10) and 0 < np.abs(got - exact).max()


def test_int8_is_refused_where_no_quantizer_exists(tmp_path):
    from vcompile.errors import VcompileError

    with pytest.raises(VcompileError, match="the ptl target builds fp32, not int8"):
        build_verified("x3d-xs", "ptl", INT8, out=tmp_path)
    assert not (tmp_path / "builds").exists()


def test_a_failing_gate_keeps_the_most_sensitive_nodes_float(tmp_path, monkeypatch):
    from dataclasses import replace

    from vcompile.check import metrics
    from vcompile.compile.base import MAX_FLOAT_SHARE

    # tiny MViT-S reaches cosine ~0.995 in int8: a gate of 0.999 fails it and sends the build down the float path
    monkeypatch.setitem(metrics.TOLERANCES, "int8", replace(metrics.TOLERANCES["int8"], min_cosine=0.999))
    artifact = build_verified("mvit-s", "onnx", INT8, out=tmp_path)
    info, gate = artifact.manifest["info"], artifact.manifest["parity"]
    attempts = info["accuracy_aware"]["attempts"]
    assert attempts[0]["kept_float"] == 0 and attempts[0]["status"] == "fail" and len(attempts) >= 2
    counts = [a["kept_float"] for a in attempts[1:]]
    doubling = all(b in (2 * a, counts[-1]) for a, b in zip(counts, counts[1:]))
    assert counts == sorted(counts) and counts[0] == 1 and doubling
    assert len(info["kept_float"]) == counts[-1] and set(info["kept_float"]) == set(info["snr_db"])
    limit = max(1, int(info["accuracy_aware"]["quantized_nodes"] * MAX_FLOAT_SHARE))
    assert gate["status"] == attempts[-1]["status"] and (gate["status"] == "pass" or counts[-1] == limit)
    import onnx

    fp32 = build_verified("mvit-s", "onnx", BuildOptions(tiny=True, batch=1), out=tmp_path)
    weights = {i.name for i in onnx.load(str(fp32.file())).graph.initializer}
    graph = onnx.load(str(artifact.file())).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    by_name = {n.name: n for n in graph.node}
    with_weights = [name for name in info["kept_float"] if by_name[name].input[1] in weights | float_weights]
    # each float node with a weight still reads it in fp32, not dequantized from int8
    assert all(by_name[name].input[1] in float_weights for name in with_weights)


@pytest.mark.parametrize("name", ["vtn-eff", "x3d-xs"])
def test_executorch_int8_runs_its_convolutions_in_xnnpack_int8(name, artifacts):
    # a 2-D model with attention, and a 3-D one whose convolutions the rewrites made 2-D (their temporal zero padding
    # must share its input's quantization, or XNNPACK refuses to load the program)
    pytest.importorskip("executorch", reason='the executorch target needs executorch (pip install "vcompile[mobile]")')
    artifact = build_verified(name, "executorch", INT8, out=artifacts)
    info = artifact.manifest["info"]
    convs = info["quantization"]["weighted_ops"]["conv"]
    assert convs["ops"] > 10 and convs["int8_weights"] == convs["ops"], convs  # every convolution reads int8
    assert info["delegated_flops_share"] >= 0.99, info["explain"]
    assert any("quantize" in op for op in info["delegated_by_op"])  # the int8 arithmetic runs inside XNNPACK
    from vcompile.cli import _explanation_table  # what --explain prints

    headline = _explanation_table(name, "executorch", info["explain"])
    assert f"100.0% of the model in XNNPACK; int8 weights: conv {convs['ops']}/{convs['ops']}" in headline, headline
    gate = artifact.manifest["parity"]
    assert gate["status"] == "pass" and gate["clips"] == "held_apart" and gate["cosine"] >= 0.99, gate
    search = info["quantization"]["accuracy_aware"]  # its quantized reference passed in PyTorch: nothing kept float
    assert [a["kept_float"] for a in search["attempts"]] == [0] and info["quantization"]["kept_float"] == []
    with load(artifact, "executorch", threads=1) as runner:
        assert runner.precision == "int8" and runner.infer(tiny_clip(batch=1).numpy()).shape == (1, 10)
        assert runner.settings["threadpool_threads"] == "1"


def test_openvino_int8_is_nncf_quantized_and_gated(artifacts):
    pytest.importorskip("nncf", reason='int8 OpenVINO builds quantize with NNCF (pip install "vcompile[openvino]")')
    fp32 = build_verified("x3d-xs", "openvino", BuildOptions(tiny=True, batch=1), out=artifacts)
    int8 = build_verified("x3d-xs", "openvino", INT8, out=artifacts)
    info = int8.manifest["info"]
    assert info["fp32"]["key"] == fp32.key and info["fake_quantize_ops"] > 0 and info["quantized_layers"] > 10
    assert info["calibration"] == {"set": "calibration", "clips": CALIBRATION_CLIPS}
    gate = int8.manifest["parity"]
    assert gate["clips"] == "held_apart" and gate["status"] == info["attempts"][-1]["status"]
    with load(int8, "openvino", threads=1) as runner:
        assert runner.precision == "int8" and runner.settings["INFERENCE_PRECISION_HINT"] == "f32"
        assert runner.infer(tiny_clip(batch=2).numpy()).shape == (2, 10)
