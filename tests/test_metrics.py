"""Parity metrics on hand-made logits: each criterion can fail, ties are not failures."""

from __future__ import annotations

import numpy as np

from vcompile.check.metrics import TOLERANCES, Tolerance, compare_logits, tolerance_for

FP32 = TOLERANCES["fp32"]


def test_identical_logits_pass():
    ref = np.random.default_rng(0).normal(size=(4, 10))
    a = compare_logits(ref, ref.copy(), FP32)
    assert a.passed and a.max_abs == 0 and np.isclose(a.cosine, 1.0) and a.top1 == 1.0 and a.top5 == 1.0


def test_small_error_passes_and_reports_the_smallest_atol():
    ref = np.random.default_rng(1).normal(size=(3, 10))
    got = ref + 5e-5
    a = compare_logits(ref, got, FP32)
    assert a.passed and np.isclose(a.max_abs, 5e-5)
    assert a.smallest_atol <= 5e-5
    strict = compare_logits(ref, got, Tolerance(1e-12, 1e-12, 0.9999, True))
    assert not strict.passed and "exceeds atol" in strict.reason


def test_elementwise_failure_and_cosine_failure():
    ref = np.random.default_rng(2).normal(size=(2, 10))
    got = ref.copy()
    got[0, 3] += 0.5
    a = compare_logits(ref, got, FP32)
    assert not a.passed and "max abs error 5.00e-01" in a.reason
    fp16 = compare_logits(ref, -ref, TOLERANCES["fp16"])
    assert not fp16.passed and "cosine" in fp16.reason and fp16.top1 == 0.0


def test_top1_tie_is_not_a_failure():
    ref = np.array([[1.0, 1.00001, 0.0, -1.0, -2.0, -3.0]])
    got = np.array([[1.00001, 1.0, 0.0, -1.0, -2.0, -3.0]])
    a = compare_logits(ref, got, FP32)
    assert a.top1 == 0.0 and a.ties == 1 and a.disagreements == 0 and a.passed


def test_real_top1_disagreement_fails_under_fp16():
    ref = np.array([[3.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    got = np.array([[1.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    a = compare_logits(ref, got, TOLERANCES["fp16"])
    assert not a.passed and a.disagreements == 1 and "top-1 differs" in a.reason and a.top5 == 1.0


def test_non_finite_and_shape_mismatch_fail():
    ref = np.zeros((1, 5))
    assert "non-finite" in compare_logits(ref, np.full((1, 5), np.nan), FP32).reason
    assert "shape" in compare_logits(ref, np.zeros((1, 4)), FP32).reason


def test_fp32_atol_scales_with_the_logits_scale():
    # logits in the thousands (seeded TEA-R50): summation-order noise of 1e-5 of the scale lands on every logit,
    # including one near zero, where a fixed atol of 1e-4 would call it a failure
    ref = np.random.default_rng(3).normal(scale=700.0, size=(2, 400))
    ref[0, 0] = 2.0
    got = ref + 7e-3
    a = compare_logits(ref, got, FP32)
    assert a.passed and a.scale > 600 and a.smallest_atol < 1e-4
    absolute = compare_logits(ref, got, tolerance_for("fp32", atol=1e-4))  # an atol the user states is absolute
    assert not absolute.passed and "exceeds atol 0.0001 + rtol" in absolute.reason
    # an error of 1e-3 of the scale is still a failure, and the message names the scale it was judged at
    bad = ref.copy()
    bad[0, 0] += 0.7
    b = compare_logits(ref, bad, FP32)
    assert not b.passed and "x logit scale 7" in b.reason and b.smallest_atol > 1e-4


def test_unit_scale_logits_are_judged_exactly_as_allclose():
    rng = np.random.default_rng(4)
    ref = rng.normal(scale=0.5, size=(3, 10))
    for err in (5e-5, 2e-4):
        got = ref + err * rng.choice([-1.0, 1.0], size=ref.shape)
        assert compare_logits(ref, got, FP32).passed == bool(np.allclose(got, ref, atol=1e-4, rtol=1e-3))
        assert compare_logits(ref, got, FP32).scale == 1.0


def test_int8_gate_needs_the_top5_classes_too():
    ref = np.tile(5.0 + np.arange(400.0)[::-1] / 400, (2, 1))  # classes 0-4 on top, in order
    got = ref.copy()
    got[:, [3, 4, 10, 11]] = got[:, [10, 11, 3, 4]]  # two of the top five replaced: overlap 0.6
    a = compare_logits(ref, got, TOLERANCES["int8"])
    assert a.top1 == 1.0 and a.cosine > 0.99 and a.top5 == 0.6
    assert not a.passed and "top-5 overlap 0.60 below 0.8" in a.reason
    assert compare_logits(ref, ref + 0.01, TOLERANCES["int8"]).passed


def test_top5_overlap_exactly_at_the_threshold_passes():
    ref = np.tile(5.0 + np.arange(400.0)[::-1] / 400, (5, 1))
    got = ref.copy()
    got[:, [4, 10]] = got[:, [10, 4]]  # one of the top five replaced on each of 5 clips: overlap 4/5 everywhere
    a = compare_logits(ref, got, TOLERANCES["int8"])
    assert abs(a.top5 - 0.8) < 1e-12 and a.passed, a.reason
