"""The executorch target and runner: every tiny model lowers to XNNPACK, runs from its .pte like PyTorch, and the
manifest says what was delegated."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.check.parity import build_verified
from vcompile.compile import BuildOptions
from vcompile.runtimes import load
from vcompile.runtimes.base import RunnerError
from vcompile.zoo import create_model, list_models

pytest.importorskip("executorch.runtime", reason="the executorch target needs executorch (vcompile[mobile])")

# Batch 1, the batch parity builds at: the session's artifact cache then lowers each tiny model once.
TINY = BuildOptions(tiny=True, batch=1)
THREE_D = (torch.nn.Conv3d, torch.nn.AvgPool3d, torch.nn.MaxPool3d, torch.nn.AdaptiveAvgPool3d)


@pytest.fixture(scope="module")
def out(artifacts):
    return artifacts


# Lowering costs 6-20 s per tiny model on 2 cores (all 13 models: about 2 minutes).
@pytest.mark.parametrize("name", list_models())
def test_executorch_matches_pytorch(name, out):
    artifact = build_verified(name, "executorch", TINY, out=out)
    assert artifact.file().name == "model.pte" and artifact.manifest["runtime"] == "executorch"
    model = create_model(name, tiny=True)
    clip = tiny_clip(batch=1, seed=1)  # not the build's example
    with load(artifact, "executorch", threads=2) as runner:
        got = runner.infer(clip.numpy())
    with torch.no_grad():
        want = model(clip).numpy()
    assert got.shape == want.shape == (1, 10)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)

    info = artifact.manifest["info"]
    parity = artifact.manifest["parity"]  # the build's own verification, on its example clip
    assert parity["status"] == "pass" and parity["max_abs"] <= 1e-4 and info["static_batch"] == 1
    assert ("lower_conv3d" in info["rewrites"]) == any(isinstance(m, THREE_D) for m in model.modules())
    assert info["delegated_ops"] > 0 and info["delegated_subgraphs"] >= 1
    assert info["non_delegated_ops"] == sum(info["non_delegated"].values())
    assert info["delegated_flops_share"] >= 0.9, info["non_delegated"]
    assert not any(op.startswith("convolution") for op in info["non_delegated"]), info["non_delegated"]
    explained = info["explain"]  # what `vcompile build --explain` prints
    assert explained["accelerated_share"] == info["delegated_flops_share"]
    listed = sum(row["count"] for row in explained["not_accelerated"])
    assert listed <= info["non_delegated_ops"] and (listed == 0) == (info["non_delegated_ops"] == 0)
    assert all(row["module"] and row["op"] in info["non_delegated"] for row in explained["not_accelerated"])


def test_explain_names_the_module_and_flop_share_left_outside_xnnpack():
    """Lowered without the Conv3d rewrite, the 3-D convolution stays on the portable kernels: the explanation
    names its module and gives its exact share of the FLOPs."""
    from vcompile.compile.executorch import delegation_summary, edge_program_from_exported, exported_program_from_module

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1))
            self.head = torch.nn.Linear(4, 5)

        def forward(self, x):
            return self.head(self.stem(x).mean((2, 3, 4)))

    clip = tiny_clip(batch=1)
    edge = edge_program_from_exported(exported_program_from_module(Net().eval(), clip))
    explained = delegation_summary(edge)["explain"]
    conv_flops = 2 * (4 * 4 * 64 * 64) * (3 * 27)
    total = conv_flops + 2 * 4 * 5
    (conv,) = [row for row in explained["not_accelerated"] if row["op"].startswith("convolution")]
    assert conv["module"] == "stem.0" and conv["count"] == 1
    assert conv["gflops"] == round(conv_flops / 1e9, 4)
    assert conv["flops_share"] == pytest.approx(conv_flops / total, abs=1e-6)
    assert explained["accelerated_share"] == pytest.approx(1 - conv_flops / total, abs=1e-6)
    assert explained["not_accelerated"][0] is conv  # largest share first


def test_runner_checks_shape_and_sets_threads(out):
    from vcompile.runtimes.executorch import set_threadpool_size

    artifact = build_verified("x3d-xs", "executorch", TINY, out=out)
    again = build_verified("x3d-xs", "executorch", TINY, out=out)
    assert again.cached and again.key == artifact.key
    with load(artifact, "executorch", threads=1) as runner:
        from executorch.extension.pybindings import portable_lib

        assert portable_lib._threadpool_get_thread_count() == 1
        with pytest.raises(RunnerError, match=r"takes input shape \(1, 3, 4, 64, 64\) \(static\)"):
            runner.infer(tiny_clip(batch=2).numpy())
    assert set_threadpool_size(2) == 2
    with pytest.raises(RunnerError, match="runs on the CPU"):
        load(artifact, "executorch", device="cuda").activate()


def test_graph_rewrites_keep_attention_and_norms_exact():
    """The decompositions used before lowering compute what the PyTorch ops compute."""
    from vcompile.compile.executorch import _layer_norm_as_means, _sdpa_as_bmm, _split_as_slices

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=gen) for _ in range(3))
    mask = torch.randn(1, 3, 5, 5, generator=gen)
    for kwargs in ({}, {"attn_mask": mask}, {"scale": 0.3}):
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
        torch.testing.assert_close(_sdpa_as_bmm(q, k, v, **kwargs), want, atol=1e-6, rtol=1e-5)
    assert _sdpa_as_bmm(q, k, v, is_causal=True) is NotImplemented
    ln = torch.nn.LayerNorm(8)
    torch.nn.init.normal_(ln.weight, generator=gen)
    torch.nn.init.normal_(ln.bias, generator=gen)
    got = _layer_norm_as_means(q, [8], ln.weight, ln.bias, ln.eps)
    torch.testing.assert_close(got, ln(q), atol=1e-5, rtol=1e-5)
    for sizes in (2, [1, 3, 4]):
        for got, want in zip(_split_as_slices(q, sizes, 3), torch.split(q, sizes, 3), strict=True):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_importing_the_target_does_not_import_executorch():
    code = ("import sys, vcompile.compile.executorch as t, vcompile.runtimes.executorch; "
            "assert 'executorch' not in sys.modules; assert t.TARGET.versions()['executorch']")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
