"""The inductor runtime: torch.compile with weight freezing computes what eager computes; its compilation is
recorded as first_run_ms, outside the timed runs; without a compiler or Python's headers it says what to install."""

from __future__ import annotations

import os
import sys
import sysconfig

import pytest

from vcompile.check.parity import run_parity
from vcompile.compile import BuildOptions
from vcompile.runtimes import RUNTIMES
from vcompile.zoo import list_models

# Compiling a tiny model takes 15-30 s on 2 cores: one model in the default run, all 13 with -m slow.
QUICK = "tsm-r50"
MODELS = [name if name == QUICK else pytest.param(name, marks=pytest.mark.slow) for name in list_models()]


def _needs_inductor():
    availability = RUNTIMES["inductor"].probe()
    if not availability.can_run:
        pytest.skip(f"inductor cannot run here: {availability.detail}")


@pytest.mark.parametrize("name", MODELS)
def test_inductor_matches_pytorch(name, tmp_path):
    _needs_inductor()
    rows = run_parity(name, ["inductor"], options=BuildOptions(tiny=True), samples=2, out=tmp_path).rows
    assert [(r.runtime, r.status) for r in rows] == [("inductor", "pass")], [r.message for r in rows]
    assert rows[0].agreement.max_abs <= 1e-4 and rows[0].agreement.top1 == 1.0


def test_without_a_compiler_or_headers_the_probe_says_what_to_install(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    detail = RUNTIMES["inductor"].probe().detail
    assert not RUNTIMES["inductor"].probe().can_run and "a C++ compiler" in detail and "apt install g++" in detail
    monkeypatch.undo()
    real = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**real(*a, **k), "include": "/nonexistent"})
    availability = RUNTIMES["inductor"].probe()
    assert not availability.can_run and "Python.h" in availability.detail and "python3-dev" in availability.detail


def test_bench_without_a_compiler_is_a_clear_record_and_a_failing_exit(tmp_path):
    import subprocess

    bare = tmp_path / "bin"  # a PATH with python and no C++ compiler
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bare)}
    out = tmp_path / "r.jsonl"
    result = subprocess.run([sys.executable, "-m", "vcompile", "bench", "--tiny", "-m", "x3d-xs", "-r", "inductor",
                             "--mode", "single", "--iters", "1", "--warmup", "0", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "inductor cannot run here: torch.compile needs a C++ compiler" in result.stdout.replace("\n", " ")
    assert "Traceback" not in result.stderr + result.stdout
