"""The report's figures, drawn with matplotlib's object API (no pyplot, no display) into PNG files."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from statistics import mean

from matplotlib.figure import Figure  # no pyplot: nothing global, no display, Agg renders the PNG
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..bench.records import Record
from .analysis import (
    CATEGORY_COLOURS,
    AverageRow,
    CostCurve,
    Device,
    LatencyRow,
    Series,
    SpeedupRow,
    SummaryPoint,
    category_of,
    device_of,
    measured,
    model_sort_key,
    series_of,
)

__all__ = ["plot_relative", "plot_flops", "plot_summary", "plot_speedups", "plot_cost_curves"]

_MARKERS = "osD^v<>ph*X"


def _figure(height: float, width: float = 8.0):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def _category_handles(models: Iterable[str]) -> list:
    present = {category_of(m) for m in models}
    return [Patch(color=colour, label=name) for name, colour in CATEGORY_COLOURS.items() if name in present]


def _legend_outside(ax, handles: list) -> None:
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _log_scale(ax, which: str, values: list[float]) -> None:
    """A log axis labelled with plain numbers; minor ticks are labelled only when the data spans little."""
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    decades = math.log10(max(values) / min(values))
    labelled = range(1, 10) if decades < 1 else (2, 3, 5) if decades < 2.5 else ()
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v)))
                                           in labelled else "") if labelled else NullFormatter())


def plot_relative(series: Series, averages: list[AverageRow], rows: list[LatencyRow], path: Path) -> Path:
    """Horizontal bars of relative latency, fastest first; with several devices, bars are the mean and markers
    the individual devices."""
    avgs = [a for a in averages if a.series == series]
    devices = sorted({r.device for r in rows if r.series == series}, key=Device.sort_key)
    fig, ax = _figure(1.6 + 0.32 * len(avgs))
    ax.barh(range(len(avgs)), [a.relative for a in avgs], color=[CATEGORY_COLOURS[category_of(a.model)] for a in avgs])
    ax.set_yticks(range(len(avgs)), [a.model for a in avgs])
    ax.invert_yaxis()
    handles = _category_handles(a.model for a in avgs)
    if len(devices) > 1:
        for i, device in enumerate(devices):
            mine = {r.model: r.relative for r in rows if r.series == series and r.device == device}
            points = [(mine[a.model], k) for k, a in enumerate(avgs) if a.model in mine]
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=_MARKERS[i % len(_MARKERS)], s=16,
                       color="black", zorder=3)
            handles.append(Line2D([], [], marker=_MARKERS[i % len(_MARKERS)], color="black", ls="", label=device.label))
    right = {a.model: max([a.relative] + [r.relative for r in rows if r.series == series and r.model == a.model])
             for a in avgs}
    for k, a in enumerate(avgs):
        note = f" ({len(a.devices)} of {len(devices)} devices)" if len(a.devices) < len(devices) else ""
        ax.text(right[a.model] * 1.01, k, f" {a.relative:.2f}{note}", va="center", fontsize=8)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, max(right.values()) * 1.35)
    ax.set_xlabel("mean latency relative to the fastest model (fastest = 1.0)")
    where = f"mean over {len(devices)} devices" if len(devices) > 1 else devices[0].label
    ax.set_title(f"{series.title} - {where}", fontsize=10)
    _legend_outside(ax, handles)
    return _save(fig, path)


def plot_flops(mode: str, records: list[Record], path: Path) -> Path:
    """GMACs per clip against measured mean latency (log-log), one marker per device and runtime."""
    groups: dict[tuple, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in measured(records):
        if r.mode == mode and r.gmacs:
            groups[(device_of(r), series_of(r))][r.model].append(r)
    keys = sorted(groups, key=lambda k: (k[0].sort_key(), k[1].sort_key()))
    fig, ax = _figure(5.5)
    handles = _category_handles(m for k in keys for m in groups[k])
    for i, key in enumerate(keys):
        models = sorted(groups[key], key=model_sort_key)
        xs = [groups[key][m][0].gmacs for m in models]
        ys = [mean(r.mean_ms for r in groups[key][m]) for m in models]
        marker = _MARKERS[i % len(_MARKERS)]
        ax.scatter(xs, ys, marker=marker, s=30, color=[CATEGORY_COLOURS[category_of(m)] for m in models], zorder=3)
        for m, x, y in zip(models, xs, ys):
            ax.annotate(m, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
        label = f"{key[0].label} · {key[1].runtime}" + (" · tiny" if key[1].tiny else "")
        handles.append(Line2D([], [], marker=marker, color="black", ls="", label=label))
    _log_scale(ax, "x", [groups[k][m][0].gmacs for k in keys for m in groups[k]])
    _log_scale(ax, "y", [r.mean_ms for k in keys for rs in groups[k].values() for r in rs])
    ax.set_xlabel("GMACs per clip (multiply-accumulates; 1 MAC = 2 FLOPs)")
    ax.set_ylabel(f"mean latency per {'training step' if mode == 'train' else 'forward pass'} (ms)")
    ax.set_title(f"{mode}: compute against measured latency", fontsize=10)
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.margins(x=0.15, y=0.08)
    _legend_outside(ax, handles)
    return _save(fig, path)


def plot_summary(points: list[SummaryPoint], path: Path) -> Path:
    """Average relative latency against normalised accuracy, models annotated and coloured by category."""
    fig, ax = _figure(5.5)
    ax.scatter([p.relative for p in points], [p.accuracy for p in points], s=40, zorder=3,
               color=[CATEGORY_COLOURS[category_of(p.model)] for p in points])
    for p in points:
        ax.annotate(p.model, (p.relative, p.accuracy), xytext=(5, 3), textcoords="offset points", fontsize=8)
    values = [p.relative for p in points]
    if max(values) / min(values) > 8:
        _log_scale(ax, "x", values)
    ax.set_ylim(-0.05, 1.1)
    ax.margins(x=0.15)
    names = {"train": "training", "batch": "batch", "single": "single-instance"}
    modes = [names.get(m, m) for m in dict.fromkeys(m for p in points for m in p.modes)]
    over = f"averaged over {', '.join(modes[:-1])} and {modes[-1]}" if len(modes) > 1 else f"{modes[0]} only"
    ax.set_xlabel(f"relative latency, {over} (fastest = 1.0)")
    ax.set_ylabel("accuracy, min-max normalised, mean of SSV2 and EK100")
    ax.set_title("speed against accuracy (accuracy as reported by the paper)", fontsize=10)
    ax.grid(True, lw=0.4, alpha=0.5)
    _legend_outside(ax, _category_handles(p.model for p in points))
    return _save(fig, path)


def plot_speedups(rows: list[SpeedupRow], title: str, path: Path) -> Path:
    """Speedup over PyTorch eager per model, one bar per runtime column, on a log axis centred on 1x."""
    columns = sorted({r.column for r in rows})
    models = sorted({r.model for r in rows}, key=model_sort_key)
    cells = {(r.model, r.column): r.speedup for r in rows}
    fig, ax = _figure(0.9 + 0.32 * len(models) * max(1, len(columns)) ** 0.5)
    height = 0.8 / len(columns)
    for index, column in enumerate(columns):
        ys = [i + (index - (len(columns) - 1) / 2) * height for i in range(len(models))]
        values = [cells.get((m, column), float("nan")) for m in models]
        ax.barh(ys, [v - 1 for v in values], left=1, height=height, label=column, zorder=3)
    ax.axvline(1.0, color="#222", lw=0.8, zorder=4)
    ax.set_xscale("log")
    spread = [r.speedup for r in rows]
    low, high = min(min(spread), 1.0) / 1.15, max(max(spread), 1.0) * 1.15
    ax.set_xlim(low, high)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if high / low < 8 else ""))
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over PyTorch eager at batch 1 (eager's mean / the runtime's; right of 1x is faster)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", which="both", lw=0.4, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def plot_cost_curves(curves: list[CostCurve], title: str, path: Path) -> Path:
    """Latency and peak memory against the clip's size (frames x pixels) on log-log axes, one line per model,
    labelled with its fitted exponent."""
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    latency, memory = fig.subplots(1, 2)
    for index, curve in enumerate(curves):
        colour = CATEGORY_COLOURS[category_of(curve.model)]
        marker = _MARKERS[index % len(_MARKERS)]
        xs = [frames * size * size / 1e6 for frames, size, _, _ in curve.points]
        latency.plot(xs, [p[2] for p in curve.points], marker=marker, color=colour, ms=4, lw=1,
                     label=f"{curve.model} (x^{curve.latency_exponent:.2f})")
        with_memory = [(x, p[3]) for x, p in zip(xs, curve.points) if p[3]]
        if with_memory:
            exponent = f" (x^{curve.memory_exponent:.2f})" if curve.memory_exponent is not None else ""
            memory.plot([x for x, _ in with_memory], [m for _, m in with_memory], marker=marker, color=colour, ms=4,
                        lw=1, label=f"{curve.model}{exponent}")
    for ax, what in ((latency, "mean latency (ms)"), (memory, "peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clip size: frames x height x width (million pixels)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", lw=0.4, alpha=0.5)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{title}: cost against clip size, fitted exponent in the legend (1: linear, 2: quadratic)",
                 fontsize=10)
    fig.savefig(path, dpi=120)
    return path
