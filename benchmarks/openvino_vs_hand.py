"""vcompile's fp32 CPU runtimes against the same ONNX file run by hand, side by side in alternating rounds.

    python benchmarks/openvino_vs_hand.py --model movinet-a0,x3d-xs,vtn-eff --rounds 8 --iters 3 --threads 2

For each model, at the paper's shape (1 x 3 x 16 x 224 x 224), one process holds every candidate:

- ``eager``: PyTorch eager fp32 (the reference and the denominator of every speedup);
- ``vcompile ort`` and ``vcompile openvino``: vcompile's runners on its verified artifacts;
- ``ort by hand``: ``onnxruntime.InferenceSession`` on the same ONNX file with its defaults;
- ``openvino by hand``: ``ov.Core().compile_model`` on the same ONNX file with its defaults (the CPU plugin then
  picks its own precision: bf16 on a CPU with native bf16), and with ``INFERENCE_PRECISION_HINT: f32`` only.

Each round runs every candidate ``--iters`` times in an order shuffled per round (seeded); a candidate's figure for
a round is its median over those runs. The speedup over eager is computed per round and summarised by its median
with a 95% bootstrap interval over rounds (numpy), so the slow drift of a shared machine cancels out of the ratio.
Each candidate's output is compared with eager's (max abs error, cosine) and the precision it ran is printed:
a candidate that is not fp32-correct is not an fp32 deployment, however fast. Writes a JSON file with every sample.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vcompile.check.parity import build_verified
from vcompile.compile import BuildOptions
from vcompile.data import example_input
from vcompile.runtimes import load
from vcompile.zoo import create_model, get_spec


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _candidates(model_name: str, threads: int, out: Path) -> dict[str, tuple[callable, str]]:
    """name -> (run(clip) -> logits, the precision it runs)."""
    import onnxruntime as ort
    import openvino as ov

    options = BuildOptions(batch=1)
    onnx_artifact = build_verified(model_name, "onnx", options, out=out)
    ov_artifact = build_verified(model_name, "openvino", options, out=out)
    model = create_model(model_name)
    torch.set_num_threads(threads)

    def eager(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    found = {"eager": (eager, "fp32")}
    for runtime, artifact in (("onnxruntime", onnx_artifact), ("openvino", ov_artifact)):
        runner = load(artifact, runtime, threads=threads).activate()
        ran = runner.settings.get("INFERENCE_PRECISION_HINT", "fp32")
        found[f"vcompile {runtime}"] = (runner.infer, ran)
    session = ort.InferenceSession(str(onnx_artifact.file()), providers=["CPUExecutionProvider"])
    found["ort by hand (defaults)"] = (lambda x: session.run(None, {"video": x})[0], "fp32")
    core = ov.Core()
    for label, config in (("openvino by hand (defaults)", {}),
                          ("openvino by hand (f32 hint)", {"INFERENCE_PRECISION_HINT": "f32"})):
        compiled = core.compile_model(str(onnx_artifact.file()), "CPU", config)
        request = compiled.create_infer_request()
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        quant = compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")

        def run(x, request=request):
            request.infer([x])
            return request.get_output_tensor(0).data.copy()

        found[label] = (run, f"{ran}, dynamic quantization group {quant}")
    return found


def _bootstrap(values: np.ndarray, seed: int) -> tuple[float, float]:
    """The 95% bootstrap interval of the median (`vcompile.bench.stats.median_interval`)."""
    from vcompile.bench.stats import median_interval

    interval = median_interval(values, seed)
    return interval.low, interval.high


def compare(model_name: str, rounds: int, iters: int, threads: int, out: Path, seed: int) -> dict:
    spec = get_spec(model_name)
    clip = example_input(spec.input_shape(1), seed=1).numpy()
    candidates = _candidates(model_name, threads, out)
    reference = candidates["eager"][0](clip)
    result = {"model": model_name, "threads": threads, "rounds": rounds, "iters": iters, "candidates": {}}
    for name, (run, precision) in candidates.items():
        got = run(clip)  # also the first, untimed call (lazy set-up)
        run(clip)
        result["candidates"][name] = {"precision": precision, "max_abs": float(np.abs(got - reference).max()),
                                      "cosine": _cosine(got, reference), "samples_ms": []}
    rng = np.random.default_rng(seed)
    names = list(candidates)
    for _ in range(rounds):
        for name in rng.permutation(names):
            run = candidates[name][0]
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                run(clip)
                times.append((time.perf_counter() - start) * 1000)
            result["candidates"][name]["samples_ms"].append(times)
    eager_rounds = np.array([np.median(t) for t in result["candidates"]["eager"]["samples_ms"]])
    for entry in result["candidates"].values():
        per_round = np.array([np.median(t) for t in entry["samples_ms"]])
        speedups = eager_rounds / per_round
        entry["median_ms"] = float(np.median(per_round))
        entry["speedup"] = float(np.median(speedups))
        entry["speedup_ci95"] = _bootstrap(speedups, seed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="movinet-a0,x3d-xs,vtn-eff")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("artifacts"))
    parser.add_argument("--json", type=Path, default=Path("artifacts/openvino-vs-hand.json"))
    args = parser.parse_args()
    results = []
    print("| model | candidate | runs in | max abs vs eager | cosine | median ms | speedup over eager [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for name in args.model.split(","):
        result = compare(name.strip(), args.rounds, args.iters, args.threads, args.out, args.seed)
        results.append(result)
        for cand, entry in result["candidates"].items():
            low, high = entry["speedup_ci95"]
            print(f"| {result['model']} | {cand} | {entry['precision']} | {entry['max_abs']:.1e} | "
                  f"{entry['cosine']:.6f} | {entry['median_ms']:.1f} | {entry['speedup']:.2f}x "
                  f"[{low:.2f}-{high:.2f}] |", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
