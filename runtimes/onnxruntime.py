"""ONNX Runtime runner: runs an onnx `Artifact` (``model.onnx``) on the CPU or, with onnxruntime-gpu, on CUDA.

The execution provider follows the device and is never swapped silently: asking for ``cuda`` where this
onnxruntime has no CUDA provider, or where the provider fails to load, is an error that names the fix. The input
metadata is the session's: a named dimension (``batch``) is dynamic.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from .base import Runner, RunnerError, TensorMetadata, parse_device

__all__ = ["OnnxRuntimeRunner", "providers_for"]

_GPU_FIX = 'pip install "vcompile[gpu]" (onnxruntime-gpu, in place of onnxruntime) on a machine with an NVIDIA GPU'
_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
          "tensor(bool)": np.bool_}


def providers_for(device: str) -> list:
    """onnxruntime providers for a device: ``cpu`` or ``cuda[:N]`` (CUDA first, CPU for the ops CUDA lacks)."""
    parsed = parse_device(device, OnnxRuntimeRunner.devices)
    if parsed is None:
        raise RunnerError(f"the onnxruntime runtime runs on cpu, cuda or cuda:N, not {device!r}")
    kind, _, index = parsed.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


class OnnxRuntimeRunner(Runner):
    """An ``onnxruntime.InferenceSession`` with all graph optimizations; the artifact's precision is what runs."""

    name = "onnxruntime"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16", "int8")
    precision_from_artifact = True
    thread_control = True  # intra-op threads of the session
    shape_fix = "give a clip of that shape, or rebuild the artifact for it"

    def activate_impl(self) -> None:
        providers = providers_for(self.device)
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        available = ort.get_available_providers()
        if wanted not in available:
            raise RunnerError(f"device {self.device} needs onnxruntime's {wanted}, but this onnxruntime "
                              f"{ort.__version__} has only {', '.join(available)}; {_GPU_FIX}")
        ort.disable_telemetry_events()  # nothing written outside the folders the user named
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
        used = self.session.get_session_options()
        self.settings = {"intra_op_num_threads": str(used.intra_op_num_threads or "default"),
                         "inter_op_num_threads": str(used.inter_op_num_threads or "default"),
                         "execution_mode": used.execution_mode.name,
                         "providers": ",".join(self.session.get_providers())}

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        metadata = {}
        for arg in self.session.get_inputs():
            if arg.type not in _TYPES:
                raise RunnerError(f"{self.source.file()} input {arg.name!r} has type {arg.type}, which vcompile "
                                  "does not feed")
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)  # "batch", None: dynamic
            metadata[arg.name] = TensorMetadata(np.dtype(_TYPES[arg.type]), shape)
        return metadata

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: video})[0]

    def bind_impl(self, video: np.ndarray):
        cuda = self.device.startswith("cuda")
        where, index = ("cuda", int(self.device.partition(":")[2] or 0)) if cuda else ("cpu", 0)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(video, where, index))
        binding.bind_output(self.session.get_outputs()[0].name, where, index)
        return lambda: self.session.run_with_iobinding(binding)

    def deactivate_impl(self) -> None:
        self.session = None
