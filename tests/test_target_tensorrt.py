"""The tensorrt target and runner. TensorRT cannot be installed on the CI machines, so most tests check the parts
that need no TensorRT (profile, flags, manifest, cache key inputs, the errors when it is missing); the end-to-end
test runs only where TensorRT and an NVIDIA GPU are present."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.compile import BuildOptions, build, get_target
from vcompile.compile import tensorrt as trt_target
from vcompile.errors import VcompileError
from vcompile.runtimes import load
from vcompile.runtimes.base import RunnerError
from vcompile.zoo import create_model

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()


def test_importing_the_modules_does_not_import_tensorrt():
    code = ("import sys, vcompile.compile.tensorrt, vcompile.runtimes.tensorrt; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorrt'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_target_description():
    target = get_target("trt")
    assert target is trt_target.TARGET
    assert (target.name, target.runtime, target.depends_on, target.extra) == ("tensorrt", "tensorrt", "onnx", "trt")
    assert target.precisions == ("fp32", "fp16", "bf16") and target.requires == ("tensorrt",)
    assert set(target.versions()) == {"tensorrt", "gpu_capability"}  # engines are not portable: both key the cache


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_build_without_tensorrt_is_one_line_naming_the_extra(tmp_path):
    with pytest.raises(VcompileError, match=r'tensorrt.*pip install "vcompile\[trt\]"') as err:
        build("x3d-xs", "trt", BuildOptions(tiny=True), out=tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "builds").exists()  # refused before the onnx dependency was built


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_runtime_without_tensorrt_names_the_extra():
    with pytest.raises(VcompileError, match=r'pip install "vcompile\[trt\]"'):
        load(None, "trt", device="cuda")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_needs_an_nvidia_gpu():
    assert "NVIDIA GPU" in trt_target.TARGET.needs()
    assert trt_target.gpu_capability() is None and trt_target.TARGET.versions()["gpu_capability"] is None


@pytest.mark.parametrize("shape, max_batch, expected_max", [
    ((2, 3, 4, 64, 64), None, 32),  # the default ceiling
    ((48, 3, 4, 64, 64), None, 48),  # never below the build batch
    ((2, 3, 4, 64, 64), 8, 8),
    ((16, 3, 16, 224, 224), 4, 16),
])
def test_profile_spans_batch_one_to_max(shape, max_batch, expected_max):
    shapes = trt_target.profile_shapes(shape, max_batch)
    assert shapes["min"] == (1, *shape[1:])
    assert shapes["opt"] == tuple(shape)
    assert shapes["max"] == (expected_max, *shape[1:])


def test_precision_flags():
    assert trt_target.precision_flags("fp32") == ()
    assert trt_target.precision_flags("fp16") == ("FP16",)
    assert trt_target.precision_flags("bf16") == ("BF16",)
    with pytest.raises(ValueError, match="int8"):
        trt_target.precision_flags("int8")


def test_timing_cache_is_per_gpu_architecture_and_version(tmp_path):
    h100 = trt_target.timing_cache_path(tmp_path, "9.0", "10.13.0")
    a100 = trt_target.timing_cache_path(tmp_path, "8.0", "10.13.0")
    assert h100 == tmp_path / "cache" / "tensorrt-timing-sm90-trt10.13.0.cache" and h100 != a100


def test_engine_manifest_names_what_the_engine_needs(tmp_path):
    shapes = trt_target.profile_shapes((2, 3, 16, 224, 224))
    info = trt_target.engine_info(trt_version="10.13.0", gpu="NVIDIA H100", capability="9.0", input_name="video",
                                  shapes=shapes, precision="fp16", timing_cache=tmp_path / "t.cache",
                                  timing_cache_found=False, engine_bytes=123)
    assert (info["tensorrt"], info["gpu_capability"], info["portable"]) == ("10.13.0", "9.0", False)
    assert info["profile"] == {"input": "video", "min": [1, 3, 16, 224, 224], "opt": [2, 3, 16, 224, 224],
                               "max": [32, 3, 16, 224, 224]}
    assert info["precision_flags"] == ["FP16"]
    fp32 = trt_target.engine_info(trt_version="10.13.0", gpu="g", capability="9.0", input_name="video",
                                  shapes=shapes, precision="fp32", timing_cache=Path("t"), timing_cache_found=True,
                                  engine_bytes=1)
    assert fp32["precision_flags"] == [] and fp32["tf32"] is False


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and HAS_CUDA), reason="needs TensorRT and an NVIDIA GPU")
def test_engine_matches_pytorch_on_the_gpu(tmp_path):
    artifact = build("x3d-xs", "trt", BuildOptions(tiny=True, batch=2), out=tmp_path)
    info = artifact.manifest["info"]
    assert info["gpu_capability"] == trt_target.gpu_capability() and Path(info["timing_cache"]).is_file()
    model = create_model("x3d-xs", tiny=True)
    with load(artifact, "trt", device="cuda") as runner:
        for clip in (tiny_clip(batch=2), tiny_clip(batch=3, seed=1)):
            with torch.no_grad():
                want = model(clip).numpy()
            assert np.abs(runner.infer(clip.numpy()) - want).max() <= 1e-4
        with pytest.raises(RunnerError, match="profile"):
            runner.infer(tiny_clip(batch=33).numpy())
    rebuilt = build("x3d-xs", "trt", BuildOptions(tiny=True, batch=2), out=tmp_path, force=True)
    assert rebuilt.manifest["info"]["timing_cache_found"] is True
    half = build("x3d-xs", "trt", BuildOptions(tiny=True, batch=2, precision="fp16"), out=tmp_path)
    clip = tiny_clip(batch=2)
    with load(half, "trt", device="cuda") as runner, torch.no_grad():
        got, want = runner.infer(clip.numpy()), model(clip).numpy()
    assert float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want))) >= 0.999
