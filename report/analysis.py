"""The numbers behind `vcompile report`: devices, relative latencies, averages over devices, memory, summary.

Latency is relative to the fastest model per (device, mode, runtime, precision): fastest = 1.0, as in the
paper's figures 2-5; averages over devices follow the paper's summaries.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from statistics import mean

import numpy as np

from ..bench.case import MODES
from ..bench.records import Record
from ..bench.stats import Interval, ratio_interval
from ..errors import VcompileError
from ..zoo import build_args, get_spec
from .paper import normalised_accuracy

__all__ = ["Device", "Series", "LatencyRow", "AverageRow", "SummaryPoint", "PAPER_MODES", "CATEGORY_COLOURS",
           "category_of", "model_sort_key", "device_of", "series_of", "measured", "relative_latencies",
           "average_over_devices", "paper_records", "memory_table", "summary_points", "spearman", "SpeedupRow",
           "runtime_speedups", "clip_of", "CostCurve", "cost_curves"]

PAPER_MODES = ("train", "batch", "single")  # the modes the summary averages, measured with native PyTorch
CATEGORY_COLOURS = {"stand-alone attention": "#1f77b4", "composite transformer": "#ff7f0e",
                    "attention-only": "#d62728", "baseline": "#2ca02c", "other": "#7f7f7f"}
_KIND_ORDER = ("GPU", "CPU", "mobile CPU proxy")


@dataclass(frozen=True)
class Device:
    """Where a record was measured: a GPU model, a CPU model on a host, or the mobile CPU proxy."""

    kind: str
    name: str

    @property
    def label(self) -> str:
        return self.name if self.kind == "GPU" else f"{self.kind}: {self.name}"

    def sort_key(self) -> tuple:
        return (_KIND_ORDER.index(self.kind) if self.kind in _KIND_ORDER else len(_KIND_ORDER), self.kind, self.name)


@dataclass(frozen=True)
class Series:
    """Records that are compared with each other: one mode, one runtime, one precision that ran."""

    mode: str
    runtime: str
    setting: str  # the precision that ran (never the one requested: "amp" is fp16, bf16 or fp32 by device)
    tiny: bool = False
    clip: str = ""  # "" at the models' default clip; else frames x size, e.g. "8x224" (a cost-curve sweep)

    @property
    def title(self) -> str:
        return (f"{self.mode} · {self.runtime} · {self.setting}" + (" · tiny variants" if self.tiny else "")
                + (f" · {self.clip.replace('x', ' frames x ')} px" if self.clip else ""))

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.mode} {self.runtime} {self.setting} {'tiny' if self.tiny else ''}"
                      f" {self.clip}".lower()).strip("-")

    def sort_key(self) -> tuple:
        return (list(MODES).index(self.mode) if self.mode in MODES else len(MODES), self.mode, self.runtime,
                self.setting, self.tiny, tuple(int(n) for n in self.clip.split("x")) if self.clip else ())


@dataclass(frozen=True)
class LatencyRow:
    """One model on one device in one series; ``relative`` is its mean over the fastest model's mean."""

    series: Series
    device: Device
    model: str
    mean_ms: float
    median_ms: float
    relative: float
    batch: str
    precision: str
    records: int
    # Its latency over the fastest model's, with a 95% interval (paired by round when the two took turns); None
    # for the fastest model itself, and where either has several records.
    interval: Interval | None = None


@dataclass(frozen=True)
class AverageRow:
    """One model's relative latency in one series, averaged over the devices that measured it."""

    series: Series
    model: str
    relative: float
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class SummaryPoint:
    """A model of the summary figure: relative latency averaged over the paper's modes, normalised accuracy."""

    model: str
    relative: float
    modes: tuple[str, ...]
    accuracy: float


@dataclass(frozen=True)
class SpeedupRow:
    """One model on one machine: a runtime (in a mode) against PyTorch eager, both at batch 1 and one precision.

    ``speedup`` is eager's mean latency over the runtime's (above 1: the runtime is faster).
    """

    machine: str  # the CPU or GPU the two records share (the mobile CPU proxy is this machine's CPU)
    precision: str
    model: str
    column: str  # "onnxruntime · single", "executorch · mobile", ...
    eager_ms: float
    mean_ms: float
    speedup: float
    interval: Interval | None = None  # eager's latency over the runtime's with its 95% interval (`ratio_interval`)


@cache
def category_of(model: str) -> str:
    try:
        return get_spec(model).category
    except VcompileError:
        return "other"


def model_sort_key(model: str) -> tuple:
    return (list(CATEGORY_COLOURS).index(category_of(model)), model)


def device_of(record: Record) -> Device:
    """The device a record was measured on, from its environment fingerprint."""
    env = record.env or {}
    cpu = f"{(env.get('cpu') or {}).get('model') or 'unknown CPU'} ({env.get('host') or 'unknown host'})"
    if record.label.startswith("mobile CPU proxy"):
        return Device("mobile CPU proxy", cpu)
    if record.device.startswith("cuda"):
        gpus = env.get("gpus") or []
        index = int(record.device.split(":")[1]) if record.device[5:6] == ":" else 0
        gpu = next((g for g in gpus if g.get("index") == index), gpus[0] if gpus else {})
        return Device("GPU", gpu.get("name") or record.device)
    return Device("CPU" if record.device == "cpu" else record.device, cpu)


@cache
def _default_clip(model: str, tiny: bool) -> tuple[int, int] | None:
    try:
        args = build_args(model, tiny=tiny)
    except VcompileError:  # a model this version of the zoo does not know
        return None
    return args["frames"], args["size"]


def clip_of(record: Record) -> str:
    """``frames x size`` of the record's clip when it is not its model's default (see `Series.clip`), else ""."""
    shape = record.input_shape
    if len(shape) != 5:
        return ""
    frames, size = shape[2], shape[3]
    return "" if (frames, size) == _default_clip(record.model, bool(record.tiny)) else f"{frames}x{size}"


def series_of(record: Record) -> Series:
    return Series(record.mode, record.runtime, record.precision, bool(record.tiny), clip_of(record))


def requested_of(record: Record) -> str:
    """What the record's case asked for (records older than the field asked for their mode's precision)."""
    default = MODES[record.mode].precision if record.mode in MODES else record.precision
    return record.requested_precision or default


def measured(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r.status == "ok" and r.mean_ms is not None]


def relative_latencies(records: Iterable[Record]) -> list[LatencyRow]:
    """Relative latency per (series, device): the fastest model's mean is 1.0, the others their ratio to it.

    Several ok records of one model on one device (a re-run, two hosts with the same GPU) are averaged.
    """
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in measured(records):
        groups[(series_of(r), device_of(r), r.model)].append(r)
    means = {key: mean(r.mean_ms for r in rs) for key, rs in groups.items()}
    fastest: dict[tuple, float] = {}
    for (series, device, _), value in means.items():
        fastest[(series, device)] = min(value, fastest.get((series, device), value))
    fastest_model = {(series, device): model for (series, device, model), value in means.items()
                     if value == fastest[(series, device)]}
    rows = []
    for (series, device, model), rs in groups.items():
        value = means[(series, device, model)]
        best = groups[(series, device, fastest_model[(series, device)])]
        interval = (ratio_interval(rs[0], best[0]) if len(rs) == 1 and len(best) == 1 and best[0] is not rs[0]
                    else None)
        rows.append(LatencyRow(series, device, model, value, mean(r.median_ms or r.mean_ms for r in rs),
                               value / fastest[(series, device)] if fastest[(series, device)] > 0 else 1.0,
                               "/".join(sorted({str(r.batch) for r in rs}, key=int)),
                               "/".join(sorted({r.precision for r in rs})), len(rs), interval))
    return sorted(rows, key=lambda row: (row.series.sort_key(), row.device.sort_key(), row.relative, row.model))


def average_over_devices(rows: Iterable[LatencyRow]) -> list[AverageRow]:
    """Each model's relative latency per series averaged over devices, as the paper's summaries do."""
    groups: dict[tuple, list[LatencyRow]] = defaultdict(list)
    for row in rows:
        groups[(row.series, row.model)].append(row)
    averages = [AverageRow(series, model, mean(r.relative for r in rs),
                           tuple(sorted((r.device for r in rs), key=Device.sort_key)))
                for (series, model), rs in groups.items()]
    return sorted(averages, key=lambda a: (a.series.sort_key(), a.relative, a.model))


def paper_records(records: Iterable[Record]) -> list[Record]:
    """Records of the paper's desktop protocol: native PyTorch, train/batch/single, asked for the mode's own
    precision (amp; the precision it ran in names their series).

    If both tiny and full-size variants were measured, only the full-size ones are kept.
    """
    chosen = [r for r in records if r.runtime == "torch" and r.mode in PAPER_MODES
              and requested_of(r) == MODES[r.mode].precision]
    if any(not r.tiny for r in chosen):
        chosen = [r for r in chosen if not r.tiny]
    return chosen


def memory_table(records: Iterable[Record]) -> dict[Device, dict[str, dict[str, tuple[float, str] | str]]]:
    """Peak memory in the layout of the paper's Table 2, per device: {device: {model: {mode: cell}}}.

    A cell is (MB, "device") when the device's allocator peak was measured, else (MB, "host") for the peak
    resident memory of the process; a case that never succeeded shows its status (``oom``, ``timeout``...).
    """
    table: dict[Device, dict[str, dict[str, tuple[float, str] | str]]] = defaultdict(lambda: defaultdict(dict))
    chosen = paper_records(records)
    for r in sorted(chosen, key=lambda r: r.status != "ok"):  # ok records first: a failure never hides them
        cells = table[device_of(r)][r.model]
        current = cells.get(r.mode)
        if r.status != "ok":
            cells.setdefault(r.mode, r.status)
            continue
        value = (r.peak_device_mb, "device") if r.peak_device_mb is not None else (r.peak_host_mb, "host")
        if value[0] is None:
            continue
        rank = (value[1] == "device", value[0])  # device figures win over host figures, then the largest peak
        if not isinstance(current, tuple) or rank > (current[1] == "device", current[0]):
            cells[r.mode] = value
    return {d: {m: dict(table[d][m]) for m in sorted(table[d], key=model_sort_key)}
            for d in sorted(table, key=Device.sort_key)}


def summary_points(averages: Iterable[AverageRow], records: Iterable[Record]) -> list[SummaryPoint]:
    """The summary figure's points: relative latency averaged over train, batch and single (each already
    averaged over devices) against the paper's accuracy normalised per dataset and averaged over SSV2 and EK100.
    Where one mode ran in several precisions (amp: fp16 on the GPUs, bf16 or fp32 on the CPUs), its figure is the
    mean of those series, as it is the mean of devices within one."""
    keep = {series_of(r) for r in paper_records(records)}
    per_model: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for a in averages:
        if a.series in keep:
            per_model[a.model][a.series.mode].append(a.relative)
    points = []
    for model, by_mode in per_model.items():
        accuracy = normalised_accuracy(model)
        if accuracy is not None:
            modes = tuple(m for m in PAPER_MODES if m in by_mode)
            points.append(SummaryPoint(model, mean(mean(by_mode[m]) for m in modes), modes, accuracy))
    return sorted(points, key=lambda p: (p.relative, p.model))


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        start = 0
        while start < len(order):
            end = start
            while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
                end += 1
            for k in range(start, end + 1):
                out[order[k]] = (start + end) / 2
            start = end + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = mean(rx), mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else None


@dataclass(frozen=True)
class CostCurve:
    """One model's latency and peak memory at several clip sizes (frames x pixels), on one device in one series
    (its ``clip`` left empty), with the exponents of power laws fitted on log-log axes: 1 is linear in the clip's
    size, 2 quadratic (attention over every token of the clip)."""

    device: Device
    series: Series
    model: str
    points: tuple[tuple[int, int, float, float | None], ...]  # frames, size, mean ms, peak MB (device or host)
    latency_exponent: float
    memory_exponent: float | None


def _exponent(xs: list[float], ys: list[float]) -> float:
    """The slope of log y on log x (least squares)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def cost_curves(records: Iterable[Record]) -> list[CostCurve]:
    """Every model measured at two or more clip sizes in one series on one device (`vcompile bench --frames 8,16,32
    --size ...`), as a `CostCurve`; several records of one clip are averaged."""
    groups: dict[tuple, dict[tuple[int, int], list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in measured(records):
        if len(r.input_shape) == 5:
            series = replace(series_of(r), clip="")
            groups[(device_of(r), series, r.model)][(r.input_shape[2], r.input_shape[3])].append(r)
    curves = []
    for (device, series, model), by_clip in groups.items():
        if len({frames * size * size for frames, size in by_clip}) < 2:
            continue
        points = []
        for (frames, size), rs in sorted(by_clip.items(), key=lambda item: item[0][0] * item[0][1] ** 2):
            peaks = [r.peak_device_mb if r.device.startswith("cuda") else r.peak_host_mb for r in rs]
            peaks = [p for p in peaks if p]
            points.append((frames, size, mean(r.mean_ms for r in rs), mean(peaks) if peaks else None))
        xs = [float(f * s * s) for f, s, _, _ in points]
        memory = [p for p in points if p[3]]
        curves.append(CostCurve(device, series, model, tuple(points), _exponent(xs, [p[2] for p in points]),
                                _exponent([float(f * s * s) for f, s, _, _ in memory], [p[3] for p in memory])
                                if len(memory) >= 2 else None))
    return sorted(curves, key=lambda c: (c.device.sort_key(), c.series.sort_key(), model_sort_key(c.model)))


def runtime_speedups(records: Iterable[Record]) -> list[SpeedupRow]:
    """Every batch-1 runtime measurement against PyTorch eager's single-instance mean on the same machine, at the
    same precision: which runtime to ship, per model. Models without an eager record are left out. A runtime whose
    artifact failed its build-time check (parity, or the accuracy gate) is never a deployment: its column says so.
    Where each side has one record, the speedup is the ratio with its 95% interval (`ratio_interval`: per round
    when the two took turns), else the ratio of means."""
    means: dict[tuple, list[Record]] = defaultdict(list)
    for r in measured(records):
        if r.batch == 1 and r.mode in ("single", "mobile"):
            machine = device_of(r).name + ("" if r.device == "cpu" else f" ({r.device})")
            failed = (r.artifact_check or {}).get("status") == "fail"
            runtime = f"{r.runtime} (fails its check)" if failed else r.runtime
            means[(machine, r.precision, r.model, runtime, r.mode)].append(r)
    rows = []
    for (machine, precision, model, runtime, mode), found in means.items():
        eager = means.get((machine, precision, model, "torch", "single"))
        if not eager or (runtime, mode) == ("torch", "single"):
            continue
        eager_ms, mean_ms = mean(r.mean_ms for r in eager), mean(r.mean_ms for r in found)
        interval = ratio_interval(eager[0], found[0]) if len(eager) == 1 and len(found) == 1 else None
        speedup = interval.value if interval else eager_ms / mean_ms if mean_ms > 0 else float("inf")
        rows.append(SpeedupRow(machine, precision, model, f"{runtime} · {mode}", eager_ms, mean_ms, speedup,
                               interval))
    return sorted(rows, key=lambda r: (r.machine, r.precision, model_sort_key(r.model), r.column))
