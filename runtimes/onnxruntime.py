"""ONNX Runtime runner: runs an onnx `Artifact` (``model.onnx``) on the CPU or, with onnxruntime-gpu, on CUDA.

The execution provider follows the device and is never swapped silently: asking for ``cuda`` where this
onnxruntime has no CUDA provider, or where the provider fails to load, is an error that names the fix.
"""

from __future__ import annotations

import numpy as np

from vcompile.runtimes.base import Runner, RunnerError

__all__ = ["OnnxRuntimeRunner", "providers_for"]

_GPU_FIX = 'pip install "vcompile[gpu]" (onnxruntime-gpu, in place of onnxruntime) on a machine with an NVIDIA GPU'


def providers_for(device: str) -> list:
    """onnxruntime providers for a device: ``cpu`` or ``cuda[:N]`` (CUDA first, CPU for the ops CUDA lacks)."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise RunnerError(f"the onnxruntime runtime runs on cpu or cuda[:N], not {device!r}")


class OnnxRuntimeRunner(Runner):
    """An ``onnxruntime.InferenceSession`` with all graph optimizations; the artifact's precision is what runs."""

    name = "onnxruntime"

    def activate_impl(self) -> None:
        import onnxruntime as ort

        providers = providers_for(self.device)
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        available = ort.get_available_providers()
        if wanted not in available:
            raise RunnerError(f"device {self.device} needs onnxruntime's {wanted}, but this onnxruntime "
                              f"{ort.__version__} has only {', '.join(available)}; {_GPU_FIX}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.source.file()), options, providers=providers)
        if wanted not in self.session.get_providers():  # e.g. CUDA libraries missing: ORT would quietly use the CPU
            raise RunnerError(f"onnxruntime could not start {wanted} for device {self.device} (the session fell "
                              f"back to {', '.join(self.session.get_providers())}); check the CUDA and cuDNN "
                              f"libraries that onnxruntime-gpu {ort.__version__} needs")
        self.input_name = self.session.get_inputs()[0].name

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: video})[0]

    def deactivate_impl(self) -> None:
        self.session = None
