"""Parity end to end: it passes on faithful artifacts, and it can fail (tolerance, perturbation, bad video)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from vcompile.check.parity import run_parity
from vcompile.compile import BuildOptions, build
from vcompile.compile.cache import describe_files, write_manifest
from vcompile.zoo import create_model, list_models


def _assert_one_line_error(result, fragment: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr, result.stderr


def test_parity_passes_on_every_mobile_and_onnx_runtime(cli, tmp_path, artifacts):
    result = cli("parity", "--model", "movinet-a0", "--runtimes", "onnxruntime,executorch,ptl", "--tiny",
                 "--out", str(artifacts), "--json", str(tmp_path / "parity.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "parity.json").read_text())
    assert [(r["runtime"], r["status"]) for r in rows] == [("onnxruntime", "pass"), ("executorch", "pass"),
                                                           ("ptl", "pass")]
    assert all(r["agreement"]["max_abs"] < 1e-4 and r["agreement"]["top1"] == 1.0 for r in rows)


def test_an_impossible_tolerance_fails(cli, tmp_path):
    result = cli("parity", "--model", "x3d-xs", "--runtimes", "onnxruntime", "--tiny", "--atol", "1e-12",
                 "--rtol", "1e-12", "--out", str(tmp_path))
    assert result.returncode == 1 and "FAIL" in result.stdout and "exceeds atol" in result.stdout


def _perturb_named_weight(artifact, model) -> str:
    """Scale one named weight in the artifact's ONNX file by 1.5, keep the manifest consistent; return its module."""
    path = artifact.file()
    graph = onnx.load(str(path))
    params = dict(model.named_parameters())
    names = [i.name for i in graph.graph.initializer if i.name in params and i.name.endswith(".weight")
             and params[i.name].dim() >= 2]
    chosen = names[len(names) // 2]
    for init in graph.graph.initializer:
        if init.name == chosen:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.5), chosen))
    onnx.save(graph, str(path))
    manifest = dict(artifact.manifest)
    manifest["files"] = describe_files(artifact.path, {role: e["name"] for role, e in manifest["files"].items()})
    write_manifest(artifact.path, manifest)  # a wrong artifact that the cache takes as valid: a miscompile
    return chosen.rsplit(".", 1)[0]


@pytest.mark.parametrize("name", ["vtn-r50", "timesformer"])
def test_a_perturbed_artifact_fails_and_localize_names_the_module(name, tmp_path, cli):
    artifact = build(name, "onnx", BuildOptions(tiny=True, batch=1), out=tmp_path)
    module = _perturb_named_weight(artifact, create_model(name, tiny=True))
    rows = run_parity(name, ["onnxruntime"], options=BuildOptions(tiny=True), out=tmp_path, localize=True).rows
    assert rows[0].status == "fail"
    # The perturbed artifact was built without a verifier; parity verified it and recorded the failure.
    assert json.loads((artifact.path / "manifest.json").read_text())["parity"]["status"] == "fail"
    assert rows[0].localization["module"] == module
    result = cli("parity", "--model", name, "--runtimes", "ort", "--tiny", "--out", str(tmp_path), "--localize")
    assert result.returncode == 1 and module in result.stdout


def test_parity_on_a_real_video(cli, tmp_path):
    av = pytest.importorskip("av", reason='PyAV writes the test video: pip install "vcompile[video]"')
    from support import write_video

    assert av
    video = tmp_path / "clip.mp4"
    write_video(video, frames=12, height=72, width=96)
    result = cli("parity", "--model", "tsm-r50", "--runtimes", "onnxruntime", "--tiny", "--samples", "1",
                 "--video", str(video), "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 clips" in result.stdout and "pass" in result.stdout


def test_an_unreadable_video_is_one_clear_line(cli, tmp_path):
    bogus = tmp_path / "broken.mp4"
    bogus.write_bytes(b"\x00\x01 definitely not a video")
    _assert_one_line_error(cli("parity", "--model", "tsm-r50", "--runtimes", "ort", "--tiny", "--video", str(bogus),
                               "--out", str(tmp_path)), "cannot decode")
    _assert_one_line_error(cli("parity", "--model", "tsm-r50", "--runtimes", "tensorflow", "--tiny"),
                           "unknown runtime 'tensorflow'")


@pytest.mark.parametrize("name", list_models())
def test_every_tiny_model_passes_parity(name, artifacts):
    result = run_parity(name, ["onnxruntime", "executorch", "ptl"], options=BuildOptions(tiny=True), samples=2,
                        out=artifacts)
    rows = result.rows
    assert result.clips == 2 and result.model == name
    assert [(r.runtime, r.status) for r in rows] == [("onnxruntime", "pass"), ("executorch", "pass"),
                                                     ("ptl", "pass")], [r.message for r in rows]
    assert all(r.agreement.top1 == 1.0 and r.agreement.cosine >= 0.9999 for r in rows)
