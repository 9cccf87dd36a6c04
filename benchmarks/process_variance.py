"""How much does one model's eager latency vary from one fresh process to the next on this machine?

Runs the same bare timing loop (seeded model, seeded clip, fixed threads, warm-up, then timed runs) in several
fresh Python processes, one after the other, and prints each process's mean and the spread. When the spread is
larger than a difference you want to measure, compare medians over many processes, not one run against another.

    python benchmarks/process_variance.py --model movinet-a0 --processes 6 --iters 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from harness_vs_bare import bare_loop  # the same bare loop the harness is compared with

from vcompile.data import example_input
from vcompile.zoo import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="movinet-a0")
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    means = []
    with tempfile.TemporaryDirectory() as folder:
        clip_path = Path(folder) / "clip.npy"
        np.save(clip_path, example_input(get_spec(args.model).input_shape(), 1).numpy())
        for index in range(args.processes):
            times = bare_loop(args.model, "torch", None, clip_path, args.threads, args.warmup, args.iters)
            means.append(statistics.fmean(times))
            print(f"process {index + 1}: mean {means[-1]:.1f} ms", flush=True)
    low, high, middle = min(means), max(means), statistics.median(means)
    print(f"{args.model} eager, {args.threads} threads, {args.processes} processes: median {middle:.1f} ms, "
          f"range {low:.1f} to {high:.1f} ms ({(high - low) / middle:.0%} of the median)")


if __name__ == "__main__":
    main()
