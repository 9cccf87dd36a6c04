"""Paper-scale checks that take minutes on a CPU (run with -m slow): every model at 1x3x16x224x224 builds for
onnx and runs in onnxruntime like PyTorch at the fp32 tolerance (atol 1e-4 + rtol 1e-3 x |logit|, cosine >=
0.9999); the build's own parity check is asserted from its manifest."""

from __future__ import annotations

import pytest

from vcompile.check.parity import build_verified as build
from vcompile.compile import BuildOptions
from vcompile.zoo import list_models


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_paper_scale_onnx_matches_pytorch(name, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "paper-scale-artifacts"
    artifact = build(name, "onnx", BuildOptions(batch=1), out=out)
    parity = artifact.manifest["parity"]
    assert parity["status"] == "pass", parity
    assert parity["smallest_atol"] <= 1e-4 and parity["max_rel"] < 1e-2 and parity["cosine"] >= 0.9999
