"""Statistics of raw latency samples: bootstrap confidence intervals, and ratios between two cases.

A ratio is what vcompile reports (a runtime against eager, a model against the fastest model), so it comes with its
95% interval. Two records measured in the same comparison (`vcompile bench --rounds`: same rounds, seed and turn
orders) are paired by round: the ratio of their per-round medians, round by round, so that the machine's drift,
which both felt in the same round, cancels; the interval is a bootstrap over rounds of the median ratio. Records
measured apart are resampled independently, which leaves the drift between them inside a wider interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .records import Record

__all__ = ["BOOTSTRAP_RESAMPLES", "Interval", "median_interval", "mean_interval", "paired", "ratio_interval"]

BOOTSTRAP_RESAMPLES = 2000
_LEVEL = 95.0


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% confidence interval; for a ratio, ``paired_rounds`` says how it was formed (the
    number of paired rounds, or 0 for independent samples)."""

    value: float
    low: float
    high: float
    paired_rounds: int = 0

    @property
    def resolved(self) -> bool:
        """For a ratio: whether the interval excludes 1, so that the two cases can be ranked."""
        return not (self.low <= 1.0 <= self.high)

    @property
    def half_width(self) -> float:
        """The interval's larger half, relative to the value (0.05: +-5%)."""
        return max(self.value - self.low, self.high - self.value) / self.value if self.value else float("inf")

    def ratio_text(self) -> str:
        """``1.42x [1.35-1.50]``, with ``(unresolved)`` when the interval contains 1."""
        text = f"{self.value:.2f}x [{self.low:.2f}-{self.high:.2f}]"
        return text if self.resolved else f"{text} (unresolved)"


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bootstrap(values: np.ndarray, statistic, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return float(statistic(values)), float(statistic(values))
    draws = _rng(seed).choice(values, size=(BOOTSTRAP_RESAMPLES, len(values)), replace=True)
    estimates = statistic(draws, axis=1)
    tail = (100.0 - _LEVEL) / 2
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100.0 - tail))


def median_interval(values: Sequence[float], seed: int = 0) -> Interval:
    """The median of ``values`` with its 95% bootstrap interval (percentile method)."""
    array = np.asarray(values, dtype=float)
    low, high = _bootstrap(array, np.median, seed)
    return Interval(float(np.median(array)), low, high)


def mean_interval(values: Sequence[float], seed: int = 0) -> Interval:
    """The mean of ``values`` with its 95% bootstrap interval (percentile method)."""
    array = np.asarray(values, dtype=float)
    low, high = _bootstrap(array, np.mean, seed)
    return Interval(float(np.mean(array)), low, high)


def paired(a: Record, b: Record) -> bool:
    """Whether two records took turns in the same comparison (same rounds, seed and orders, both with rounds)."""
    return bool(a.sample_rounds and b.sample_rounds and a.rounds and a.rounds > 1 and a.rounds == b.rounds
                and a.round_seed == b.round_seed and a.round_orders == b.round_orders)


def _round_medians(record: Record) -> dict[int, float]:
    by_round: dict[int, list[float]] = {}
    for latency, index in zip(record.latencies_ms, record.sample_rounds or []):
        by_round.setdefault(index, []).append(latency)
    return {index: float(np.median(values)) for index, values in by_round.items()}


def ratio_interval(numerator: Record, denominator: Record, seed: int = 0) -> Interval | None:
    """``numerator``'s latency over ``denominator``'s (eager over a runtime: its speedup; a model over the fastest
    model: its relative latency), with a 95% interval: paired by round when the two took turns (`paired`), else
    the ratio of medians, each resampled independently. None when either has no latency."""
    if not numerator.latencies_ms or not denominator.latencies_ms:
        return None
    if paired(numerator, denominator):
        top, bottom = _round_medians(numerator), _round_medians(denominator)
        rounds = sorted(top.keys() & bottom.keys())
        if len(rounds) >= 2:
            ratios = np.array([top[r] / bottom[r] for r in rounds])
            low, high = _bootstrap(ratios, np.median, seed)
            return Interval(float(np.median(ratios)), low, high, paired_rounds=len(rounds))
    top, bottom = np.asarray(numerator.latencies_ms, float), np.asarray(denominator.latencies_ms, float)
    value = float(np.median(top) / np.median(bottom))
    if len(top) < 2 or len(bottom) < 2:
        return Interval(value, value, value)
    rng = _rng(seed)
    tops = np.median(rng.choice(top, size=(BOOTSTRAP_RESAMPLES, len(top))), axis=1)
    bottoms = np.median(rng.choice(bottom, size=(BOOTSTRAP_RESAMPLES, len(bottom))), axis=1)
    tail = (100.0 - _LEVEL) / 2
    estimates = tops / bottoms
    return Interval(value, float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100.0 - tail)))
