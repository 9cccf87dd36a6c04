"""Does `vcompile bench` report what a bare timing loop measures on the same artifact and thread count?

For each (model, runtime) pair, two long-lived processes take turns, in an order shuffled per round (seeded):
  - the harness: a `vcompile bench` round-mode worker (``python -m vcompile.bench.case --worker``: the same code
    path as `vcompile bench --rounds`), given the case;
  - a bare loop: a process that loads the same artifact (or module) with the runtime's own API and times calls
    with perf_counter, speaking the same turn protocol (READY, RUN n -> TIMES [...], END).
Both warm up the same number of runs first. Each round gives a ratio of medians (harness over bare); the script
prints the median ratio over rounds with its 95% bootstrap interval, so the comparison is of the harness and not of
two moments of the machine, and writes a markdown table.

    python benchmarks/harness_vs_bare.py --model x3d-xs,movinet-a0,vtn-eff --runtime torch,onnxruntime \
        --iters 60 --rounds 10 --out docs/results/harness-vs-bare.md
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vcompile.bench.case import CaseSpec
from vcompile.bench.stats import median_interval
from vcompile.compile import BuildOptions, build
from vcompile.data import example_input
from vcompile.zoo import get_spec

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
    print("READY", flush=True)
    for line in sys.stdin:
        if not line.startswith("RUN "):
            break
        times = []
        for _ in range(int(line.split()[1])):
            t = time.perf_counter(); run(); times.append((time.perf_counter() - t) * 1e3)
        print("TIMES " + json.dumps(times), flush=True)
""")

TARGET = {"onnxruntime": "onnx", "executorch": "executorch", "torch": None}


class _Turns:
    """A process that answers READY once, then TIMES [...] to each RUN n."""

    def __init__(self, command: list[str], first_line: str | None):
        # stderr: the harness's progress lines; a failure is its RECORD, or the end before READY
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        if first_line is not None:
            self.proc.stdin.write(first_line + "\n")
            self.proc.stdin.flush()
        self._expect("READY")

    def _expect(self, word: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(word):
                return line[len(word):].strip()
            if line.startswith("RECORD"):
                raise SystemExit(f"the harness could not prepare the case: {json.loads(line[7:])['message']}")
        raise SystemExit(f"a timing process ended before saying {word}")

    def run(self, n: int) -> list[float]:
        self.proc.stdin.write(f"RUN {n}\n")
        self.proc.stdin.flush()
        return json.loads(self._expect("TIMES"))

    def close(self) -> None:
        self.proc.stdin.write("END\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="x3d-xs,movinet-a0")
    parser.add_argument("--runtime", default="torch,onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10, help="turns of harness and bare loop, shuffled per round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the turn orders")
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
            clip_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(clip_path, example_input(get_spec(model).input_shape(), 1).numpy())
            case = CaseSpec(model=model, runtime=runtime, mode="single" if runtime != "executorch" else "mobile",
                            threads=args.threads, warmup=args.warmup, iters=args.iters, out=args.artifacts,
                            rounds=args.rounds)
            cfg = {"model": model, "runtime": runtime, "artifact": artifact, "clip": str(clip_path),
                   "threads": args.threads, "warmup": args.warmup}
            sides = {"harness": _Turns([sys.executable, "-m", "vcompile.bench.case", "--worker"],
                                       json.dumps(asdict(case))),
                     "bare": _Turns([sys.executable, "-c", BARE, json.dumps(cfg)], None)}
            per_turn = -(-args.iters // args.rounds)
            rng, medians = random.Random(args.seed), {"harness": [], "bare": []}
            for _ in range(args.rounds):
                order = list(sides)
                rng.shuffle(order)
                for side in order:
                    medians[side].append(float(np.median(sides[side].run(per_turn))))
            for side in sides.values():
                side.close()
            ratio = median_interval(np.array(medians["harness"]) / np.array(medians["bare"]))
            h, b = float(np.median(medians["harness"])), float(np.median(medians["bare"]))
            rows.append((model, runtime, h, b, ratio))
            print(f"{model:<12} {runtime:<12} harness {h:9.2f} ms  bare {b:9.2f} ms  ratio {ratio.value:.3f} "
                  f"[{ratio.low:.3f}-{ratio.high:.3f}]", flush=True)
    lines = ["| model | runtime | harness median (ms) | bare loop median (ms) | harness / bare [95% interval] | "
             "within 5% |", "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {r} | {h:.2f} | {b:.2f} | {x.value:.3f} [{x.low:.3f}-{x.high:.3f}] | "
              f"{'yes' if abs(x.value - 1) <= 0.05 else 'no'} |" for m, r, h, b, x in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
