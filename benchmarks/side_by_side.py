"""vcompile's CPU runtimes, at fp32 or any precision, side by side on one model at a time, in alternating rounds.

    python benchmarks/side_by_side.py --model all --rounds 6 --iters 1 --threads 2 --json artifacts/fp32-runtimes-1.json
    python benchmarks/side_by_side.py --model x3d-xs --runtime openvino,openvino:bf16,onnxruntime:int8,torch:bf16

A candidate is ``runtime`` (fp32) or ``runtime:precision``; eager fp32 (``torch``) is always the first and the
reference. A reduced-precision candidate is judged by its precision's gate (`vcompile.check.metrics.TOLERANCES`)
against eager fp32, on the timed clip and in its artifact's build-time gate on held-apart clips.

For each model, at the paper's shape (1 x 3 x 16 x 224 x 224, batch 1, single-instance inference), one process
(a fresh one per model, so a crash or a leak stays with its model) holds one vcompile runner of each runtime:
``torch`` (PyTorch eager fp32: the reference and the denominator of every speedup), ``inductor`` (``torch.compile``
with weight freezing, on its own copy of the model), and ``onnxruntime``, ``openvino`` and ``executorch`` on
vcompile's verified artifacts. Every runner gets the same thread count (``--threads``); the record keeps the
settings each one read back, so a speedup is never a thread-count artefact.

The first call of each runner is timed on its own (``first_run_ms``: where Inductor compiles) and one more call
warms it up; then each round runs every runner ``--iters`` times in an order shuffled per round (seeded). A
runner's figure for a round is its median over those runs; its speedup over eager is computed per round and
summarised by the median over rounds with a 95% bootstrap interval (numpy), so the slow drift of a shared
machine cancels out of the ratio. Each runner's logits on the timed clip are compared with eager's at the fp32
tolerance (`vcompile.check.metrics`), and each artifact's build-time parity verdict is kept: only a runner that
passes both counts as a correct fp32 deployment. Writes every sample to the JSON file; ``--summarize`` turns one or
more such files into the tables and the plot of docs/results/fp32-runtimes.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("torch", "inductor", "onnxruntime", "openvino", "executorch")  # the default candidates, all fp32
TARGETS = {"onnxruntime": "onnx", "openvino": "openvino", "executorch": "executorch"}


def _split(candidate: str) -> tuple[str, str]:
    """``openvino:bf16`` -> ("openvino", "bf16"); ``onnxruntime`` -> ("onnxruntime", "fp32")."""
    runtime, _, precision = candidate.partition(":")
    return runtime, precision or "fp32"


def _bootstrap(values: np.ndarray, seed: int) -> tuple[float, float]:
    """The 95% bootstrap interval of the median (`vcompile.bench.stats.median_interval`)."""
    from vcompile.bench.stats import median_interval

    interval = median_interval(values, seed)
    return interval.low, interval.high


def _runners(model_name: str, runtimes: list[str], threads: int, out: Path, tiny: bool) -> dict[str, dict]:
    """runtime -> {"runner": an activated Runner or None, "build_parity": ..., "error": ...}."""
    from vcompile.check.parity import build_verified
    from vcompile.compile import BuildOptions
    from vcompile.runtimes import load
    from vcompile.zoo import create_model

    found = {}
    for candidate in runtimes:
        runtime, precision = _split(candidate)
        entry = {"runner": None, "build_parity": None, "error": None}
        try:
            if runtime in TARGETS:
                artifact = build_verified(model_name, TARGETS[runtime],
                                          BuildOptions(batch=1, tiny=tiny, precision=precision), out=out)
                parity = artifact.manifest.get("parity", {})
                entry["build_parity"] = {k: parity.get(k) for k in ("status", "clips", "max_abs", "cosine", "top5",
                                                                     "scale", "smallest_atol", "reason")}
                entry["build_seconds"] = artifact.manifest.get("build_seconds")
                source = artifact
            else:  # eager and Inductor each run their own copy of the seeded model (freezing folds the weights)
                source = create_model(model_name, tiny=tiny)
            entry["runner"] = load(source, runtime, precision=None if runtime in TARGETS else precision,
                                   threads=threads).activate()
        except Exception as err:  # a runtime that cannot build or load this model is a finding, not a crash
            entry["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        found[candidate] = entry
    return found


def measure(model_name: str, runtimes: list[str], rounds: int, iters: int, threads: int, out: Path,
            seed: int, tiny: bool = False) -> dict:
    import torch

    from vcompile.check.metrics import TOLERANCES, compare_logits
    from vcompile.data import example_input
    from vcompile.zoo import build_args

    torch.set_num_threads(threads)
    args = build_args(model_name, tiny=tiny)
    clip = example_input((1, 3, args["frames"], args["size"], args["size"]), seed=1).numpy()
    entries = _runners(model_name, runtimes, threads, out, tiny)
    if entries["torch"]["runner"] is None:
        raise SystemExit(f"{model_name}: eager did not load: {entries['torch']['error']}")
    result = {"model": model_name, "threads": threads, "rounds": rounds, "iters": iters, "seed": seed,
              "candidates": {}}
    reference = None
    for runtime, entry in entries.items():
        record = {"build_parity": entry["build_parity"], "build_seconds": entry.get("build_seconds"),
                  "error": entry["error"]}
        result["candidates"][runtime] = record
        runner = entry["runner"]
        if runner is None:
            continue
        try:
            start = time.perf_counter()
            got = runner.infer(clip)
            record["first_run_ms"] = (time.perf_counter() - start) * 1000
            runner.infer(clip)  # one warm-up call after the first
        except Exception as err:
            record["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            entry["runner"] = None
            continue
        if reference is None:  # torch comes first
            reference = got
        agreement = compare_logits(reference, got, TOLERANCES[_split(runtime)[1]])
        record.update(settings=dict(runner.settings), precision=runner.precision,
                      parity={"passed": agreement.passed, "max_abs": agreement.max_abs, "cosine": agreement.cosine,
                              "top5": agreement.top5, "scale": agreement.scale, "reason": agreement.reason},
                      samples_ms=[])
    live = [r for r, e in entries.items() if e["runner"] is not None]
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for runtime in rng.permutation(live):
            runner = entries[runtime]["runner"]
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                runner.infer(clip)
                times.append((time.perf_counter() - start) * 1000)
            result["candidates"][runtime]["samples_ms"].append(times)
    eager_rounds = np.array([np.median(t) for t in result["candidates"]["torch"]["samples_ms"]])
    for runtime in live:
        record = result["candidates"][runtime]
        per_round = np.array([np.median(t) for t in record["samples_ms"]])
        speedups = eager_rounds / per_round
        record.update(median_ms=float(np.median(per_round)), speedup=float(np.median(speedups)),
                      speedup_ci95=_bootstrap(speedups, seed))
    for entry in entries.values():
        if entry["runner"] is not None:
            entry["runner"].deactivate()
    gc.collect()
    return result


def correct(record: dict) -> bool:
    """A correct deployment: it ran, matched eager here at its precision's tolerance, and (for an artifact) passed
    its build's check (fp32 parity, or the accuracy gate)."""
    build = record.get("build_parity")
    return ("speedup" in record and record["parity"]["passed"]
            and (build is None or build.get("status") == "pass"))


def summarize(paths: list[Path], plot: Path | None) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    columns = list(dict.fromkeys(c for run in runs for r in run["results"] for c in r["candidates"]))
    lines = []
    for path, run in zip(paths, runs):
        lines += [f"### {path.name}", "",
                  "| model | " + " | ".join(columns) + " | fastest correct |",
                  "|---|" + "---|" * (len(columns) + 1)]
        best = []
        for result in run["results"]:
            cells, winner = [], ("-", 0.0)
            for runtime in columns:
                record = result["candidates"].get(runtime)
                if record is None:
                    cells.append("not run")
                elif "speedup" not in record:
                    cells.append(f"error: {record.get('error')}"[:60])
                else:
                    low, high = record["speedup_ci95"]
                    mark = "" if correct(record) else " (fails its check)"
                    cells.append(f"{record['speedup']:.2f}x [{low:.2f}-{high:.2f}]{mark}")
                    if runtime != "torch" and correct(record) and record["speedup"] > winner[1]:
                        winner = (runtime, record["speedup"])
            best.append(winner[1])
            lines.append(f"| {result['model']} | " + " | ".join(cells) + f" | {winner[0]} {winner[1]:.2f}x |")
        faster = sum(b > 1.0 for b in best)
        lines += ["", f"{len(best)} models; the fastest correct candidate is faster than eager on {faster}; "
                  f"median speedup {np.median(best):.2f}x; wall time {run['wall_s'] / 60:.1f} min", ""]
    if len(runs) > 1:
        lines += ["### Between runs", "", "| model | runtime | " + " | ".join(p.stem for p in paths) + " | spread |",
                  "|---|---|" + "---|" * (len(paths) + 1)]
        for index, result in enumerate(runs[0]["results"]):
            for runtime in columns:
                values = [run["results"][index]["candidates"].get(runtime, {}).get("speedup") for run in runs]
                if runtime == "torch" or None in values:
                    continue
                spread = (max(values) - min(values)) / np.mean(values)
                lines.append(f"| {result['model']} | {runtime} | " + " | ".join(f"{v:.2f}x" for v in values)
                             + f" | {spread:.0%} |")
        first = {r["model"]: r for r in runs[0]["results"]}
        lines.append("")
        lines.append("Inductor's compile (first call, s): " + ", ".join(
            f"{m} {r['candidates']['inductor'].get('first_run_ms', float('nan')) / 1000:.0f}"
            for m, r in first.items() if "inductor" in r["candidates"]))
    reduced = [c for c in columns if _split(c)[1] != "fp32"]
    if reduced:
        lines += _over_own_fp32(runs, paths, reduced)
    if plot is not None:
        _plot(runs, paths, plot, columns)
        lines += ["", f"![speedup over eager]({plot.name})"]
    return "\n".join(lines)


def _over_own_fp32(runs: list[dict], paths: list[Path], reduced: list[str]) -> list[str]:
    """Each reduced-precision candidate against its own runtime at fp32 (torch:bf16 against eager), per round."""
    lines = []
    for path, run in zip(paths, runs):
        lines += [f"### {path.name}: over the same runtime's fp32", "",
                  "| model | " + " | ".join(reduced) + " |", "|---|" + "---|" * len(reduced)]
        for result in run["results"]:
            cells = []
            for candidate in reduced:
                record = result["candidates"].get(candidate, {})
                base = result["candidates"].get(_split(candidate)[0], {})
                if "speedup" not in record or "speedup" not in base:
                    cells.append("-")
                    continue
                ratios = (np.array([np.median(t) for t in base["samples_ms"]])
                          / np.array([np.median(t) for t in record["samples_ms"]]))
                low, high = _bootstrap(ratios, 0)
                mark = "" if correct(record) else " (fails its check)"
                cells.append(f"{np.median(ratios):.2f}x [{low:.2f}-{high:.2f}]{mark}")
            lines.append(f"| {result['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def gate_table(artifacts: Path, models: list[str]) -> str:
    """Every reduced-precision artifact in the cache ``artifacts`` for ``models``: its gate, how long its build took
    (the quantization; its fp32 dependency not included) and what the accuracy-aware step kept in float."""
    found: dict[tuple[str, str], dict] = {}
    for manifest_path in sorted(artifacts.glob("builds/*/*/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        precision = manifest.get("options", {}).get("precision")
        if precision in (None, "fp32") or manifest.get("model") not in models:
            continue
        previous = found.get((manifest["model"], f"{manifest['target']}:{precision}"))
        if previous is None or manifest.get("created", "") > previous.get("created", ""):
            found[manifest["model"], f"{manifest['target']}:{precision}"] = manifest
    columns = sorted({c for _, c in found})
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    passing = {}
    for model in models:
        cells = []
        for column in columns:
            manifest = found.get((model, column))
            if manifest is None:
                cells.append("-")
                continue
            gate, info = manifest.get("parity", {}), manifest.get("info", {})
            status = gate.get("status", "?")
            if status == "pass" and column.endswith(":int8"):
                passing.setdefault(model, []).append(column.split(":")[0])
            cell = (f"{'pass' if status == 'pass' else '**' + status + '**'} {gate.get('cosine', float('nan')):.4f}, "
                    f"{gate.get('top5', float('nan')):.2f} ({manifest.get('build_seconds', 0):.0f} s")
            kept = info.get("kept_float") or []
            if kept:
                total = info.get("accuracy_aware", {}).get("quantized_nodes")
                cell += f"; {len(kept)}{f' of {total}' if total else ''} nodes kept float"
            attempts = info.get("attempts") or []
            if any(a.get("accuracy_control") for a in attempts):
                cell += "; NNCF accuracy control"
            cells.append(cell + ")")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", f"int8 passes its gate on {len(passing)} of {len(models)} models on at least one runtime"]
    return "\n".join(lines)


def _plot(runs: list[dict], paths: list[Path], plot: Path, columns: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [r["model"] for r in runs[0]["results"]]
    shown = [c for c in columns if c != "torch"]
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / len(shown)
    markers = ["o", "s", "^"]
    for k, runtime in enumerate(shown):
        for j, run in enumerate(runs):
            xs, ys, lows, highs, hollow = [], [], [], [], []
            for i, result in enumerate(run["results"]):
                record = result["candidates"].get(runtime, {})
                if "speedup" not in record:
                    continue
                low, high = record["speedup_ci95"]
                xs.append(i - 0.4 + width * (k + 0.5) + (j - (len(runs) - 1) / 2) * width * 0.3)
                ys.append(record["speedup"])
                lows.append(record["speedup"] - low)
                highs.append(high - record["speedup"])
                hollow.append(not correct(record))
            color = f"C{k}"
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", ecolor=color, alpha=0.6, lw=1)
            ax.scatter(xs, ys, marker=markers[j % len(markers)], s=22,
                       facecolors=["none" if h else color for h in hollow], edgecolors=color,
                       label=runtime if j == 0 else None)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel("speedup over PyTorch eager fp32 (x)")
    precisions = sorted({_split(c)[1] for c in shown})
    runs_named = ", ".join(f"{'o s ^'.split()[j % 3]} {p.stem}" for j, p in enumerate(paths))
    ax.set_title(f"{', '.join(precisions)}, batch 1, {runs[0]['results'][0].get('threads', '?')} threads; median over "
                 f"rounds with 95% CI; hollow: fails its check; runs: {runs_named}", fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(shown), 6), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(plot, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all", help="comma-separated zoo models, or all")
    parser.add_argument("--runtime", default=",".join(RUNTIMES),
                        help="comma-separated candidates, runtime or runtime:precision; torch (eager fp32) is always "
                             "first")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact cache")
    parser.add_argument("--json", type=Path, default=Path("artifacts/fp32-runtimes.json"))
    parser.add_argument("--timeout-s", type=float, default=None, help="per model, its builds included")
    parser.add_argument("--tiny", action="store_true", help="the tiny variants (a quick check of the script)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one model, in this process
    parser.add_argument("--summarize", type=Path, nargs="+", help="JSON files of earlier runs -> markdown")
    parser.add_argument("--plot", type=Path, help="with --summarize: write the speedup plot here (.png)")
    parser.add_argument("--gates", type=Path, help="with --summarize: the artifact cache; adds the table of every "
                                                   "reduced-precision artifact's gate and build time")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize, args.plot))
        if args.gates:
            models = [r["model"] for r in json.loads(args.summarize[0].read_text())["results"]]
            print("\n" + gate_table(args.gates, models))
        return
    runtimes = ["torch"] + [r for r in args.runtime.split(",") if r.strip() and r.strip() != "torch"]
    if args.one:
        result = measure(args.model, runtimes, args.rounds, args.iters, args.threads, args.out, args.seed,
                         args.tiny)
        args.json.write_text(json.dumps(result))
        return
    from vcompile.bench.environment import environment
    from vcompile.zoo import list_models

    models = list(list_models()) if args.model == "all" else args.model.split(",")
    started, results = time.perf_counter(), []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    part = args.json.with_suffix(".part.json")
    for name in models:
        command = [sys.executable, __file__, "--one", "--model", name, "--runtime", ",".join(runtimes),
                   "--rounds", str(args.rounds), "--iters", str(args.iters), "--threads", str(args.threads),
                   "--seed", str(args.seed), "--out", str(args.out), "--json", str(part)] + ["--tiny"] * args.tiny
        model_start = time.perf_counter()
        try:
            done = subprocess.run(command, timeout=args.timeout_s)
            failure = None if done.returncode == 0 else f"exit status {done.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"timeout after {args.timeout_s:g} s (builds included)"
        if failure:
            results.append({"model": name, "candidates": {}, "error": failure})
            print(f"{name}: {failure}", flush=True)
        else:
            result = json.loads(part.read_text())
            result["wall_s"] = time.perf_counter() - model_start
            results.append(result)
            print(f"{name} ({result['wall_s']:.0f} s): " + ", ".join(
                f"{r} {c['speedup']:.2f}x" if "speedup" in c else f"{r} error"
                for r, c in result["candidates"].items()), flush=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "environment": environment(),
                                         "results": results,
                                         "wall_s": time.perf_counter() - started}, indent=1))
    part.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
