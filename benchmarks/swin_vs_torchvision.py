"""Swin-T: vcompile's `swin-t` against torchvision's `swin3d_t` on the CPU, same weights, timed side by side.

Both models get the same weights (torchvision's random initialisation, mapped with `state_dict_from_torchvision`),
their logits are compared, then forwards are timed in interleaved repetitions (the order alternates every
repetition) after a warm-up, under `torch.inference_mode` and the same thread count. Besides each model's mean
and median, the median of the per-repetition ratios is printed: it is the figure least disturbed by other load
on the machine, since both halves of a repetition run within a second or two of each other.

    python benchmarks/swin_vs_torchvision.py --threads 2 --warmup 3 --reps 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torchvision.models.video import swin3d_t

from vcompile.zoo import create_model
from vcompile.zoo.swin import state_dict_from_torchvision


def summary(samples: list[float]) -> dict[str, float]:
    return {"mean_ms": statistics.fmean(samples), "median_ms": statistics.median(samples),
            "min_ms": min(samples), "stdev_ms": statistics.stdev(samples) if len(samples) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results (with raw samples) to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"torch.set_num_threads({args.threads}) -> get_num_threads() = {torch.get_num_threads()}")
    torch.manual_seed(args.seed)
    reference = swin3d_t().eval()
    ours = create_model("swin-t", frames=args.frames, size=args.size,
                        weights=state_dict_from_torchvision(reference.state_dict()))
    models = {"torchvision swin3d_t": reference, "vcompile swin-t": ours}
    clip = torch.randn(args.batch, 3, args.frames, args.size, args.size,
                       generator=torch.Generator().manual_seed(args.seed))

    with torch.inference_mode():
        outputs = {name: model(clip) for name, model in models.items()}
        max_abs = (outputs["torchvision swin3d_t"] - outputs["vcompile swin-t"]).abs().max().item()
        print(f"input {tuple(clip.shape)}; logits max |diff| = {max_abs:.3g}")
        if max_abs > 1e-4:
            sys.exit(f"the models disagree (max |diff| {max_abs:.3g} > 1e-4)")
        for _ in range(args.warmup):
            for model in models.values():
                model(clip)
        samples: dict[str, list[float]] = {name: [] for name in models}
        for rep in range(args.reps):
            order = list(models) if rep % 2 == 0 else list(reversed(models))
            for name in order:
                start = time.perf_counter()
                models[name](clip)
                samples[name].append((time.perf_counter() - start) * 1e3)

    stats = {name: summary(s) for name, s in samples.items()}
    for name, s in stats.items():
        print(f"{name:22s} mean {s['mean_ms']:8.1f} ms  median {s['median_ms']:8.1f} ms  "
              f"min {s['min_ms']:8.1f} ms  stdev {s['stdev_ms']:6.1f} ms")
    ratio_median = stats["vcompile swin-t"]["median_ms"] / stats["torchvision swin3d_t"]["median_ms"]
    ratio_mean = stats["vcompile swin-t"]["mean_ms"] / stats["torchvision swin3d_t"]["mean_ms"]
    paired = statistics.median(o / r for o, r in zip(samples["vcompile swin-t"], samples["torchvision swin3d_t"]))
    print(f"vcompile / torchvision: median {ratio_median:.3f}, mean {ratio_mean:.3f}, "
          f"median of per-repetition ratios {paired:.3f}")
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "input": list(clip.shape),
              "max_abs_diff": max_abs, "stats": stats, "samples_ms": samples,
              "ratio_median": ratio_median, "ratio_mean": ratio_mean, "ratio_paired_median": paired}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
