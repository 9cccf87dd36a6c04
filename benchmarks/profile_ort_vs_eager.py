"""Where does one forward pass spend its time: onnxruntime's per-node profile beside PyTorch eager's, per op type.

Uses the model's cached ONNX artifact (built by `vcompile build --model NAME --target onnx`) and the same seeded
weights in eager PyTorch, 1 x 3 x 16 x 224 x 224, the same thread count for both. Prints the largest op types of
each runtime with their total time in the last of a few runs.

    python benchmarks/profile_ort_vs_eager.py i3d-bert --threads 2
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from vcompile.compile import BuildOptions, build
from vcompile.data import example_input
from vcompile.zoo import create_model, get_spec


def onnxruntime_profile(path: Path, clip: np.ndarray, threads: int, runs: int) -> tuple[float, Counter, Counter]:
    """(wall ms of the last run, kernel ms per op type, nodes per op type) from onnxruntime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent.parent / "ort-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: clip}
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    last = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
    start, end = last["ts"], last["ts"] + last["dur"]
    times, counts = Counter(), Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and start <= event["ts"] <= end:
            times[event["args"]["op_name"]] += event["dur"] / 1e3
            counts[event["args"]["op_name"]] += 1
    return last["dur"] / 1e3, times, counts


def eager_profile(model: torch.nn.Module, clip: torch.Tensor, runs: int) -> tuple[float, Counter, Counter]:
    """(total self ms, self ms per ATen op, calls per op) of the last eager forward pass."""
    with torch.inference_mode():
        for _ in range(runs - 1):
            model(clip)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(clip)
    times, counts = Counter(), Counter()
    for event in prof.key_averages():
        times[event.key] += event.self_cpu_time_total / 1e3
        counts[event.key] += event.count
    return sum(times.values()), times, counts


def show(title: str, total: float, times: Counter, counts: Counter, top: int) -> None:
    print(f"{title}: {total:.1f} ms")
    for op, ms in times.most_common(top):
        print(f"  {op:<36} {ms:9.1f} ms  {ms / total:6.1%}  x{counts[op]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="runs before the profiled one counts (warm-up)")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--artifacts", default="artifacts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    artifact = build(args.model, "onnx", BuildOptions(), out=args.artifacts)
    clip = example_input(get_spec(args.model).input_shape(), 1)
    show(f"{args.model} onnxruntime (CPU, {args.threads} threads), last run",
         *onnxruntime_profile(artifact.file(), clip.numpy(), args.threads, args.runs), args.top)
    show(f"{args.model} PyTorch eager ({args.threads} threads), self time",
         *eager_profile(create_model(args.model).eval(), clip, args.runs), args.top)


if __name__ == "__main__":
    main()
