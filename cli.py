"""The `vcompile` command line. It parses, calls into the package and prints; it holds no logic of its own.

Errors the user can act on print one line on stderr and exit non-zero; a traceback is shown only with
VCOMPILE_DEBUG=1.

Each command imports the layers it calls (`zoo`, `compile`, `runtimes`, `bench`) when it runs, not when this
module loads: they import torch (about 2 s), and `vcompile --help` or a mistyped option should answer at once.
Everything else is imported here.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .errors import VcompileError

_MAX_SEED = 2**63 - 1  # vcompile.data.MAX_SEED, spelled here so that parsing options does not import torch
DEFAULT_ROUNDS = 5  # `vcompile bench --rounds` when two or more cases share a device and mode

FORMATS = click.Choice(["table", "json", "csv"], case_sensitive=False)


def _console():
    # Wide when piped, so tables stay one line per row in logs and CI output.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _table(title: str, columns: list[str], rows: list[list[object]]):
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col[:1].isupper() and col.endswith(")") else "left")
    for row in rows:
        table.add_row(*("-" if v is None else v if isinstance(v, Text) else escape(str(v)) for v in row))
    return table


def _emit(fmt: str, records: list[dict], title: str, columns: dict[str, str]) -> None:
    """Print records as a rich table, JSON or CSV; ``columns`` maps record keys to table headers."""
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(records[0]) if records else list(columns))
        writer.writeheader()
        for rec in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else v for k, v in rec.items()})
        click.echo(buf.getvalue(), nl=False)
    else:
        rows = [[rec[k] for k in columns] for rec in records]
        _console().print(_table(title, list(columns.values()), rows))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vcompile")
def cli() -> None:
    """Compile, check and benchmark lightweight video action-recognition models.

    vcompile reproduces the method of "Evaluating Transformers for Lightweight Action Recognition"
    (Koot et al. 2022) on your hardware: its 13 models, compiled to every runtime you deploy on,
    checked against PyTorch and timed with the paper's protocol.
    """


@cli.command()
@click.argument("pattern", default="*")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True, help="Output format.")
@click.option("--frames", type=int, default=None, help="Clip length for the FLOP count [default: 16].")
@click.option("--size", type=int, default=None, help="Frame size for the FLOP count [default: 224].")
def models(pattern: str, fmt: str, frames: int | None, size: int | None) -> None:
    """List the zoo: one row per model, with parameters and compute.

    PATTERN is a shell-style filter on model names, e.g. 'movinet*'. Parameters are counted at 400 classes;
    GFLOPs (2 per multiply-accumulate) and GMACs (the unit the papers call "GFLOPs") at 1x3x16x224x224,
    counted on meta tensors by torch.utils.flop_counter, so nothing is computed.
    """
    from .zoo import get_spec, list_models
    from .zoo.flops import model_cost

    names = list_models(pattern)
    if not names:
        raise VcompileError(f"no model matches {pattern!r}; run `vcompile models` to list them")
    records = []
    for name in names:
        spec = get_spec(name)
        cost = model_cost(name, frames=frames, size=size)
        records.append({
            "name": name,
            "paper_name": spec.paper_name,
            "category": spec.category,
            "params": cost.params,
            "params_m": round(cost.params / 1e6, 2),
            "paper_params_m": spec.paper_params_m,
            "gflops": round(cost.flops / 1e9, 2),
            "gmacs": round(cost.macs / 1e9, 2),
            "input_shape": list(cost.input_shape),
            "version": spec.version,
            "aliases": list(spec.aliases),
        })
    _emit(fmt, records, "vcompile zoo (params at 400 classes; compute per clip)", {
        "name": "model", "paper_name": "paper name", "category": "category", "params_m": "Params (M)",
        "paper_params_m": "Paper (M)", "gmacs": "GMACs", "gflops": "GFLOPs", "input_shape": "input",
    })


@cli.command()
@click.argument("model")
@click.option("--weights", type=str, default=None, help="Local .safetensors or torch state-dict file to check.")
@click.option("--tiny", is_flag=True, help="The family's tiny test variant (4 frames, 64 px, 10 classes).")
@click.option("--num-classes", type=int, default=None, help="Classifier width [default: 400, tiny 10].")
@click.option("--frames", type=int, default=None, help="Clip length [default: 16, tiny 4].")
@click.option("--size", type=int, default=None, help="Frame size [default: 224, tiny 64].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(model: str, weights: str | None, tiny: bool, num_classes: int | None, frames: int | None,
         size: int | None, fmt: str) -> None:
    """Describe one model: its paper facts, input contract, parameters and compute.

    With --weights, also check that the file loads into the model (every key present, every shape right).
    """
    from .zoo import build_model, get_spec, load_weights
    from .zoo.flops import model_cost

    spec = get_spec(model)
    cost = model_cost(spec.name, tiny=tiny, frames=frames, size=size, num_classes=num_classes)
    info = {**asdict(spec), "tiny": tiny, "params": cost.params, "gflops": round(cost.flops / 1e9, 3),
            "gmacs": round(cost.macs / 1e9, 3), "input_shape": list(cost.input_shape)}
    if weights:
        net = build_model(spec.name, tiny=tiny, frames=frames, size=size, num_classes=num_classes)
        load_weights(net, weights)
        info["weights"] = f"{weights}: loads ({len(net.state_dict())} tensors)"
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    console = _console()
    for key, value in info.items():
        console.print(f"[bold]{key:>15}[/bold]  {value}")


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@cli.command()
@click.option("--model", "-m", "models", required=True, metavar="NAME[,NAME...]|all", help="Zoo models to build.")
@click.option("--target", "-t", "targets", required=True, metavar="TARGET[,...]|all",
              help="onnx, openvino (ov), tensorrt (trt), coreml, executorch (et), ptl; or all.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
              help="Artifact precision [default: fp16 for coreml, fp32 elsewhere]; a target that cannot build it "
                   "says which it builds.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size built for.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Clip length [default: 16, tiny 4].")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Frame size [default: 224, tiny 64].")
@click.option("--seed", type=click.IntRange(0, _MAX_SEED), default=0, show_default=True,
              help="Seed of the random weights and inputs.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Local weights file to build.")
@click.option("--calibration", metavar="DIR", default=None,
              help="With --precision int8: calibrate on one clip from each video in DIR (subfolders included, at "
                   "most 32, each at least as long as the clip) instead of seeded clips. The accuracy gate still "
                   "judges on held-apart clips.")
@click.option("--tiny", is_flag=True, help="Build the tiny test variants (4 frames, 64 px, 10 classes).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True,
              help="How the ONNX target captures the graph.")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Largest batch a TensorRT engine's profile accepts [default: max(batch, 32)].")
@click.option("--out", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Output folder; artifacts go to OUT/builds/MODEL/TARGET/KEY/.")
@click.option("--force", is_flag=True, help="Rebuild even when a valid cached artifact exists.")
@click.option("--explain", is_flag=True,
              help="List the ops the target will not accelerate (executorch: outside XNNPACK; coreml: placed on the "
                   "CPU, macOS only), with their PyTorch module and share of the model's FLOPs or cost.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def build(models: str, targets: str, precision: str | None, batch: int, frames: int | None, size: int | None,
          seed: int, weights: str | None, calibration: str | None, tiny: bool, exporter: str, max_batch: int | None,
          out: str, force: bool, explain: bool, fmt: str) -> None:
    """Compile models to deployable artifacts, through a content-addressed cache.

    Prints one line per artifact: path, size, build time, and whether it came from the cache. A rebuild with the
    same inputs is a cache hit; a corrupted or truncated artifact is found by its hash and rebuilt. With several
    models or targets, failures are recorded and the rest still build; the model x target grid is printed at the
    end and written to OUT/build-grid.json. Exit status is non-zero if any build failed.

    \b
    Examples:
      vcompile build --model mvit-s --target coreml
      vcompile build --model all --target onnx,executorch --tiny
      vcompile build --model swin-t --target executorch --explain
      vcompile build --model x3d-xs --target onnx,ov,et --precision int8 --calibration clips/
    """
    from .bench.builds import build_grid, single_cell, write_grid
    from .bench.selection import resolve_models, resolve_targets
    from .compile import BuildOptions

    names, target_names = resolve_models(models), resolve_targets(targets)
    options = BuildOptions(batch=batch, frames=frames, size=size, seed=seed, weights=weights, tiny=tiny,
                           exporter=exporter, max_batch=max_batch, calibration=calibration)
    console = _console() if fmt == "table" else None
    single = len(names) == 1 and len(target_names) == 1
    explanations: dict[tuple[str, str], dict] = {}

    def on_explain(model: str, target: str, explanation: dict) -> None:
        explanations[model, target] = explanation
        if console:
            console.print(_explanation_table(model, target, explanation))

    explain_hook = on_explain if explain else None
    with _status(console, "building") as update:
        if single:  # one build: its error is the command's error, in one line
            cells = [single_cell(names[0], target_names[0], options, out=Path(out), force=force, precision=precision,
                                 log=lambda stage: update(f"{names[0]} -> {target_names[0]}: {stage}"),
                                 explain=explain_hook)]
        else:
            cells = []
            for cell in build_grid(names, target_names, options, out=Path(out), force=force, precision=precision,
                                   log=lambda m, t, stage: update(f"{m} -> {t}: {stage}"), explain=explain_hook):
                cells.append(cell)
                if console:
                    console.print(_cell_line(cell))
            write_grid(cells, options, Path(out))
    if console is None:
        rows = [asdict(c) | ({"explain": explanations.get((c.model, c.target))} if explain else {}) for c in cells]
        click.echo(json.dumps(rows, indent=2))
    elif single:
        console.print(_cell_line(cells[0]))
    else:
        status = {(c.model, c.target): c.status if c.status != "failed" else f"failed: {_short(c.reason)}"
                  for c in cells}
        rows = [[m, *(status[m, t] for t in target_names)] for m in names]
        console.print(_table("build grid", ["model", *target_names], rows))
        console.print(f"grid written to {Path(out) / 'build-grid.json'}")
    if any(c.status == "failed" for c in cells):
        sys.exit(1)


def _explanation_table(model: str, target: str, explanation: dict):
    """What a target leaves outside its accelerator, as a table (``vcompile build --explain``)."""
    share = explanation.get("accelerated_share")
    headline = (f"{model} -> {target}: {share:.1%} of the model in {explanation['accelerator']}"
                if share is not None else f"{model} -> {target}: placement not known here")
    if explanation.get("int8_weights"):  # how many weighted ops of each kind read int8 weights
        headline += "; int8 weights: " + ", ".join(
            f"{kind} {n['int8_weights']}/{n['ops']}" for kind, n in explanation["int8_weights"].items())
    rows = [[r["module"], r["op"], str(r["count"]),
             f"{r['gflops']:.3f}" if "gflops" in r else "",
             f"{r.get('flops_share', r.get('cost_share', 0.0)):.2%}"] for r in explanation["not_accelerated"]]
    if explanation.get("rows_omitted"):
        rows.append([f"... and {explanation['rows_omitted']} smaller rows", "", "", "", ""])
    if not rows:
        return f"{headline}; nothing runs outside it" if share is not None else f"{headline}: {explanation['note']}"
    cost = "FLOP share" if any("gflops" in r for r in explanation["not_accelerated"]) else "cost share"
    return _table(f"{headline} ({explanation['note']})", ["module", "op", "count", "GFLOPs", cost], rows)


def _short(reason: str, limit: int = 60) -> str:
    reason = reason.split(": ", 2)[-1] if reason.count(": ") >= 2 else reason
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _cell_line(cell) -> str:
    if cell.status == "ok":
        source = "cached" if cell.cached else "built"
        return (f"[green]ok[/green]  {cell.model:<12} {cell.target:<11} {_human_bytes(cell.bytes):>9}  "
                f"{cell.seconds:7.2f} s  {source:<6}  {escape(cell.path)}")
    colour = "red" if cell.status == "failed" else "yellow"
    return f"[{colour}]{cell.status}[/{colour}]  {cell.model:<12} {cell.target:<11} {escape(cell.reason)}"


def _status(console, message: str):
    """A spinner showing the current build stage; yields a function that updates its text."""
    @contextlib.contextmanager
    def spinner():
        if console is None or not console.is_terminal:
            yield lambda text: None
            return
        with console.status(message) as status:
            yield lambda text: status.update(f"{message}: {text}")

    return spinner()


@cli.command()
@click.option("--model", "-m", "models", required=True, metavar="NAME[,NAME...]|all", help="Zoo models to check.")
@click.option("--runtimes", "-r", default="all", show_default=True, metavar="LIST|all",
              help="Runtimes compared with PyTorch eager fp32: onnxruntime, executorch, ptl, coreml, tensorrt, "
                   "torch (AMP when --precision is fp16/bf16).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option("--samples", type=click.IntRange(min=0), default=2, show_default=True, help="Seeded random clips.")
@click.option("--seed", type=click.IntRange(0, _MAX_SEED), default=0, show_default=True,
              help="Seed of the weights and the clips.")
@click.option("--video", "videos", multiple=True, type=click.Path(dir_okay=False),
              help="A video file to decode as one more input (16 evenly spaced frames); repeatable.")
@click.option("--atol", type=float, default=None,
              help="Absolute tolerance [default by precision: fp32 1e-4 per unit of logit scale, i.e. times the "
                   "logits' RMS where that exceeds 1]; a value given here is absolute.")
@click.option("--rtol", type=float, default=None, help="Relative tolerance [default by precision: fp32 1e-3].")
@click.option("--tiny", is_flag=True, help="Check the tiny test variants (4 frames, 64 px, 10 classes).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Local weights file.")
@click.option("--out", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Artifact cache folder.")
@click.option("--localize", is_flag=True,
              help="For a failing onnxruntime row, name the first PyTorch module whose output diverges (other "
                   "runtimes report final outputs only).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write rows as JSON.")
def parity(models: str, runtimes: str, precision: str, samples: int, seed: int, videos: tuple[str, ...],
           atol: float | None, rtol: float | None, tiny: bool, weights: str | None, out: str, localize: bool,
           json_path: str | None) -> None:
    """Prove that every artifact computes what the PyTorch model computes.

    Builds what it needs through the cache, feeds identical clips to every runtime and to PyTorch eager fp32, and
    prints per model: max abs and rel error, worst cosine similarity, top-1 agreement, top-5 overlap and pass or
    fail. fp32 passes at atol 1e-4 / rtol 1e-3 with cosine >= 0.9999; fp16 and bf16 at cosine >= 0.999 with top-1
    agreement. A top-1 disagreement where the reference's top-2 margin is within tolerance is a tie, not a
    failure. Exit status is 0 only if every row passes.
    """
    from .bench.selection import resolve_models, select_runtimes
    from .check.metrics import tolerance_for
    from .check.parity import PARITY_RUNTIMES, check_rows_file, run_parity, write_rows_file
    from .compile import BuildOptions

    names = resolve_models(models)
    tol = tolerance_for(precision, atol, rtol)
    if json_path:
        check_rows_file(Path(json_path))
    console = _console()
    selection = select_runtimes(runtimes, PARITY_RUNTIMES)
    for runtime, reason in selection.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {runtime}: {escape(reason)}")
    options = BuildOptions(seed=seed, weights=weights, tiny=tiny)
    all_rows = []
    for name in names:
        with _status(console, f"parity {name}") as update:
            result = run_parity(name, selection.runtimes, precision=precision, samples=samples, seed=seed,
                                videos=videos, tol=tol, options=options, out=Path(out), localize=localize,
                                log=update)
        for note in result.notes:
            console.print(f"[yellow]note[/yellow]: {note}")
        rows = result.rows
        all_rows.extend(rows)
        table_rows = []
        for row in rows:
            a = row.agreement
            verdict = Text.from_markup({"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]",
                                        "error": "[red]error[/red]",
                                        "unavailable": "[yellow]unavailable[/yellow]"}[row.status])
            metrics = ([f"{a.max_abs:.2e}", f"{a.max_rel:.2e}", f"{a.cosine:.6f}", f"{a.top1:.2f}"
                        + (f" ({a.ties} ties)" if a.ties else ""), f"{a.top5:.2f}"] if a else ["-"] * 5)
            table_rows.append([row.runtime, *metrics, verdict, row.message])
        table = _table(f"{name} ({precision}, {result.clips} clips, atol {tol.atol:g}, rtol {tol.rtol:g}, "
                       f"cosine >= {tol.min_cosine})",
                       ["runtime", "max abs", "max rel", "cosine", "top-1", "top-5", "result", "detail"], table_rows)
        console.print(table)
        for row in rows:
            for note in row.notes:
                console.print(f"  {row.runtime}: {escape(note)}")
    if json_path:
        write_rows_file(Path(json_path), all_rows)
    if not all_rows or any(r.status != "pass" for r in all_rows):
        sys.exit(1)


@cli.command()
@click.option("--model", "-m", "models", default="all", show_default=True, metavar="NAME[,NAME...]|all")
@click.option("--runtime", "-r", "runtimes", default="all", show_default=True, metavar="LIST|all",
              help="torch, inductor, onnxruntime (ort), openvino (ov), tensorrt (trt), executorch (et), ptl, coreml; "
                   "'all' means every runtime that can run here.")
@click.option("--mode", "modes", default="all", show_default=True, metavar="train,batch,single,mobile|all",
              help="train: batch 8, AMP, full optimiser step; batch: 32, AMP; single: 1, AMP; mobile: 1, fp32 on the "
                   "mobile runtimes (executorch, ptl here; coreml on macOS).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--precision", type=click.Choice(["amp", "fp32", "fp16", "bf16", "int8"]), default=None,
              help="Override the mode's precision. amp (the paper's mixed precision) runs fp16 on CUDA, bf16 on a "
                   "CPU with native bf16 and fp32 on other CPUs; a runtime that cannot run a precision asked for "
                   "by name refuses, and bf16 is never emulated. Every record says which precision ran and why.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Override the mode's batch size.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs first.")
@click.option("--iters", type=click.IntRange(min=1), default=100, show_default=True, help="Timed runs.")
@click.option("--budget-s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget per case for warm-up plus timing; fewer runs are timed when it runs out, and "
                   "the record says so.")
@click.option("--timeout-s", type=click.FloatRange(min=1), default=1800, show_default=True,
              help="Kill a case (building included) after this long and record it as a timeout.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for every runtime [default: all usable cores].")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Time each case in this many fresh processes and merge them into one record (each process's "
                   "mean is kept): on machines where latency varies between processes, as on small VMs.")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Measure the cases of each comparison (one device and mode) side by side: each keeps a process, "
                   "and they take turns for this many rounds, in an order shuffled per round (seeded by --seed, "
                   "recorded), --iters split over the rounds (rounded up). 1: one case after the other. [default: "
                   "5 when two or more cases share a device and mode, else 1]")
@click.option("--frames", "frames_list", default=None, metavar="N[,N...]",
              help="Clip lengths to sweep [default: the model's, 16; tiny 4]; with several (and/or several --size), "
                   "the report draws each model's cost curve against clip size.")
@click.option("--size", "size_list", default=None, metavar="PX[,PX...]",
              help="Frame sizes to sweep [default: the model's, 224; tiny 64].")
@click.option("--tiny", is_flag=True, help="Benchmark the tiny test variants (for smoke tests).")
@click.option("--seed", type=click.IntRange(0, _MAX_SEED), default=0, show_default=True,
              help="Seed of the weights, the inputs and the round orders.")
@click.option("--artifacts", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Artifact cache folder.")
@click.option("--out", type=click.Path(dir_okay=False), default="artifacts/results.jsonl", show_default=True,
              help="Results file (JSON lines, appended).")
@click.option("--resume", is_flag=True, help="Skip cases already measured in --out with the same settings.")
@click.option("--resume-failed", type=click.Choice(["yes", "no"]), default="yes", show_default=True,
              help="With --resume, run again the cases whose last record is not ok (crashed, timeout, oom, error).")
def bench(models: str, runtimes: str, modes: str, device: str, precision: str | None, batch: int | None,
          warmup: int, iters: int, budget_s: float | None, timeout_s: float, threads: int | None, processes: int,
          rounds: int | None, frames_list: str | None, size_list: str | None, tiny: bool, seed: int, artifacts: str,
          out: str, resume: bool, resume_failed: str) -> None:
    """Measure latency and peak memory with the paper's protocol.

    Each case (model x runtime x mode) runs in its own process with a timeout, so a crash, a hang or an
    out-of-memory is recorded (status crashed, timeout, oom) and the sweep goes on. Records are appended to
    --out and flushed one by one, only ever to a vcompile results file; --resume skips what is already measured
    (and runs again what failed). Defaults follow the paper: 10 warm-up
    and 100 timed runs, mean reported with the median beside it. Cases compared with each other (one device
    and mode) are measured in alternating rounds (--rounds), so that a shared machine's drift falls on all alike.

    \b
    Examples:
      vcompile bench --model x3d-xs,movinet-a0 --mode single,mobile --iters 20
      vcompile bench --device cuda --mode train,batch,single --out results-h100.jsonl --resume
    """
    from .bench.case import CaseSpec
    from .bench.environment import usable_cores
    from .bench.selection import bench_runtimes, resolve_device, resolve_models, resolve_modes
    from .bench.sweep import plan_cases, run_sweep

    console = _console()
    names = resolve_models(models)
    mode_list = resolve_modes(modes)
    device = resolve_device(device)
    selection = bench_runtimes(runtimes, mode_list)
    for name, reason in selection.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {escape(reason)}")
    runtime_list = selection.runtimes
    base = CaseSpec(model="", runtime="", mode="", device=device, precision=precision, batch=batch,
                    threads=threads or usable_cores(), warmup=warmup, iters=iters, budget_s=budget_s,
                    seed=seed, tiny=tiny, out=artifacts, processes=processes)
    clips = _clips(names, _int_list(frames_list, "--frames"), _int_list(size_list, "--size"), tiny)
    cases = _runnable_precision(plan_cases(names, runtime_list, mode_list, base),
                                explicit=runtimes.strip().lower() != "all", console=console)
    cases = [replace(c, frames=frames, size=size) for c in cases for frames, size in clips]
    if not cases:
        raise VcompileError(f"no case to run: none of the runtimes {', '.join(runtime_list) or '(none)'} applies to "
                            f"the modes {', '.join(mode_list)}")
    if rounds is not None and rounds > 1 and processes > 1:
        raise VcompileError("--rounds and --processes are two ways to spread the timing; choose one (--rounds keeps "
                            "one process per case and alternates them, --processes times each case in fresh ones)")
    if rounds is None:
        kinds = [(c.device, c.mode) for c in cases]
        rounds = DEFAULT_ROUNDS if processes == 1 and len(kinds) > len(set(kinds)) else 1
    cases = [replace(c, rounds=rounds) for c in cases]
    out_path = Path(out)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[phase]}"))
    failures = 0
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        task = progress.add_task("bench", total=len(cases), phase="")

        def on_start(index: int, case: CaseSpec) -> None:
            progress.update(task, description=f"{case.model} {case.runtime} {case.mode}", phase="starting")

        def on_phase(phase: str, done: int, total: int) -> None:
            progress.update(task, phase=f"{phase} {done}/{total}" if total else phase)

        def on_turn(round_index: int, case: CaseSpec) -> None:
            progress.update(task, description=f"round {round_index + 1}/{case.rounds}: {case.model} {case.runtime} "
                                              f"{case.mode}", phase="")

        def on_record(record) -> None:
            nonlocal failures
            progress.advance(task)
            failures += record.status != "ok"
            console.print(_record_line(record))

        records, skipped = run_sweep(cases, out_path, resume=resume, resume_failed=resume_failed == "yes",
                                     timeout_s=timeout_s, on_start=on_start, on_phase=on_phase, on_record=on_record,
                                     on_turn=on_turn)
    if skipped:
        console.print(f"resumed: {skipped} case(s) already in {out_path} were skipped")
    console.print(f"{len(records)} record(s) appended to {out_path}; {failures} not ok")
    if failures:
        sys.exit(1)


def _int_list(text: str | None, option: str) -> list[int | None]:
    """``8,16,32`` -> [8, 16, 32]; None -> [None] (the model's default)."""
    if text is None:
        return [None]
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise VcompileError(f"{option} {text!r} is not a list of whole numbers; give it as 8,16,32") from None
    if not values or min(values) < 1:
        raise VcompileError(f"{option} {text!r} needs one or more numbers of at least 1, as 8,16,32")
    return list(dict.fromkeys(values))


def _clips(models: list[str], frames: list[int | None], sizes: list[int | None],
           tiny: bool) -> list[tuple[int | None, int | None]]:
    """Every (frames, size) to measure, checked against every model's input contract before anything runs."""
    from .zoo import build_args

    clips = [(f, s) for f in frames for s in sizes]
    for model in models:
        for f, s in clips:
            build_args(model, tiny=tiny, frames=f, size=s)  # an impossible shape is one line, naming the model
    return clips


def _runnable_precision(cases: list, explicit: bool, console: Console) -> list:
    """The cases whose precision can run on their runtime and device. A runtime named by the user that cannot is
    an error (one line); from ``all``, it is left out with a note. bf16 on a CPU without it is always an error."""
    from .bench.case import case_precision
    from .runtimes.precision import PrecisionError

    kept, refused = [], {}
    for case in cases:
        try:
            case_precision(case)
            kept.append(case)
        except PrecisionError as err:
            if explicit:
                raise
            refused.setdefault((case.runtime, case.mode), err)
    if refused and not kept:
        raise next(iter(refused.values()))
    for (runtime, mode), err in refused.items():
        console.print(f"[yellow]skipped[/yellow] {runtime} ({mode}): {escape(str(err))}")
    return kept


def _record_line(record) -> str:
    head = f"{record.model:<12} {record.runtime:<11} {record.mode:<6} {record.precision:<4} b{record.batch:<3}"
    if record.status == "ok":
        note = f"  [yellow]{escape(record.message)}[/yellow]" if record.message else ""
        peak = f"{record.peak_device_mb:.0f} MB dev" if record.peak_device_mb else f"{record.peak_host_mb:.0f} MB host"
        return (f"[green]ok[/green]  {head} mean {record.mean_ms:9.2f} ms  median {record.median_ms:9.2f} ms  "
                f"cv {record.cv:.3f}  n={record.iters_timed}  {peak}{note}")
    return f"[red]{record.status}[/red]  {head} {escape(record.message)}"


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="artifacts/report", show_default=True,
              help="Folder for report.md, report.html, the CSV tables and the PNG plots.")
@click.option("--build-grid", type=click.Path(dir_okay=False), default=None,
              help="A build-grid.json written by `vcompile build` to include.")
@click.option("--parity", "parity_files", multiple=True, type=click.Path(dir_okay=False),
              help="A parity --json file to include; repeatable.")
def report(results: tuple[str, ...], out: str, build_grid: str | None, parity_files: tuple[str, ...]) -> None:
    """Turn results files into the paper's tables and figures.

    RESULTS are .jsonl files written by `vcompile bench`, from one machine or several. Latency is relative to
    the fastest model per device and mode (fastest = 1.0) and averaged over devices when several are merged; the
    memory table follows the layout of the paper's Table 2; GMACs against latency (appendix A); average relative
    latency against the paper's accuracy (the summary figure). Writes markdown, CSV and a self-contained HTML page.
    """
    from .report.documents import write_report

    written = write_report([Path(r) for r in results], Path(out), build_grid=Path(build_grid) if build_grid else None,
                           parity=[Path(p) for p in parity_files])
    for name, path in written.items():
        click.echo(f"{name:<16} {path}")


def _threshold(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise VcompileError(f"--threshold {text!r} is not a share; give it as 5% or 0.05") from None
    if not 0 <= value < 1:
        raise VcompileError(f"--threshold {text} is outside 0%-100%; give it as 5% or 0.05")
    return value


@cli.command()
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--threshold", default="5%", show_default=True,
              help="A case regresses when it is slower by more than this, with 95% confidence.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the output to this file.")
def compare(base: str, new: str, threshold: str, fmt: str, out: str | None) -> None:
    """Compare two results files case by case: a regression gate for CI.

    Cases match by what was measured (model, runtime, mode, device, precision that ran, batch, input shape),
    whatever the settings (threads, iterations). Each gets NEW's median latency over BASE's with a 95% bootstrap
    interval; a case whose whole interval lies above 1 + threshold is a regression. Exit status 1 when any case
    regressed, 0 otherwise.

    \b
    Examples:
      vcompile compare results-main.jsonl results-branch.jsonl
      vcompile compare base.jsonl new.jsonl --threshold 10% --format json --out compare.json
    """
    from .report.compare import compare_files, comparison_markdown

    share = _threshold(threshold)
    comparison = compare_files(Path(base), Path(new), share)
    if not comparison.changes:
        raise VcompileError(f"no case was measured ok in both {base} and {new}; nothing to compare")
    text = comparison.to_json() if fmt == "json" else comparison_markdown(comparison)
    if out:
        Path(out).write_text(text if text.endswith("\n") else text + "\n")
    click.echo(text)
    if comparison.regressions:
        sys.exit(1)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def doctor(fmt: str) -> None:
    """Report this machine: Python and package versions, CPU and GPU, and which runtimes can build and run here."""
    from .bench.environment import environment
    from .runtimes import RUNTIMES, probe_all

    env = environment()
    runtimes = probe_all()
    if fmt == "json":
        env["runtimes"] = {name: vars(a) for name, a in runtimes.items()}
        click.echo(json.dumps(env, indent=2))
        return
    console = _console()
    cpu = env["cpu"]
    console.print(f"[bold]vcompile[/bold] {env['vcompile']} (commit {env['git_commit'] or 'unknown'})")
    console.print(f"[bold]python[/bold]   {env['python']} on {env['os']}, host {env['host']}")
    console.print(f"[bold]cpu[/bold]      {cpu['model']} ({cpu['arch']}), {cpu['usable_cores']} usable of "
                  f"{cpu['logical_cores']} logical cores; torch uses {env['torch_threads']} threads")
    console.print(f"[bold]isa[/bold]      {', '.join(cpu.get('isa', [])) or 'none of those vcompile looks for'}; "
                  f"{_precision_line()}")
    gpus = env["gpus"]
    gpu_text = "; ".join(f"{g['name']} (sm {g['capability']}, {g['memory_mb']} MB, driver {g['driver']}, "
                         f"CUDA {g['cuda']})" for g in gpus) or "none visible to torch (CUDA not available)"
    console.print(f"[bold]gpu[/bold]      {gpu_text}")
    versions = [[name, version or "not installed"] for name, version in env["packages"].items()]
    console.print(_table("packages", ["package", "version"], versions))
    rows = [[name, RUNTIMES[name].description, a.version, "yes" if a.can_build else "no",
             "yes" if a.can_run else "no", a.detail] for name, a in runtimes.items()]
    console.print(_table("runtimes", ["runtime", "what", "version", "build", "run", "detail"], rows))


def _precision_line() -> str:
    """What amp means on this CPU, for doctor."""
    from .runtimes.precision import native_bf16

    has_bf16, why = native_bf16()
    return f"{why}: amp runs {'bf16' if has_bf16 else 'fp32'} on the CPU"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every error into one line and an exit status."""
    # torchao (imported by executorch and coremltools) registers an Enum with torch's pytree, which logs a
    # deprecation warning on every run; it is about torchao, not about anything the user can change.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        status = cli.main(args=argv, prog_name="vcompile", standalone_mode=False)
    except click.UsageError as err:
        where = f"; see `{err.ctx.command_path} --help`" if err.ctx else ""
        click.echo(f"error: {err.format_message().rstrip('.')}{where}", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except VcompileError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - last line of defence: a bug, reported in one line
        if os.environ.get("VCOMPILE_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        click.echo(f"internal error: {type(err).__name__}: {first} (a bug in vcompile; rerun with "
                   "VCOMPILE_DEBUG=1 for the traceback and report it)", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
