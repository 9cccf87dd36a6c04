"""Timing loops: warm-up, then timed runs until the count or the time budget is reached.

On a GPU each run is timed with CUDA events around the work on the current stream (after synchronising);
on a CPU with `time.perf_counter` around a call that returns only when the work is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["TimedRuns", "time_runs"]


@dataclass(frozen=True)
class TimedRuns:
    latencies_ms: list[float]
    warmup_done: int
    stopped_by_budget: bool


def time_runs(step: Callable[[], object], *, warmup: int, iters: int, budget_s: float | None = None,
              cuda: bool = False, on_progress: Callable[[str, int, int], None] | None = None) -> TimedRuns:
    """Run ``step`` ``warmup`` times untimed, then up to ``iters`` times timed.

    The budget covers warm-up and timed runs together; when it runs out, timing stops early (at least one timed
    run is always made) and ``stopped_by_budget`` says so.
    """
    progress = on_progress or (lambda phase, done, total: None)
    started = time.perf_counter()

    def over_budget() -> bool:
        return budget_s is not None and time.perf_counter() - started > budget_s

    sync = _cuda_sync() if cuda else (lambda: None)
    warmup_done = 0
    for i in range(warmup):
        if i and over_budget():
            break
        step()
        sync()
        warmup_done += 1
        progress("warmup", warmup_done, warmup)
    latencies = []
    stopped = False
    for _ in range(iters):
        if latencies and over_budget():
            stopped = True
            break
        latencies.append(_timed_cuda(step) if cuda else _timed_cpu(step))
        progress("timed", len(latencies), iters)
    return TimedRuns(latencies, warmup_done, stopped or warmup_done < warmup)


def _timed_cpu(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return (time.perf_counter() - start) * 1e3


def _cuda_sync() -> Callable[[], None]:
    return torch.cuda.synchronize


def _timed_cuda(step: Callable[[], object]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)
