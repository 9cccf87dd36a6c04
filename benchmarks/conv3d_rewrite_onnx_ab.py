"""Would onnxruntime run a model faster with its 3-D convolutions rewritten as 2-D ones?

Exports the model twice to ONNX, as the onnx target does (TorchScript exporter) and after vcompile's exact
`fold_batchnorm3d` + `lower_conv3d` rewrites (the ones the executorch target applies, which let onnxruntime use its
NCHWc 2-D kernels), checks that both give the same logits, then times both sessions alternately with the same
threads on a seeded 1 x 3 x 16 x 224 x 224 clip.

    python benchmarks/conv3d_rewrite_onnx_ab.py i3d-bert --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from vcompile.compile.rewrites import apply_rewrites
from vcompile.data import example_input
from vcompile.zoo import create_model, get_spec


def export(model: torch.nn.Module, clip: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (clip,), str(path), dynamo=False, opset_version=17, input_names=["video"])
    return path


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each session, alternating")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model(args.model).eval()
    clip = example_input(get_spec(args.model).input_shape(), 1)
    rewritten, applied = apply_rewrites(model, "executorch", clip)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    with tempfile.TemporaryDirectory() as folder:
        sessions = {name: ort.InferenceSession(str(export(m, clip, Path(folder) / f"{i}.onnx")), options,
                                               providers=["CPUExecutionProvider"])
                    for i, (name, m) in enumerate((("as exported", model), (" + ".join(applied), rewritten)))}
    feed = clip.numpy()
    outputs = [s.run(None, {"video": feed})[0] for s in sessions.values()]  # also the warm-up run
    print(f"{args.model}: rewrites {applied}; max abs difference of the logits "
          f"{float(np.abs(outputs[0] - outputs[1]).max()):.2e}")
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"video": feed})
            times[name].append((time.perf_counter() - start) * 1e3)
    for name, values in times.items():
        print(f"  {name:<40} median {statistics.median(values):8.1f} ms  "
              f"(min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()
