"""The policies the command line used to hold, tested where they now live: what `all` means, list and device
parsing, tolerance overrides, usable cores."""

from __future__ import annotations

import math
import os

import pytest

from vcompile.bench import environment, selection
from vcompile.bench.case import MODES
from vcompile.check.metrics import TOLERANCES, tolerance_for
from vcompile.check.parity import PARITY_RUNTIMES
from vcompile.errors import VcompileError
from vcompile.runtimes import RUNTIMES
from vcompile.zoo import list_models


def test_model_and_target_lists():
    assert selection.resolve_models("all") == list_models()
    assert selection.resolve_models("MViT-S, x3d_xs,mvit-s") == ["mvit-s", "x3d-xs"]
    assert selection.resolve_targets("trt,onnx,et,ort") == ["tensorrt", "onnx", "executorch"]
    assert selection.resolve_targets("ALL")[0] == "onnx"
    for empty in ("", ",", " , "):
        with pytest.raises(VcompileError, match="no model given"):
            selection.resolve_models(empty)
        with pytest.raises(VcompileError, match="no target given"):
            selection.resolve_targets(empty)
    with pytest.raises(VcompileError, match="unknown target 'tflite'"):
        selection.resolve_targets("onnx,tflite")


def test_modes():
    assert selection.resolve_modes("all") == list(MODES)
    assert selection.resolve_modes("Single, mobile,single") == ["single", "mobile"]
    with pytest.raises(VcompileError, match="unknown mode 'infer'; choose from train, batch, single, mobile"):
        selection.resolve_modes("single,infer")
    with pytest.raises(VcompileError, match="no mode given"):
        selection.resolve_modes(",")


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", " CUDA:1 "])
def test_devices_that_parse(device):
    assert selection.resolve_device(device) == device.strip().lower()


@pytest.mark.parametrize("device", ["cudaXYZ", "cuda:", "cuda:-1", "cuda:01", "gpu0", "cpu:0", "", "mps"])
def test_devices_that_do_not(device):
    with pytest.raises(VcompileError, match="use cpu, cuda or cuda:N"):
        selection.resolve_device(device)


def test_all_runtimes_are_those_that_run_here(monkeypatch):
    available = {name: info.probe().can_run for name, info in RUNTIMES.items()}
    picked = selection.select_runtimes("all")
    assert picked.runtimes == [n for n, ok in available.items() if ok]
    assert set(picked.skipped) == {n for n, ok in available.items() if not ok}
    assert all(picked.skipped.values())  # every skipped runtime says why
    parity = selection.select_runtimes("all", PARITY_RUNTIMES)
    assert "torch" not in parity.runtimes and set(parity.runtimes) <= set(PARITY_RUNTIMES)
    # Asked for by name, a runtime is kept even where it cannot run: the command reports it, never drops it.
    assert selection.select_runtimes("trt,ort").runtimes == ["tensorrt", "onnxruntime"]
    with pytest.raises(VcompileError, match="unknown runtime 'tensorflow'"):
        selection.select_runtimes("ort,tensorflow")


def test_bench_all_is_every_runtime_its_modes_use_that_can_run_here():
    chosen = selection.bench_runtimes("all", ["mobile"])
    assert "inductor" not in chosen.runtimes and "torch" not in chosen.runtimes  # mobile runs mobile runtimes
    assert set(chosen.runtimes) | set(chosen.skipped) == set(MODES["mobile"].runtimes)
    single = selection.bench_runtimes("all", ["single"])
    assert set(single.runtimes) | set(single.skipped) == set(MODES["single"].runtimes)
    assert ("inductor" in single.runtimes) == RUNTIMES["inductor"].probe().can_run  # in the default where it runs
    assert selection.bench_runtimes("inductor", ["single"]).runtimes == ["inductor"]


def test_tolerance_overrides():
    assert tolerance_for("fp32") == TOLERANCES["fp32"]
    loose = tolerance_for("fp16", atol=0.5)
    assert loose.atol == 0.5 and loose.rtol == TOLERANCES["fp16"].rtol and loose.elementwise
    assert tolerance_for("fp32", rtol=0.0).rtol == 0.0
    for bad in (math.nan, -1e-3, math.inf):
        with pytest.raises(VcompileError, match="must be a finite number >= 0"):
            tolerance_for("fp32", atol=bad)
        with pytest.raises(VcompileError, match="--rtol must be a finite number"):
            tolerance_for("fp32", rtol=bad)
    with pytest.raises(VcompileError, match="no tolerance for precision 'int4'"):
        tolerance_for("int4")


def test_usable_cores_without_sched_getaffinity(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert environment.usable_cores() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")
    assert environment.usable_cores() == os.cpu_count()
    assert environment.cpu_info.__wrapped__()["usable_cores"] == os.cpu_count()
