"""PyTorch Lite target: every zoo model's tiny variant builds a .ptl that the lite interpreter runs like PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.check.parity import build_verified
from vcompile.compile import BuildOptions, build
from vcompile.compile.ptl import xnnpack_enabled
from vcompile.errors import VcompileError
from vcompile.runtimes import load
from vcompile.runtimes.base import RunnerError
from vcompile.zoo import create_model, list_models

OPTIONS = BuildOptions(tiny=True, batch=2)


@pytest.mark.parametrize("name", list_models())
def test_ptl_matches_pytorch(name, tmp_path):
    artifact = build_verified(name, "ptl", OPTIONS, out=tmp_path)
    info = artifact.manifest["info"]
    assert artifact.file().name == "model.ptl" and artifact.file().stat().st_size > 1000
    assert info["exporter"] == "torch.jit.trace"
    assert info["operators"] == len(info["operator_list"]) > 0
    assert all(op.startswith("aten::") for op in info["operator_list"])
    parity = artifact.manifest["parity"]  # the build's own check, on the example clip
    assert parity["status"] == "pass" and parity["runtime"] == "ptl" and parity["max_abs"] <= 1e-4
    assert info["optimized_for_mobile"] == xnnpack_enabled()
    if not xnnpack_enabled():
        assert "XNNPACK is not enabled" in info["optimize_skipped"]
    x = tiny_clip(batch=2, seed=1)  # not the clip the model was traced with
    with load(artifact, "ptl", threads=2) as runner:
        got = runner.infer(x.numpy())
    with torch.no_grad():
        want = create_model(name, tiny=True)(x).numpy()
    assert got.shape == want.shape == (2, 10) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= 1e-4


def test_ptl_cache_runner_limits_and_precision(tmp_path):
    first = build("x3d-xs", "ptl", OPTIONS, out=tmp_path)
    again = build("x3d-xs", "ptl", OPTIONS, out=tmp_path)
    assert not first.cached and again.cached and again.key == first.key
    with pytest.raises(RunnerError, match="runs on the CPU only"):
        load(first, "ptl", device="cuda").activate()
    with pytest.raises(VcompileError, match="builds fp32, not fp16"):
        build("x3d-xs", "ptl", BuildOptions(tiny=True, batch=2, precision="fp16"), out=tmp_path)
