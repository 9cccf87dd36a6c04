"""`vcompile report`: result files -> Markdown, CSV and a self-contained HTML page with PNG plots.

What it shows follows the paper (reference/paper-protocol.md): latency relative to the fastest model per device
and mode (figures 2-5), averaged over devices when files from several machines are merged; peak memory per mode
(Table 2); GMACs against measured latency (appendix A); average relative latency against the paper's accuracy
(the summary figure); and the build and parity grids when given. Output is deterministic: everything is sorted
and nothing depends on the time or the machine that writes the report.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from statistics import mean

from vcompile.bench.case import MODES
from vcompile.bench.paper import normalised_accuracy, paper_accuracy
from vcompile.bench.records import Record, read_records
from vcompile.errors import VcompileError

__all__ = ["Device", "Series", "LatencyRow", "AverageRow", "SummaryPoint", "PAPER_MODES", "CATEGORY_COLOURS",
           "device_of", "series_of", "relative_latencies", "average_over_devices", "paper_records",
           "memory_table", "summary_points", "plot_relative", "plot_flops", "plot_summary", "write_report"]

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
    """Records that are compared with each other: one mode, one runtime, one precision setting."""

    mode: str
    runtime: str
    setting: str  # the requested precision ("amp" = the protocol's mixed precision, fp16 on CUDA, fp32 on a CPU)
    tiny: bool = False

    @property
    def title(self) -> str:
        return f"{self.mode} · {self.runtime} · {self.setting}" + (" · tiny variants" if self.tiny else "")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", f"{self.mode} {self.runtime} {self.setting} {'tiny' if self.tiny else ''}"
                      .lower()).strip("-")

    def sort_key(self) -> tuple:
        return (list(MODES).index(self.mode) if self.mode in MODES else len(MODES), self.mode, self.runtime,
                self.setting, self.tiny)


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


@cache
def _category(model: str) -> str:
    from vcompile.zoo import get_spec

    try:
        return get_spec(model).category
    except VcompileError:
        return "other"


def _model_key(model: str) -> tuple:
    return (list(CATEGORY_COLOURS).index(_category(model)), model)


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


def series_of(record: Record) -> Series:
    default = MODES[record.mode].precision if record.mode in MODES else record.precision
    return Series(record.mode, record.runtime, record.requested_precision or default, bool(record.tiny))


def _measured(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r.status == "ok" and r.mean_ms is not None]


def relative_latencies(records: Iterable[Record]) -> list[LatencyRow]:
    """Relative latency per (series, device): the fastest model's mean is 1.0, the others their ratio to it.

    Several ok records of one model on one device (a re-run, two hosts with the same GPU) are averaged.
    """
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in _measured(records):
        groups[(series_of(r), device_of(r), r.model)].append(r)
    means = {key: mean(r.mean_ms for r in rs) for key, rs in groups.items()}
    fastest: dict[tuple, float] = {}
    for (series, device, _), value in means.items():
        fastest[(series, device)] = min(value, fastest.get((series, device), value))
    rows = []
    for (series, device, model), rs in groups.items():
        value = means[(series, device, model)]
        rows.append(LatencyRow(series, device, model, value, mean(r.median_ms or r.mean_ms for r in rs),
                               value / fastest[(series, device)] if fastest[(series, device)] > 0 else 1.0,
                               "/".join(sorted({str(r.batch) for r in rs}, key=int)),
                               "/".join(sorted({r.precision for r in rs})), len(rs)))
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
    """Records of the paper's desktop protocol: native PyTorch, train/batch/single, the mode's own precision.

    If both tiny and full-size variants were measured, only the full-size ones are kept.
    """
    chosen = [r for r in records if r.runtime == "torch" and r.mode in PAPER_MODES
              and series_of(r).setting == MODES[r.mode].precision]
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
    return {d: {m: dict(table[d][m]) for m in sorted(table[d], key=_model_key)}
            for d in sorted(table, key=Device.sort_key)}


def summary_points(averages: Iterable[AverageRow], records: Iterable[Record]) -> list[SummaryPoint]:
    """The summary figure's points: relative latency averaged over train, batch and single (each already
    averaged over devices) against the paper's accuracy normalised per dataset and averaged over SSV2 and EK100."""
    keep = {series_of(r) for r in paper_records(records)}
    per_model: dict[str, dict[str, float]] = defaultdict(dict)
    for a in averages:
        if a.series in keep:
            per_model[a.model][a.series.mode] = a.relative
    points = []
    for model, by_mode in per_model.items():
        accuracy = normalised_accuracy(model)
        if accuracy is not None:
            modes = tuple(m for m in PAPER_MODES if m in by_mode)
            points.append(SummaryPoint(model, mean(by_mode[m] for m in modes), modes, accuracy))
    return sorted(points, key=lambda p: (p.relative, p.model))


def _spearman(xs: list[float], ys: list[float]) -> float | None:
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


# ---------------------------------------------------------------------------------------------------- plots

_MARKERS = "osD^v<>ph*X"


def _figure(height: float, width: float = 8.0):
    from matplotlib.figure import Figure  # no pyplot: nothing global, no display, Agg renders the PNG

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def _category_handles(models: Iterable[str]) -> list:
    from matplotlib.patches import Patch

    present = {_category(m) for m in models}
    return [Patch(color=colour, label=name) for name, colour in CATEGORY_COLOURS.items() if name in present]


def _legend_outside(ax, handles: list) -> None:
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _log_scale(ax, which: str, values: list[float]) -> None:
    """A log axis labelled with plain numbers; minor ticks are labelled only when the data spans little."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

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
    from matplotlib.lines import Line2D

    avgs = [a for a in averages if a.series == series]
    devices = sorted({r.device for r in rows if r.series == series}, key=Device.sort_key)
    fig, ax = _figure(1.6 + 0.32 * len(avgs))
    ax.barh(range(len(avgs)), [a.relative for a in avgs], color=[CATEGORY_COLOURS[_category(a.model)] for a in avgs])
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
    from matplotlib.lines import Line2D

    groups: dict[tuple, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in _measured(records):
        if r.mode == mode and r.gmacs:
            groups[(device_of(r), series_of(r))][r.model].append(r)
    keys = sorted(groups, key=lambda k: (k[0].sort_key(), k[1].sort_key()))
    fig, ax = _figure(5.5)
    handles = _category_handles(m for k in keys for m in groups[k])
    for i, key in enumerate(keys):
        models = sorted(groups[key], key=_model_key)
        xs = [groups[key][m][0].gmacs for m in models]
        ys = [mean(r.mean_ms for r in groups[key][m]) for m in models]
        marker = _MARKERS[i % len(_MARKERS)]
        ax.scatter(xs, ys, marker=marker, s=30, color=[CATEGORY_COLOURS[_category(m)] for m in models], zorder=3)
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
               color=[CATEGORY_COLOURS[_category(p.model)] for p in points])
    for p in points:
        ax.annotate(p.model, (p.relative, p.accuracy), xytext=(5, 3), textcoords="offset points", fontsize=8)
    values = [p.relative for p in points]
    if max(values) / min(values) > 8:
        _log_scale(ax, "x", values)
    ax.set_ylim(-0.05, 1.1)
    ax.margins(x=0.15)
    ax.set_xlabel("relative latency, averaged over training, batch and single-instance inference (fastest = 1.0)")
    ax.set_ylabel("accuracy, min-max normalised, mean of SSV2 and EK100")
    ax.set_title("speed against accuracy (accuracy as reported by the paper)", fontsize=10)
    ax.grid(True, lw=0.4, alpha=0.5)
    _legend_outside(ax, _category_handles(p.model for p in points))
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------- document

class _Doc:
    """Headings, paragraphs, tables and images, rendered once as Markdown and once as self-contained HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[object]]) -> None:
        self.blocks.append(("table", headers, [["" if c is None else str(c) for c in row] for row in rows]))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append("#" * block[1] + " " + block[2])
            elif block[0] == "p":
                out.append(block[1])
            elif block[0] == "table":
                lines = ["| " + " | ".join(cell(h) for h in block[1]) + " |", "|" + "---|" * len(block[1])]
                lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block[2]]
                out.append("\n".join(lines))
            else:
                out.append(f"![{block[2]}]({block[1].name})")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        esc = html.escape
        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
            elif block[0] == "p":
                out.append(f"<p>{esc(block[1])}</p>")
            elif block[0] == "table":
                head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                out.append(f'<figure><img alt="{esc(block[2])}" src="data:image/png;base64,{data}"></figure>')
        style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
                 "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}"
                 "img{max-width:100%}figure{margin:1em 0}")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>vcompile report</title>"
                f"<style>{style}</style></head>\n<body>\n" + "\n".join(out) + "\n</body>\n</html>\n")


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _by_key(items: Iterable, key) -> dict:
    groups: dict = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


# ---------------------------------------------------------------------------------------------------- inputs

def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise VcompileError(f"cannot read the {what} {path}: {err.strerror or err}") from None
    except ValueError:
        raise VcompileError(f"{path} is not JSON; expected the {what} written by vcompile") from None


def _read_items(path: Path, what: str, key: str, required: tuple[str, ...]) -> list[dict]:
    data = _read_json(path, what)
    items = data.get(key) if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, dict) and all(f in i for f in required) for i in items):
        raise VcompileError(f"{path} is not a {what}: expected a list of objects with {', '.join(required)}")
    return items


def _load_records(result_files: list[Path]) -> dict[Path, list[Record]]:
    if not result_files:
        raise VcompileError("no results files given; pass the .jsonl files written by `vcompile bench`")
    by_file = {path: read_records(path) for path in result_files}
    records = [r for found in by_file.values() for r in found]
    if not _measured(records):
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in records).items())) or "empty"
        names = ", ".join(str(p) for p in result_files)
        raise VcompileError(f"no 'ok' records in {names} ({statuses}); nothing to report: measure with "
                            "`vcompile bench`")
    return by_file


# ---------------------------------------------------------------------------------------------------- sections

def _latency_sections(doc: _Doc, rows: list[LatencyRow], averages: list[AverageRow], out_dir: Path,
                      written: dict[str, Path]) -> None:
    doc.heading(2, "Relative latency (the paper's figures 2-5)")
    doc.para("Per device, mode, runtime and precision setting, the fastest model's mean latency is 1.0 and every "
             "other model is its mean divided by that one's. With several devices each model's figure is the "
             "arithmetic mean of its per-device figures over the devices that measured it (the devices column). "
             "The paper measured train, batch and single with native PyTorch (runtime torch) and mobile with "
             "Core ML and PyTorch Lite.")
    for series in sorted({r.series for r in rows}, key=Series.sort_key):
        mine = [r for r in rows if r.series == series]
        devices = sorted({r.device for r in mine}, key=Device.sort_key)
        doc.heading(3, series.title)
        runs = sorted({(r.device, r.precision, r.batch) for r in mine}, key=lambda x: (x[0].sort_key(), x[1:]))
        doc.para("Runs in: " + "; ".join(f"{d.label}: {p}, batch {b}" for d, p, b in runs) + ".")
        png = written[f"relative-{series.slug}.png"] = plot_relative(series, averages, rows,
                                                                     out_dir / f"relative-{series.slug}.png")
        doc.image(png, f"relative latency, {series.title}")
        cells = {(r.device, r.model): f"{r.relative:.2f} ({_ms(r.mean_ms)} ms)" for r in mine}
        doc.table(["model", "category", "relative latency", "devices"] + [d.label for d in devices],
                  [[a.model, _category(a.model), f"{a.relative:.2f}", f"{len(a.devices)} of {len(devices)}"]
                   + [cells.get((d, a.model), "-") for d in devices] for a in averages if a.series == series])


def _summary_section(doc: _Doc, points: list[SummaryPoint], records: list[Record], out_dir: Path,
                     written: dict[str, Path]) -> None:
    doc.heading(2, "Summary: speed against accuracy")
    doc.para("Relative latency of native PyTorch (runtime torch) at the protocol's precision, averaged over "
             "devices per mode and then over training, batch and single-instance inference; accuracy as "
             "reported by the paper (Table 4: SSV2 top-1, EK100 action top-1), min-max normalised per dataset "
             "over the models the paper trained and averaged over SSV2 and EK100. vcompile does not train models: "
             "the accuracies are the paper's, not measured here.")
    measured = {r.model for r in paper_records(records) if r.status == "ok"}
    missing = sorted(measured - {p.model for p in points}, key=_model_key)
    if not points:
        doc.para("No model has both a PyTorch train, batch or single latency and a paper accuracy; no summary.")
        return
    png = written["summary.png"] = plot_summary(points, out_dir / "summary.png")
    doc.image(png, "average relative latency against normalised accuracy")
    doc.table(["model", "category", "avg relative latency", "modes averaged", "normalised accuracy",
               "SSV2 top-1 %", "EK100 action %"],
              [[p.model, _category(p.model), f"{p.relative:.2f}", ", ".join(p.modes), f"{p.accuracy:.2f}",
                paper_accuracy(p.model, "ssv2"), paper_accuracy(p.model, "ek100")] for p in points])
    if missing:
        doc.para("Left out (no accuracy in the paper): " + ", ".join(missing) + ".")


def _memory_section(doc: _Doc, records: list[Record]) -> None:
    doc.heading(2, "Peak memory (the paper's Table 2)")
    table = memory_table(records)
    if not table:
        doc.para("No native PyTorch train, batch or single records; no memory table.")
        return
    doc.para("Native PyTorch at the protocol's precision. Device memory is torch.cuda.max_memory_allocated; "
             "host memory is the peak resident set of the measuring process (the runtime included), given "
             "where no device figure exists. Cells that never succeeded show their status.")
    for device, models in table.items():
        kinds = {c[1] for cells in models.values() for c in cells.values() if isinstance(c, tuple)}
        unit = f"peak {min(kinds)} memory, MB" if len(kinds) == 1 else "peak memory, MB (device unless marked host)"
        doc.heading(3, f"{device.label} ({unit})")
        doc.table(["model", "category", *PAPER_MODES],
                  [[m, _category(m), *(_memory_cell(cells.get(mode), len(kinds) > 1) for mode in PAPER_MODES)]
                   for m, cells in models.items()])


def _memory_cell(cell: tuple[float, str] | str | None, mixed: bool) -> str:
    if cell is None or isinstance(cell, str):
        return cell or "-"
    return f"{cell[0]:.0f}" + (" (host)" if mixed and cell[1] == "host" else "")


def _flops_section(doc: _Doc, records: list[Record], out_dir: Path, written: dict[str, Path]) -> None:
    doc.heading(2, "Compute against latency (the paper's appendix A)")
    costed = [r for r in _measured(records) if r.gmacs]
    if not costed:
        doc.para("No record carries a GMACs count; nothing to plot.")
        return
    doc.para("GMACs are multiply-accumulates per clip (1 MAC = 2 FLOPs; the papers' 'FLOPs' are MACs), counted at "
             "the measured input shape. Spearman's rank correlation says how well compute orders the models by "
             "latency (1 = perfectly).")
    for mode in sorted({r.mode for r in costed}, key=lambda m: Series(m, "", "").sort_key()):
        png = written[f"flops-{mode}.png"] = plot_flops(mode, records, out_dir / f"flops-{mode}.png")
        doc.image(png, f"GMACs against latency, {mode}")
    rows = []
    for (device, series), rs in sorted(_by_key(costed, lambda r: (device_of(r), series_of(r))).items(),
                                       key=lambda kv: (kv[0][1].sort_key(), kv[0][0].sort_key())):
        models = _by_key(rs, lambda r: r.model)
        rho = _spearman([models[m][0].gmacs for m in models], [mean(r.mean_ms for r in models[m]) for m in models])
        rows.append([series.title, device.label, len(models), "-" if rho is None or len(models) < 3 else f"{rho:.2f}"])
    doc.table(["series", "device", "models", "Spearman (GMACs, latency)"], rows)
    costs = sorted({(r.model, tuple(r.input_shape[1:]), r.params, r.gmacs, r.gflops) for r in costed},
                   key=lambda c: (_model_key(c[0]), c[1]))
    doc.table(["model", "category", "input (C, T, H, W)", "params (M)", "GMACs per clip", "GFLOPs per clip"],
              [[m, _category(m), "x".join(map(str, shape)), "-" if p is None else f"{p / 1e6:.1f}", macs, flops]
               for m, shape, p, macs, flops in costs])


def _failure_section(doc: _Doc, records: list[Record]) -> None:
    failed = sorted((r for r in records if r.status != "ok"),
                    key=lambda r: (device_of(r).sort_key(), series_of(r).sort_key(), _model_key(r.model)))
    cut = sorted((r for r in records if r.status == "ok" and r.message),
                 key=lambda r: (device_of(r).sort_key(), series_of(r).sort_key(), _model_key(r.model)))
    doc.heading(2, "Cases that did not run")
    if failed:
        doc.table(["device", "mode", "runtime", "model", "status", "message"],
                  [[device_of(r).label, r.mode, r.runtime, r.model, r.status, r.message] for r in failed])
    else:
        doc.para("None: every case measured.")
    if cut:
        doc.heading(3, "Measured, with a note")
        doc.table(["device", "mode", "runtime", "model", "timed runs", "note"],
                  [[device_of(r).label, r.mode, r.runtime, r.model, f"{r.iters_timed} of {r.iters}", r.message]
                   for r in cut])


def _grid_section(doc: _Doc, path: Path, cells: list[dict]) -> None:
    doc.heading(2, "Build grid")
    doc.para(f"From {Path(path).name}: one cell per model and target (ok, failed or unavailable on that machine).")
    targets = list(dict.fromkeys(c["target"] for c in cells))
    status = {(c["model"], c["target"]): c["status"] for c in cells}
    models = sorted({c["model"] for c in cells}, key=_model_key)
    doc.table(["model", *targets], [[m, *(status.get((m, t), "-") for t in targets)] for m in models])
    reasons = _by_key((c for c in cells if c["status"] != "ok"),
                      lambda c: (c["target"], c["status"], c.get("reason") or ""))
    if reasons:
        doc.table(["target", "status", "reason", "models"],
                  [[t, s, r, ", ".join(sorted((c["model"] for c in cs), key=_model_key))]
                   for (t, s, r), cs in sorted(reasons.items())])


def _parity_section(doc: _Doc, paths: list[Path], items: list[dict]) -> None:
    doc.heading(2, "Parity with PyTorch fp32")
    doc.para("From " + ", ".join(Path(p).name for p in paths) + ": each runtime's artifact against PyTorch eager fp32 "
             "on the same clips; the number is the largest absolute difference of the logits.")
    several = len({i.get("precision") for i in items}) > 1
    column = (lambda i: f"{i['runtime']} ({i.get('precision')})") if several else (lambda i: i["runtime"])
    columns = sorted({column(i) for i in items})
    cells = {}
    for item in items:  # a later file wins for the same model, runtime and precision
        max_abs = (item.get("agreement") or {}).get("max_abs")
        cells[(item["model"], column(item))] = item["status"] + ("" if max_abs is None else f" {max_abs:.1e}")
    models = sorted({i["model"] for i in items}, key=_model_key)
    doc.table(["model", *columns], [[m, *(cells.get((m, c), "-") for c in columns)] for m in models])
    issues = _by_key((i for i in items if i["status"] != "pass"),
                     lambda i: (column(i), i["status"], i.get("message") or ""))
    if issues:
        doc.table(["runtime", "status", "message", "models"],
                  [[c, s, msg, ", ".join(sorted({i["model"] for i in its}, key=_model_key))]
                   for (c, s, msg), its in sorted(issues.items())])


def _environment_section(doc: _Doc, by_file: dict[Path, list[Record]]) -> None:
    doc.heading(2, "Sources and environments")
    doc.table(["results file", "records", "ok"],
              [[p.name, len(rs), sum(1 for r in rs if r.status == "ok")] for p, rs in by_file.items()])
    records = [r for rs in by_file.values() for r in rs]
    envs = _by_key(records, lambda r: json.dumps({k: v for k, v in (r.env or {}).items()}, sort_keys=True))
    keys = sorted(envs, key=lambda k: (json.loads(k).get("host") or "", k))
    columns = [json.loads(k) for k in keys]
    fields = [("host", lambda e: e.get("host")), ("os", lambda e: e.get("os")), ("python", lambda e: e.get("python")),
              ("CPU", lambda e: (e.get("cpu") or {}).get("model")),
              ("GPUs", lambda e: ", ".join(g.get("name", "?") for g in e.get("gpus") or []) or "none"),
              ("GPU driver, CUDA", lambda e: ", ".join(sorted({f"{g.get('driver')}, {g.get('cuda')}"
                                                            for g in e.get("gpus") or []})) or "-"),
              ("torch threads", lambda e: e.get("torch_threads")), ("vcompile", lambda e: e.get("vcompile")),
              ("vcompile commit", lambda e: e.get("git_commit") or "unknown"),
              ("devices", None)]
    packages = sorted({p for e in columns for p in (e.get("packages") or {})})
    rows = []
    for name, get in fields:
        if get is None:
            rows.append([name, *("; ".join(sorted({device_of(r).label for r in envs[k]})) for k in keys)])
        else:
            rows.append([name, *(get(e) or "-" for e in columns)])
    rows += [[p, *((e.get("packages") or {}).get(p) or "-" for e in columns)] for p in packages]
    doc.table(["", *(f"environment {i + 1}" for i in range(len(keys)))], rows)


# ---------------------------------------------------------------------------------------------------- files

def _write_csv(path: Path, headers: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([["" if c is None else c for c in row] for row in rows])
    return path


def _latency_csv(path: Path, rows: list[LatencyRow], averages: list[AverageRow]) -> Path:
    head = ["mode", "runtime", "setting", "tiny", "device", "model", "category", "batch", "precision", "mean_ms",
            "median_ms", "relative_latency", "devices", "records"]
    out = [[r.series.mode, r.series.runtime, r.series.setting, r.series.tiny, r.device.label, r.model,
            _category(r.model), r.batch, r.precision, round(r.mean_ms, 4), round(r.median_ms, 4),
            round(r.relative, 4), 1, r.records] for r in rows]
    out += [[a.series.mode, a.series.runtime, a.series.setting, a.series.tiny, "mean over devices", a.model,
             _category(a.model), "", "", "", "", round(a.relative, 4), len(a.devices), ""] for a in averages]
    return _write_csv(path, head, out)


def _memory_csv(path: Path, records: list[Record]) -> Path:
    ok = sorted((r for r in records if r.status == "ok"),
                key=lambda r: (series_of(r).sort_key(), device_of(r).sort_key(), _model_key(r.model)))
    return _write_csv(path, ["mode", "runtime", "setting", "tiny", "device", "model", "category", "batch", "precision",
                             "peak_device_mb", "peak_device_reserved_mb", "peak_host_mb"],
                      [[r.mode, r.runtime, series_of(r).setting, bool(r.tiny), device_of(r).label, r.model,
                        _category(r.model), r.batch, r.precision, r.peak_device_mb, r.peak_device_reserved_mb,
                        r.peak_host_mb] for r in ok])


def write_report(result_files: list[Path], out_dir: Path, build_grid: Path | None = None,
                 parity: list[Path] = ()) -> dict[str, Path]:
    """Write report.md, report.html (self-contained), latency.csv, memory.csv and the PNG plots into ``out_dir``.

    Args:
        result_files: ``.jsonl`` files of `vcompile bench`, one or several machines.
        out_dir: folder for the report (created; files of the same names are replaced).
        build_grid: a ``build-grid.json`` of `vcompile build`, shown as a grid when given.
        parity: files of `vcompile parity --json`, shown as a grid when given.

    Returns:
        Written file name -> path.

    Raises:
        VcompileError: no file given, a file unreadable or not vcompile's, or no ``ok`` record at all.
    """
    by_file = _load_records([Path(p) for p in result_files])
    records = [r for rs in by_file.values() for r in rs]
    cells = _read_items(Path(build_grid), "build grid", "cells", ("model", "target", "status")) if build_grid else []
    checks = [i for p in parity
              for i in _read_items(Path(p), "parity --json file", "rows", ("model", "runtime", "status"))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = relative_latencies(records)
    averages = average_over_devices(rows)
    written: dict[str, Path] = {}
    doc = _Doc()
    doc.heading(1, "vcompile report")
    devices = sorted({device_of(r) for r in records}, key=Device.sort_key)
    doc.para(f"{len(records)} records from {len(by_file)} results file(s), {len(devices)} device(s): "
             + "; ".join(d.label for d in devices) + ". Latency is the mean over the timed runs (10 warm-up and "
             "100 timed runs unless a time budget stopped a case earlier, see the notes below).")
    if any(r.tiny for r in records):
        doc.para("Series marked 'tiny variants' measured the test-size models (4 frames, 64 px, 10 classes): a "
                 "smoke test of the pipeline, not the paper's models; their figures say nothing about the paper's.")
    _latency_sections(doc, rows, averages, out_dir, written)
    _summary_section(doc, summary_points(averages, records), records, out_dir, written)
    _memory_section(doc, records)
    _flops_section(doc, records, out_dir, written)
    _failure_section(doc, records)
    if build_grid is not None:
        _grid_section(doc, Path(build_grid), cells)
    if parity:
        _parity_section(doc, [Path(p) for p in parity], checks)
    _environment_section(doc, by_file)
    written["latency.csv"] = _latency_csv(out_dir / "latency.csv", rows, averages)
    written["memory.csv"] = _memory_csv(out_dir / "memory.csv", records)
    (out_dir / "report.md").write_text(doc.markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(doc.html(), encoding="utf-8")
    written["report.md"], written["report.html"] = out_dir / "report.md", out_dir / "report.html"
    return dict(sorted(written.items()))
