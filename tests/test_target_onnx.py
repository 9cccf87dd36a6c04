"""The onnx target and the onnxruntime runner: every tiny model builds, runs like PyTorch at two batch sizes, and
the artifact cache, exporter fallback, onnxsim fallback and external-data paths behave. Builds go through
`build_verified`, as vcompile's commands build, so the manifest's parity is the build's own check."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from support import tiny_clip

import vcompile.compile as compile_package
from vcompile.check.parity import build_verified
from vcompile.compile import BuildError, BuildOptions
from vcompile.compile import build as build_unverified
from vcompile.errors import VcompileError
from vcompile.runtimes import load
from vcompile.runtimes.base import RunnerError
from vcompile.zoo import create_model, list_models

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a core dependency; install vcompile")
onnx_target = pytest.importorskip("vcompile.compile.onnx")

TINY = BuildOptions(tiny=True, batch=2)


def _reference(name: str, clip: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return _tiny_model(name)(clip).numpy()


@functools.lru_cache(maxsize=1)
def _tiny_model(name: str) -> torch.nn.Module:
    return create_model(name, tiny=True)


def _run(artifact, clip: torch.Tensor, **kwargs) -> np.ndarray:
    with load(artifact, "onnxruntime", **kwargs) as runner:
        return runner.infer(clip.numpy())


def _run_file(path, clips: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, {session.get_inputs()[0].name: x})[0] for x in clips]


def _max_diff_of_graphs(a, b, clips: list[np.ndarray]) -> float:
    """Largest difference between two ONNX files' outputs on the same clips."""
    return max(float(np.abs(x - y).max()) for x, y in zip(_run_file(a, clips), _run_file(b, clips), strict=True))


build = build_verified


@pytest.mark.parametrize("name", list_models())
def test_onnx_matches_pytorch_at_two_batches_and_caches(name, tmp_path, monkeypatch):
    artifact = build(name, "onnx", TINY, out=tmp_path)
    assert not artifact.cached and artifact.file().name == "model.onnx"
    for clip in (tiny_clip(batch=2, seed=0), tiny_clip(batch=3, seed=1)):  # batch 3: the batch axis is dynamic
        got, want = _run(artifact, clip), _reference(name, clip)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4

    info = artifact.manifest["info"]
    assert info["exporter"] in onnx_target.EXPORTERS and info["export_attempts"][-1]["ok"]
    assert info["nodes"]["exported"] == sum(info["ops"]["exported"].values()) > 0
    assert 0 < info["nodes"]["simplified"] <= info["nodes"]["exported"]
    clips = [tiny_clip(batch=2, seed=4).numpy(), tiny_clip(batch=1, seed=5).numpy()]
    assert _max_diff_of_graphs(artifact.file("exported"), artifact.file(), clips) <= 1e-5
    parity = artifact.manifest["parity"]  # one onnxruntime session at the build batch and another
    assert parity["status"] == "pass" and parity["max_abs"] <= 1e-4 and parity["batches"] == [2, 1]
    assert info["check"]["simplified"]["output_shape"] == ["batch", 10]
    assert artifact.file("exported").is_file()

    # A cache hit builds nothing: neither the model nor the target's build is touched.
    def must_not_run(*args, **kwargs):
        raise AssertionError("a cache hit rebuilt")

    monkeypatch.setattr(onnx_target, "TARGET", dataclasses.replace(onnx_target.TARGET, build=must_not_run))
    monkeypatch.setattr(compile_package, "_create_model", must_not_run)
    again = build(name, "onnx", TINY, out=tmp_path)
    assert again.cached and again.key == artifact.key
    assert again.manifest["files"] == artifact.manifest["files"] and again.manifest["created"] == artifact.manifest[
        "created"]


def test_truncated_model_is_rebuilt_and_force_rebuilds(tmp_path):
    artifact = build("x3d-xs", "onnx", TINY, out=tmp_path)
    data = artifact.file().read_bytes()
    artifact.file().write_bytes(data[: len(data) // 2])
    rebuilt = build("x3d-xs", "onnx", TINY, out=tmp_path)
    assert not rebuilt.cached and rebuilt.file().read_bytes() == data
    clip = tiny_clip(batch=2)
    assert np.abs(_run(rebuilt, clip) - _reference("x3d-xs", clip)).max() <= 1e-4
    assert build("x3d-xs", "onnx", TINY, out=tmp_path).cached
    assert not build("x3d-xs", "onnx", TINY, out=tmp_path, force=True).cached


def test_batch_one_build_keeps_a_dynamic_batch(tmp_path):
    artifact = build("timesformer", "onnx", BuildOptions(tiny=True, batch=1), out=tmp_path)
    assert artifact.manifest["info"]["trace_batch"] == 2
    clip = tiny_clip(batch=3, seed=2)
    assert np.abs(_run(artifact, clip) - _reference("timesformer", clip)).max() <= 1e-4


def test_dynamo_exporter_on_request(tmp_path):
    artifact = build("x3d-xs", "onnx", BuildOptions(tiny=True, batch=2, exporter="dynamo"), out=tmp_path)
    info = artifact.manifest["info"]
    assert info["exporter"] == info["exporter_asked"] == "dynamo" and len(info["export_attempts"]) == 1
    clip = tiny_clip(batch=3, seed=1)
    assert np.abs(_run(artifact, clip) - _reference("x3d-xs", clip)).max() <= 1e-4


def test_failed_exporter_falls_back_to_the_other(tmp_path, monkeypatch):
    original = onnx_target.export_onnx

    def dynamo_breaks(model, example, path, exporter="dynamo", *args, **kwargs):
        if exporter == "dynamo":
            raise RuntimeError("simulated export failure")
        return original(model, example, path, exporter, *args, **kwargs)

    monkeypatch.setattr(onnx_target, "export_onnx", dynamo_breaks)
    artifact = build("x3d-xs", "onnx", BuildOptions(tiny=True, batch=2, exporter="dynamo"), out=tmp_path)
    attempts = artifact.manifest["info"]["export_attempts"]
    assert [a["exporter"] for a in attempts] == ["dynamo", "torchscript"]
    assert not attempts[0]["ok"] and "simulated export failure" in attempts[0]["error"] and attempts[1]["ok"]
    assert artifact.manifest["info"]["exporter"] == "torchscript"


def test_every_exporter_failing_is_one_build_error(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_target, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("nope")))
    with pytest.raises(BuildError, match=r"torchscript: RuntimeError: nope; dynamo: RuntimeError: nope") as err:
        build("x3d-xs", "onnx", TINY, out=tmp_path)
    assert "\n" not in str(err.value)


def test_unknown_exporter_is_refused(tmp_path):
    with pytest.raises(VcompileError, match="choose from auto, torchscript, dynamo"):
        build("x3d-xs", "onnx", BuildOptions(tiny=True, exporter="tf2onnx"), out=tmp_path)


def test_onnxsim_failure_keeps_the_exported_graph(tmp_path, monkeypatch):
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    artifact = build("x3d-xs", "onnx", TINY, out=tmp_path)
    info = artifact.manifest["info"]
    assert info["simplified"] is False and "simulated onnxsim crash" in info["simplify_error"]
    assert info["nodes"]["simplified"] == info["nodes"]["exported"]
    assert artifact.file().read_bytes() == artifact.file("exported").read_bytes()
    clip = tiny_clip(batch=2)
    assert np.abs(_run(artifact, clip) - _reference("x3d-xs", clip)).max() <= 1e-4


def test_large_models_use_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_target, "EXTERNAL_DATA_BYTES", 0)
    artifact = build("x3d-xs", "onnx", TINY, out=tmp_path)
    files = artifact.manifest["files"]
    assert files["model_data"]["name"] == "model.onnx.data" and files["exported_data"]["name"]
    assert artifact.manifest["info"]["external_data"] is True
    assert files["model_data"]["bytes"] > files["model"]["bytes"]  # the weights live beside the graph
    clip = tiny_clip(batch=3, seed=1)
    assert np.abs(_run(artifact, clip) - _reference("x3d-xs", clip)).max() <= 1e-4
    assert _max_diff_of_graphs(artifact.file("exported"), artifact.file(), [clip.numpy()]) <= 1e-5


@pytest.mark.parametrize("name", ["x3d-xs", "timesformer"])
def test_fp16_graph_keeps_float32_io_and_agrees(name, tmp_path):
    artifact = build(name, "onnx", BuildOptions(tiny=True, batch=2, precision="fp16"), out=tmp_path)
    session = ort.InferenceSession(str(artifact.file()), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"
    assert artifact.manifest["info"]["ops"]["simplified"].get("Cast", 0) >= 2
    clip = tiny_clip(batch=2)
    got, want = _run(artifact, clip), _reference(name, clip)
    cosine = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine >= 0.999 and artifact.manifest["parity"]["cosine"] >= 0.999


@pytest.fixture(scope="module")
def x3d_artifact(tmp_path_factory):
    return build("x3d-xs", "onnx", TINY, out=tmp_path_factory.mktemp("onnx"))


def test_runner_honours_threads(x3d_artifact):
    with load(x3d_artifact, "onnxruntime", threads=1) as runner:
        assert runner.session.get_session_options().intra_op_num_threads == 1
        assert runner.session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu is installed")
def test_runner_refuses_cuda_without_the_cuda_provider(x3d_artifact):
    with pytest.raises(RunnerError, match=r'CUDAExecutionProvider.*pip install "vcompile\[gpu\]"') as err:
        load(x3d_artifact, "onnxruntime", device="cuda").activate()
    assert "\n" not in str(err.value)


def test_compare_onnx_of_exported_and_simplified(x3d_artifact):
    clips = [tiny_clip(batch=2).numpy(), tiny_clip(batch=1, seed=3).numpy()]
    assert _max_diff_of_graphs(x3d_artifact.file("exported"), x3d_artifact.file(), clips) <= 1e-5
    assert onnx_target.op_histogram(x3d_artifact.file()) == x3d_artifact.manifest["info"]["ops"]["simplified"]


def test_a_graph_that_does_not_run_falls_back_to_the_other_exporter(tmp_path):
    """The verifier's `error` (the runtime could not run the graph) makes the build try the next exporter; the
    manifest's parity is the verification of the graph it kept."""
    calls = []

    def verify(artifact, ctx):
        calls.append(artifact.manifest["files"]["model"]["name"])
        if len(calls) == 1:
            return {"status": "error", "reason": "simulated: Loop node with an unknown shape"}
        return {"status": "pass", "batches": [int(x.shape[0]) for x in ctx.check_inputs]}

    artifact = build_unverified("x3d-xs", "onnx", TINY, out=tmp_path, verify=verify)
    attempts = artifact.manifest["info"]["export_attempts"]
    assert [(a["exporter"], a["ok"]) for a in attempts] == [("torchscript", False), ("dynamo", True)]
    assert "the graph does not run: simulated: Loop node" in attempts[0]["error"]
    assert calls == ["model.onnx", "model.onnx"] and artifact.manifest["parity"] == {"status": "pass",
                                                                                     "batches": [2, 1]}


def test_a_build_opens_one_session_and_runs_the_reference_once(tmp_path, monkeypatch):
    sessions = []
    real_session = ort.InferenceSession
    # Sessions on files; onnxsim's own constant folding opens sessions on in-memory bytes, which are not counted.
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda *a, **k: (isinstance(a[0], str) and sessions.append(a[0])) or real_session(*a, **k))
    reference_batches = []
    real_create = compile_package._create_model

    def counted(*args, **kwargs):
        model = real_create(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: reference_batches.append(inputs[0].shape[0])
                                        if torch.is_inference_mode_enabled() else None)
        return model

    monkeypatch.setattr(compile_package, "_create_model", counted)
    artifact = build_verified("x3d-xs", "onnx", TINY, out=tmp_path)
    assert artifact.manifest["parity"]["status"] == "pass"
    staging = artifact.path.with_name(f"{artifact.key}.partial-{os.getpid()}")
    assert sessions == [str(staging / "model.onnx")]  # verified in the staging folder, before it is published
    assert reference_batches == [2, 1]  # the example and the second batch, each once
    unverified = build_unverified("x3d-xs", "onnx", TINY, out=tmp_path / "unverified")
    assert unverified.manifest["parity"]["status"] == "unverified" and len(sessions) == 1
    assert build_verified("x3d-xs", "onnx", TINY, out=tmp_path / "unverified").manifest["parity"]["status"] == "pass"


def test_concurrent_builds_of_one_key_build_once_and_all_succeed(tmp_path):
    """Four `vcompile build` of one artifact at once: one builds, the others wait and get it from the cache; one
    valid artifact and no staging folder are left."""
    command = [sys.executable, "-m", "vcompile", "build", "-m", "x3d-xs", "-t", "onnx", "--tiny", "--format", "json",
               "--out", str(tmp_path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-1500:] for _, err in outputs]
    cells = [json.loads(out)[0] for out, _ in outputs]
    assert sorted(c["cached"] for c in cells) == [False, True, True, True]
    assert len({c["path"] for c in cells}) == 1 and all(c["parity"] == "pass" for c in cells)
    folder = tmp_path / "builds" / "x3d-xs" / "onnx"
    assert [p.name for p in folder.iterdir() if ".partial-" in p.name] == []
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 1
