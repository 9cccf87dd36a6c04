"""OpenVINO settings A/B: the IR that vcompile builds against the ONNX file, with vcompile's full configuration
(latency hint, f32, no dynamic quantization, 2 threads) against only the f32 hint, in alternating rounds.

    python benchmarks/openvino_settings_ab.py --model movinet-a0,x3d-xs --rounds 10

Prints each variant's median latency and its per-round ratio to "ONNX f32" (the ONNX file with only the f32 hint,
what a user would write by hand) with the 10th-90th percentile of that ratio over rounds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import openvino as ov

from vcompile.check.parity import build_verified
from vcompile.compile import BuildOptions
from vcompile.data import example_input
from vcompile.runtimes.openvino import compile_config
from vcompile.zoo import get_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="movinet-a0,x3d-xs")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="artifacts")
    args = parser.parse_args()
    core = ov.Core()
    for name in args.model.split(","):
        onnx = build_verified(name, "onnx", BuildOptions(batch=1), out=args.out).file()
        ir = build_verified(name, "openvino", BuildOptions(batch=1), out=args.out).file()
        full, f32 = compile_config("fp32", args.threads), {"INFERENCE_PRECISION_HINT": "f32"}
        variants = {"IR full": (ir, full), "IR f32": (ir, f32), "ONNX full": (onnx, full), "ONNX f32": (onnx, f32),
                    "IR f32+latency": (ir, {**f32, "PERFORMANCE_HINT": "LATENCY"})}
        clip = example_input(get_spec(name).input_shape(1), 1).numpy()
        requests = {}
        for label, (path, config) in variants.items():
            requests[label] = core.compile_model(str(path), "CPU", config).create_infer_request()
            requests[label].infer([clip])
            requests[label].infer([clip])
        rng = np.random.default_rng(0)
        samples: dict[str, list[float]] = {label: [] for label in requests}
        for _ in range(args.rounds):
            for label in rng.permutation(list(requests)):
                times = []
                for _ in range(args.iters):
                    start = time.perf_counter()
                    requests[label].infer([clip])
                    times.append(time.perf_counter() - start)
                samples[label].append(float(np.median(times)) * 1000)
        base = np.array(samples["ONNX f32"])
        for label, values in samples.items():
            ratio = np.array(values) / base
            print(f"{name:<12} {label:<15} median {np.median(values):7.1f} ms  ratio to ONNX f32 "
                  f"{np.median(ratio):.3f} [{np.percentile(ratio, 10):.3f}-{np.percentile(ratio, 90):.3f}]")


if __name__ == "__main__":
    main()
