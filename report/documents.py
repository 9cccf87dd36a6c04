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
from pathlib import Path
from statistics import mean, median

from ..bench.records import Record, read_records
from ..errors import VcompileError
from .analysis import (
    PAPER_MODES,
    AverageRow,
    Device,
    LatencyRow,
    Series,
    SpeedupRow,
    SummaryPoint,
    average_over_devices,
    category_of,
    cost_curves,
    device_of,
    measured,
    memory_table,
    model_sort_key,
    paper_records,
    relative_latencies,
    runtime_speedups,
    series_of,
    spearman,
    summary_points,
)
from .paper import paper_accuracy
from .plots import plot_cost_curves, plot_flops, plot_relative, plot_speedups, plot_summary

__all__ = ["write_report"]




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


def _runs_phrase(records: list[Record]) -> str:
    """'1 warm-up and 10 timed runs per case', or the range when the files differ."""
    pairs = sorted({(r.warmup, r.iters) for r in records if r.status == "ok"})
    return " or ".join(f"{w} warm-up and {n} timed runs" for w, n in pairs) + " per case"


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


def _finite_latencies(record: Record) -> bool:
    values = [record.mean_ms, record.median_ms, *record.latencies_ms]
    return all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in values)


def _load_records(result_files: list[Path]) -> tuple[dict[Path, list[Record]], int]:
    """The records of each file, without ``ok`` records whose latencies are not finite numbers (NaN, infinity),
    which no average may take in; and how many of those were skipped."""
    if not result_files:
        raise VcompileError("no results files given; pass the .jsonl files written by `vcompile bench`")
    read = {path: read_records(path) for path in result_files}
    by_file = {path: [r for r in found if r.status != "ok" or _finite_latencies(r)] for path, found in read.items()}
    skipped = sum(len(read[p]) - len(by_file[p]) for p in read)
    records = [r for found in by_file.values() for r in found]
    if not measured(records):
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in records).items())) or "empty"
        names = ", ".join(str(p) for p in result_files)
        raise VcompileError(f"no 'ok' records in {names} ({statuses}); nothing to report: measure with "
                            "`vcompile bench`")
    return by_file, skipped


# ---------------------------------------------------------------------------------------------------- sections

def _latency_sections(doc: _Doc, rows: list[LatencyRow], averages: list[AverageRow], out_dir: Path,
                      written: dict[str, Path]) -> None:
    doc.heading(2, "Relative latency (the paper's figures 2-5)")
    doc.para("Per device, mode, runtime and the precision that ran, the fastest model's mean latency is 1.0 and every "
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
        cells = {(r.device, r.model): f"{_relative(r)} ({_ms(r.mean_ms)} ms)" for r in mine}
        doc.table(["model", "category", "relative latency", "devices"] + [d.label for d in devices],
                  [[a.model, category_of(a.model), f"{a.relative:.2f}", f"{len(a.devices)} of {len(devices)}"]
                   + [cells.get((d, a.model), "-") for d in devices] for a in averages if a.series == series])


def _relative(row: LatencyRow) -> str:
    """A relative latency with its interval where it has one; ``~`` marks one that cannot be told from 1."""
    if row.interval is None:
        return f"{row.relative:.2f}"
    text = f"{row.relative:.2f} [{row.interval.low:.2f}-{row.interval.high:.2f}]"
    return text if row.interval.resolved else f"~{text}"


def _speedup_cell(row: SpeedupRow) -> str:
    return f"{_ms(row.mean_ms)} ({row.interval.ratio_text() if row.interval else f'{row.speedup:.2f}x'})"


def _summary_section(doc: _Doc, points: list[SummaryPoint], records: list[Record], out_dir: Path,
                     written: dict[str, Path]) -> None:
    doc.heading(2, "Summary: speed against accuracy")
    doc.para("Relative latency of native PyTorch (runtime torch) at the protocol's precision, averaged over "
             "devices per mode and then over training, batch and single-instance inference; accuracy as "
             "reported by the paper (Table 4: SSV2 top-1, EK100 action top-1), min-max normalised per dataset "
             "over the models the paper trained and averaged over SSV2 and EK100. vcompile does not train models: "
             "the accuracies are the paper's, not measured here.")
    measured = {r.model for r in paper_records(records) if r.status == "ok"}
    missing = sorted(measured - {p.model for p in points}, key=model_sort_key)
    if not points:
        doc.para("No model has both a PyTorch train, batch or single latency and a paper accuracy; no summary.")
        return
    png = written["summary.png"] = plot_summary(points, out_dir / "summary.png")
    doc.image(png, "average relative latency against normalised accuracy")
    doc.table(["model", "category", "avg relative latency", "modes averaged", "normalised accuracy",
               "SSV2 top-1 %", "EK100 action %"],
              [[p.model, category_of(p.model), f"{p.relative:.2f}", ", ".join(p.modes), f"{p.accuracy:.2f}",
                paper_accuracy(p.model, "ssv2"), paper_accuracy(p.model, "ek100")] for p in points])
    if missing:
        doc.para("Left out (no accuracy in the paper): " + ", ".join(missing) + ".")


def _speedup_section(doc: _Doc, records: list[Record], out_dir: Path, written: dict[str, Path]) -> None:
    rows = runtime_speedups(records)
    if not rows:
        return
    doc.heading(2, "Runtimes against PyTorch eager (batch 1)")
    doc.para("Mean latency in ms of each runtime and mode, with its speedup over PyTorch eager in single-instance "
             "mode on the same machine at the same precision (eager's time over the runtime's: above 1x is "
             "faster) and its 95% interval: the median of per-round ratios when the two took turns "
             "(`vcompile bench --rounds`), else the ratio of medians; '(unresolved)' marks an interval that "
             "contains 1, a difference this run cannot rank. The last rows give each column's median speedup and "
             "how many models ran slower than eager.")
    for (machine, precision), group in _by_key(rows, lambda r: (r.machine, r.precision)).items():
        columns = sorted({r.column for r in group})
        cells = {(r.model, r.column): r for r in group}
        models = sorted({r.model for r in group}, key=model_sort_key)
        doc.heading(3, f"{machine}, {precision}")
        name = "speedup-" + re.sub(r"[^a-z0-9]+", "-", f"{machine} {precision}".lower()).strip("-") + ".png"
        written[name] = plot_speedups(group, f"{machine}, {precision}", out_dir / name)
        doc.image(written[name], f"speedup over PyTorch eager, {machine}, {precision}")
        table = [[m, category_of(m), _ms(next(r.eager_ms for r in group if r.model == m)),
                  *(_speedup_cell(c) if (c := cells.get((m, col))) else "-" for col in columns)]
                 for m in models]
        by_column = {col: [r.speedup for r in group if r.column == col] for col in columns}
        table.append(["median speedup", "", "", *(f"{median(by_column[col]):.2f}x" for col in columns)])
        table.append(["slower than eager", "", "",
                      *(f"{sum(v < 1 for v in by_column[col])} of {len(by_column[col])}" for col in columns)])
        unresolved = {col: sum(r.interval is not None and not r.interval.resolved for r in group if r.column == col)
                      for col in columns}
        if any(unresolved.values()):
            table.append(["not told from eager (interval contains 1)", "", "",
                          *(f"{unresolved[col]} of {len(by_column[col])}" for col in columns)])
        doc.table(["model", "category", "torch · single (ms)", *columns], table)


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
                  [[m, category_of(m), *(_memory_cell(cells.get(mode), len(kinds) > 1) for mode in PAPER_MODES)]
                   for m, cells in models.items()])


def _memory_cell(cell: tuple[float, str] | str | None, mixed: bool) -> str:
    if cell is None or isinstance(cell, str):
        return cell or "-"
    return f"{cell[0]:.0f}" + (" (host)" if mixed and cell[1] == "host" else "")


def _cost_section(doc: _Doc, records: list[Record], out_dir: Path, written: dict[str, Path]) -> None:
    curves = cost_curves(records)
    if not curves:
        return
    doc.heading(2, "Cost curves: latency and memory against clip size")
    doc.para("Models measured at several clip sizes (`vcompile bench --frames 8,16,32 --size ...`): mean latency and "
             "peak memory (the GPU's allocator on CUDA, the process's resident set on a CPU) against frames x "
             "pixels, on log-log axes, with the exponent of a least-squares power-law fit: 1 grows linearly with "
             "the clip, 2 quadratically (attention over all of a clip's tokens bends up as clips get longer).")
    for (device, series), group in _by_key(curves, lambda c: (c.device, c.series)).items():
        title = f"{device.label}, {series.title}"
        doc.heading(3, title)
        name = "cost-" + re.sub(r"[^a-z0-9]+", "-", f"{device.label} {series.slug}".lower()).strip("-") + ".png"
        written[name] = plot_cost_curves(group, title, out_dir / name)
        doc.image(written[name], f"cost curves, {title}")
        clips = sorted({(f, s) for c in group for f, s, _, _ in c.points}, key=lambda fs: fs[0] * fs[1] ** 2)
        cells = {(c.model, (f, s)): f"{ms:.4g}" for c in group for f, s, ms, _ in c.points}
        doc.table(["model", "category", "latency exponent", "memory exponent",
                   *(f"{f} x {s} px (ms)" for f, s in clips)],
                  [[c.model, category_of(c.model), f"{c.latency_exponent:.2f}",
                    f"{c.memory_exponent:.2f}" if c.memory_exponent is not None else "-",
                    *(cells.get((c.model, clip), "-") for clip in clips)] for c in group])


def _flops_section(doc: _Doc, records: list[Record], out_dir: Path, written: dict[str, Path]) -> None:
    doc.heading(2, "Compute against latency (the paper's appendix A)")
    costed = [r for r in measured(records) if r.gmacs]
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
        rho = spearman([models[m][0].gmacs for m in models], [mean(r.mean_ms for r in models[m]) for m in models])
        rows.append([series.title, device.label, len(models), "-" if rho is None or len(models) < 3 else f"{rho:.2f}"])
    doc.table(["series", "device", "models", "Spearman (GMACs, latency)"], rows)
    costs = sorted({(r.model, tuple(r.input_shape[1:]), r.params, r.gmacs, r.gflops) for r in costed},
                   key=lambda c: (model_sort_key(c[0]), c[1]))
    doc.table(["model", "category", "input (C, T, H, W)", "params (M)", "GMACs per clip", "GFLOPs per clip"],
              [[m, category_of(m), "x".join(map(str, shape)), "-" if p is None else f"{p / 1e6:.1f}", macs, flops]
               for m, shape, p, macs, flops in costs])


def _failure_section(doc: _Doc, records: list[Record]) -> None:
    failed = sorted((r for r in records if r.status != "ok"),
                    key=lambda r: (device_of(r).sort_key(), series_of(r).sort_key(), model_sort_key(r.model)))
    cut = sorted((r for r in records if r.status == "ok" and r.message),
                 key=lambda r: (device_of(r).sort_key(), series_of(r).sort_key(), model_sort_key(r.model)))
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
    models = sorted({c["model"] for c in cells}, key=model_sort_key)
    doc.table(["model", *targets], [[m, *(status.get((m, t), "-") for t in targets)] for m in models])
    reasons = _by_key((c for c in cells if c["status"] != "ok"),
                      lambda c: (c["target"], c["status"], c.get("reason") or ""))
    if reasons:
        doc.table(["target", "status", "reason", "models"],
                  [[t, s, r, ", ".join(sorted((c["model"] for c in cs), key=model_sort_key))]
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
    models = sorted({i["model"] for i in items}, key=model_sort_key)
    doc.table(["model", *columns], [[m, *(cells.get((m, c), "-") for c in columns)] for m in models])
    issues = _by_key((i for i in items if i["status"] != "pass"),
                     lambda i: (column(i), i["status"], i.get("message") or ""))
    if issues:
        doc.table(["runtime", "status", "message", "models"],
                  [[c, s, msg, ", ".join(sorted({i["model"] for i in its}, key=model_sort_key))]
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
            category_of(r.model), r.batch, r.precision, round(r.mean_ms, 4), round(r.median_ms, 4),
            round(r.relative, 4), 1, r.records] for r in rows]
    out += [[a.series.mode, a.series.runtime, a.series.setting, a.series.tiny, "mean over devices", a.model,
             category_of(a.model), "", "", "", "", round(a.relative, 4), len(a.devices), ""] for a in averages]
    return _write_csv(path, head, out)


def _memory_csv(path: Path, records: list[Record]) -> Path:
    ok = sorted((r for r in records if r.status == "ok"),
                key=lambda r: (series_of(r).sort_key(), device_of(r).sort_key(), model_sort_key(r.model)))
    return _write_csv(path, ["mode", "runtime", "setting", "tiny", "device", "model", "category", "batch", "precision",
                             "peak_device_mb", "peak_device_reserved_mb", "peak_host_mb"],
                      [[r.mode, r.runtime, series_of(r).setting, bool(r.tiny), device_of(r).label, r.model,
                        category_of(r.model), r.batch, r.precision, r.peak_device_mb, r.peak_device_reserved_mb,
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
    by_file, non_finite = _load_records([Path(p) for p in result_files])
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
             + "; ".join(d.label for d in devices) + ". Latency is the mean over the timed runs ("
             + _runs_phrase(records) + ", unless a time budget stopped a case earlier: see the notes below).")
    if non_finite:
        doc.para(f"{non_finite} 'ok' record(s) with latencies that are not finite numbers (NaN or infinity) were "
                 "skipped: no figure below includes them. Measure those cases again.")
    if any(r.tiny for r in records):
        doc.para("Series marked 'tiny variants' measured the test-size models (4 frames, 64 px, 10 classes): a "
                 "smoke test of the pipeline, not the paper's models; their figures say nothing about the paper's.")
    _latency_sections(doc, rows, averages, out_dir, written)
    _summary_section(doc, summary_points(averages, records), records, out_dir, written)
    _speedup_section(doc, records, out_dir, written)
    _memory_section(doc, records)
    _flops_section(doc, records, out_dir, written)
    _cost_section(doc, records, out_dir, written)
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
