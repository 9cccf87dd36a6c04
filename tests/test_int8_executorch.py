"""ExecuTorch int8's accuracy-aware search, on its quantized reference module in PyTorch (no lowering needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vcompile.compile import BuildOptions
from vcompile.compile.base import BuildContext, float_counts
from vcompile.data import clip_set, example_input
from vcompile.zoo import create_model

pytest.importorskip("executorch", reason='the executorch target needs executorch (pip install "vcompile[mobile]")')


def _context(tmp_path) -> BuildContext:
    from vcompile.check.parity import judge_outputs

    shape = (1, 3, 4, 64, 64)
    ctx = BuildContext(model=create_model("tsm-r50", tiny=True), example=example_input(shape),
                       options=BuildOptions(tiny=True, precision="int8"), out_dir=tmp_path,
                       check_inputs=clip_set("held_apart", shape, 1), check_set="held_apart")
    ctx.judge = lambda outputs: judge_outputs(outputs, ctx)
    return ctx


def test_a_failing_gate_keeps_the_least_robust_modules_float(tmp_path, monkeypatch):
    from vcompile.check import metrics
    from vcompile.compile.executorch import _accuracy_aware_int8

    # a gate no int8 module can pass: the search goes all the way to its limit
    monkeypatch.setitem(metrics.TOLERANCES, "int8", replace(metrics.TOLERANCES["int8"], min_cosine=1.0 + 1e-9))
    monkeypatch.setattr("vcompile.compile.base.CALIBRATION_CLIPS", 2)  # each attempt calibrates again: keep it short
    monkeypatch.setattr("vcompile.compile.base.MAX_FLOAT_SHARE", 0.15)  # and stops at 3 of its ~20 modules
    ctx = _context(tmp_path)
    _, quantization = _accuracy_aware_int8(ctx, ctx.model)
    search = quantization["accuracy_aware"]
    counts = [a["kept_float"] for a in search["attempts"]]
    assert counts == [0, *float_counts(search["quantized_modules"])] and all(
        a["status"] == "fail" for a in search["attempts"])
    kept = quantization["kept_float"]
    ratios = quantization["snr_db"]  # every ranked module's signal-to-quantization-noise ratio
    assert len(kept) == counts[-1] and kept == sorted(ratios, key=ratios.get)[: len(kept)]  # the least robust first
    assert len(ratios) >= search["quantized_modules"] - 1  # all but a layer whose input is the float clip
    convs = quantization["weighted_ops"]["conv"]
    assert convs["int8_weights"] < convs["ops"]  # the kept modules' convolutions read float weights
