"""How much does one model's eager latency vary from one fresh process to the next on this machine?

Runs the same bare timing loop (seeded model, seeded clip, fixed threads, warm-up, then timed runs) in several
fresh Python processes, one after the other, and prints each process's mean and the spread. When the spread is
larger than a difference you want to measure, compare medians over many processes, not one run against another.

    python benchmarks/process_variance.py --model movinet-a0 --processes 6 --iters 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap

LOOP = textwrap.dedent("""
    import sys, time, statistics, torch
    from vcompile.compile import example_input
    from vcompile.zoo import create_model, get_spec
    name, threads, warmup, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    model = create_model(name, seed=0).eval()
    clip = example_input(get_spec(name).input_shape(), 1)
    with torch.inference_mode():
        for _ in range(warmup):
            model(clip)
        times = []
        for _ in range(iters):
            start = time.perf_counter(); model(clip); times.append((time.perf_counter() - start) * 1e3)
    print(statistics.fmean(times))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="movinet-a0")
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    means = []
    for index in range(args.processes):
        out = subprocess.run([sys.executable, "-c", LOOP, args.model, str(args.threads), str(args.warmup),
                              str(args.iters)], capture_output=True, text=True, check=True)
        means.append(float(out.stdout.strip().splitlines()[-1]))
        print(f"process {index + 1}: mean {means[-1]:.1f} ms", flush=True)
    low, high, middle = min(means), max(means), statistics.median(means)
    print(f"{args.model} eager, {args.threads} threads, {args.processes} processes: median {middle:.1f} ms, "
          f"range {low:.1f} to {high:.1f} ms ({(high - low) / middle:.0%} of the median)")


if __name__ == "__main__":
    main()
