"""One conformance test of the Runner contract, over every registered runtime usable on this machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import tiny_clip

from vcompile.errors import VcompileError
from vcompile.runtimes import RUNTIMES, load
from vcompile.runtimes.base import Runner, RunnerError
from vcompile.zoo import create_model

MODEL = "tsm-r50"


def _source(runtime: str, tmp_path):
    info = RUNTIMES[runtime]
    if info.target is None:
        return create_model(MODEL, tiny=True)
    from vcompile.compile import BuildOptions, build

    return build(MODEL, info.target, BuildOptions(tiny=True, batch=2), out=tmp_path)


@pytest.mark.parametrize("runtime", [pytest.param(r, marks=pytest.mark.slow) if r == "inductor" else r
                                     for r in RUNTIMES])
def test_runner_contract(runtime, tmp_path):
    availability = RUNTIMES[runtime].probe()
    if not availability.can_run:
        if RUNTIMES[runtime].target is None:
            source = create_model(MODEL, tiny=True)
        else:
            source = type("FakeArtifact", (), {"target": RUNTIMES[runtime].target})()
        with pytest.raises(VcompileError, match=f"the {runtime} runtime cannot run here"):
            load(source, runtime)
        pytest.skip(f"{runtime} cannot run on this machine: {availability.detail}")
    source = _source(runtime, tmp_path)
    runner = load(source, runtime, threads=2)
    assert isinstance(runner, Runner) and runner.name == runtime and not runner.is_active
    x = tiny_clip(batch=2).numpy()
    with pytest.raises(RunnerError, match="before activate"):
        runner.infer(x)
    with runner:
        assert runner.is_active
        got = runner.infer(x)
        again = runner.infer(x)
    assert not runner.is_active
    assert got.dtype == np.float32 and got.shape == (2, 10)
    np.testing.assert_array_equal(got, again)  # deterministic
    with torch.no_grad():
        want = create_model(MODEL, tiny=True)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("runtime", [r for r, info in RUNTIMES.items() if info.target is not None])
def test_artifact_runtimes_refuse_a_module(runtime):
    if not RUNTIMES[runtime].probe().can_run:
        pytest.skip(f"{runtime} cannot run on this machine")
    with pytest.raises(VcompileError, match=f"runs {RUNTIMES[runtime].target} artifacts, not a module"):
        load(create_model(MODEL, tiny=True), runtime)


def test_torch_runner_amp_and_errors():
    model = create_model(MODEL, tiny=True)
    x = tiny_clip(batch=1).numpy()
    with load(model, "torch", precision="bf16") as runner:
        bf16 = runner.infer(x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    cos = float((bf16 * want).sum() / np.linalg.norm(bf16) / np.linalg.norm(want))
    assert cos > 0.99 and not np.array_equal(bf16, want)  # autocast really ran in bf16
    if not torch.cuda.is_available():
        with pytest.raises(RunnerError, match="CUDA is not available"):
            load(model, "torch", device="cuda").activate()
    with pytest.raises(VcompileError, match="unknown runtime 'tensorflow'"):
        load(model, "tensorflow")
    with load(model, "torch") as runner, pytest.raises(RunnerError, match="torch failed to run"):
        runner.infer(np.zeros((1, 3, 5, 64, 64), dtype=np.float32))  # wrong clip length
