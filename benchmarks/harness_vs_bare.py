"""Does `vcompile bench` report what a bare timing loop measures on the same artifact and thread count?

For each (model, runtime) pair, alternate a few times between:
  - the harness: `run_case_isolated` (a fresh process, the same code path as `vcompile bench`);
  - a bare loop: a fresh process that loads the same artifact (or module) with the runtime's own API, runs the
    same warm-up, and times the same number of runs with perf_counter.
It prints both means and their ratio, and writes a markdown table.

    python benchmarks/harness_vs_bare.py --model x3d-xs,movinet-a0 --runtime torch,onnxruntime --iters 30 \
        --out docs/results/harness-vs-bare.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from vcompile.bench.case import CaseSpec
from vcompile.bench.sweep import run_case_isolated
from vcompile.compile import BuildOptions, build
from vcompile.data import example_input

BARE = textwrap.dedent("""
    import json, sys, time
    import numpy as np, torch
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    clip = np.load(cfg["clip"])
    if cfg["runtime"] == "onnxruntime":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cfg["threads"]
        sess = ort.InferenceSession(cfg["artifact"], opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        run = lambda: sess.run(None, {name: clip})
    elif cfg["runtime"] == "executorch":
        from executorch.runtime import Runtime
        method = Runtime.get().load_program(cfg["artifact"]).load_method("forward")
        x = torch.from_numpy(clip)
        run = lambda: method.execute([x])
    else:
        from vcompile.zoo import create_model
        model = create_model(cfg["model"], seed=0)
        x = torch.from_numpy(clip)
        def run():
            with torch.inference_mode():
                model(x)
    for _ in range(cfg["warmup"]):
        run()
    times = []
    for _ in range(cfg["iters"]):
        t = time.perf_counter(); run(); times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(times))
""")

TARGET = {"onnxruntime": "onnx", "executorch": "executorch", "torch": None}


def bare_loop(model: str, runtime: str, artifact: str | None, clip_path: Path, threads: int, warmup: int,
              iters: int) -> list[float]:
    cfg = {"model": model, "runtime": runtime, "artifact": artifact, "clip": str(clip_path), "threads": threads,
           "warmup": warmup, "iters": iters}
    out = subprocess.run([sys.executable, "-c", BARE, json.dumps(cfg)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="x3d-xs,movinet-a0")
    parser.add_argument("--runtime", default="torch,onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of harness and bare loop")
    parser.add_argument("--artifacts", default="artifacts")
    parser.add_argument("--out", type=Path, default=None, help="markdown file for the results table")
    args = parser.parse_args()
    rows = []
    for model in args.model.split(","):
        for runtime in args.runtime.split(","):
            artifact = None
            if TARGET[runtime]:
                artifact = str(build(model, TARGET[runtime], BuildOptions(), out=args.artifacts).file())
            clip_path = Path(args.artifacts) / f"clip-{model}.npy"
            import numpy as np

            from vcompile.zoo import get_spec

            np.save(clip_path, example_input(get_spec(model).input_shape(), 1).numpy())
            harness, bare = [], []
            case = CaseSpec(model=model, runtime=runtime, mode="single" if runtime != "executorch" else "mobile",
                            threads=args.threads, warmup=args.warmup, iters=args.iters, out=args.artifacts)
            for _ in range(args.rounds):
                record = run_case_isolated(case)
                if record.status != "ok":
                    raise SystemExit(f"harness failed on {model} {runtime}: {record.message}")
                harness.append(record.mean_ms)
                bare.append(statistics.fmean(bare_loop(model, runtime, artifact, clip_path, args.threads,
                                                       args.warmup, args.iters)))
            h, b = statistics.median(harness), statistics.median(bare)
            rows.append((model, runtime, h, b, h / b))
            print(f"{model:<12} {runtime:<12} harness {h:9.2f} ms  bare {b:9.2f} ms  ratio {h / b:.3f}", flush=True)
    lines = ["| model | runtime | harness mean (ms) | bare loop mean (ms) | harness / bare |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {r} | {h:.2f} | {b:.2f} | {ratio:.3f} |" for m, r, h, b, ratio in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
