"""Ratios with confidence intervals: paired by round when two cases took turns, independent otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from vcompile.bench.records import Record
from vcompile.bench.stats import Interval, mean_interval, median_interval, paired, ratio_interval


def _record(latencies, rounds=None, orders=None) -> Record:
    record = Record(model="x3d-xs", runtime="torch", mode="single", status="ok", precision="fp32", batch=1,
                    input_shape=[1, 3, 4, 64, 64], device="cpu", threads=1, warmup=0, iters=len(latencies))
    record.set_latencies(list(latencies))
    if rounds is not None:
        per = len(latencies) // rounds
        record.rounds, record.round_seed, record.round_orders = rounds, 0, orders or [["a", "b"]] * rounds
        record.sample_rounds = [i // per for i in range(len(latencies))]
    return record


def test_median_and_mean_intervals_hold_the_estimate_and_narrow_with_more_samples():
    rng = np.random.default_rng(0)
    few, many = rng.normal(100, 10, 10), rng.normal(100, 10, 1000)
    small, large = median_interval(few), median_interval(many)
    assert small.value == pytest.approx(np.median(few)) and small.low <= small.value <= small.high
    assert large.high - large.low < (small.high - small.low) / 3
    assert mean_interval(many).value == pytest.approx(many.mean()) and mean_interval(many).half_width < 0.02


def test_paired_rounds_cancel_the_drift_that_independent_samples_keep():
    # the machine slows down round by round; the runtime is 1.5x faster than eager in every round
    drift = np.repeat([1.0, 1.3, 0.8, 1.6, 1.1, 0.9], 4) * (1 + np.tile([0.0, 0.01, -0.01, 0.005], 6))
    eager, runtime = _record(150 * drift, rounds=6), _record(100 * drift, rounds=6)
    assert paired(eager, runtime)
    ratio = ratio_interval(eager, runtime)
    assert ratio.paired_rounds == 6 and ratio.value == pytest.approx(1.5) and ratio.half_width < 0.01
    assert ratio.resolved and ratio.ratio_text() == "1.50x [1.50-1.50]"
    apart = ratio_interval(_record(150 * drift), _record(100 * drift[::-1]))  # the same samples, not paired
    assert apart.paired_rounds == 0 and apart.high - apart.low > 10 * (ratio.high - ratio.low)


def test_records_of_different_comparisons_are_not_paired():
    a, b = _record([10.0] * 8, rounds=4), _record([10.0] * 8, rounds=4, orders=[["b", "a"]] * 4)
    assert not paired(a, b) and not paired(a, _record([10.0] * 8)) and paired(a, _record([12.0] * 8, rounds=4))
    assert ratio_interval(a, _record([])) is None


def test_an_interval_that_contains_one_is_unresolved():
    tie = Interval(1.02, 0.97, 1.08)
    assert not tie.resolved and tie.ratio_text() == "1.02x [0.97-1.08] (unresolved)"
    assert Interval(0.8, 0.75, 0.85).resolved and Interval(1.0, 0.9, 1.2).half_width == pytest.approx(0.2)
