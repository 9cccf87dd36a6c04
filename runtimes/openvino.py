"""OpenVINO runner: compiles an openvino `Artifact` (IR) for the CPU and runs it with one synchronous request.

Settings, all stated and read back from the compiled model (`OpenVinoRunner.settings`): the thread count
(``INFERENCE_NUM_THREADS``), the latency performance hint (one request, one stream: what batch-1 and batch
inference time), and f32 execution. Left to its defaults, OpenVINO's CPU plugin runs in bf16 on a CPU that has
native bf16 (AVX-512 BF16, AMX), and may quantize the activations of matrix products to int8 on the fly
(``DYNAMIC_QUANTIZATION_GROUP_SIZE``); for an fp32 artifact both are turned off, so that it computes what PyTorch
fp32 computes. The precision that runs is read back, never assumed.
"""

from __future__ import annotations

import numpy as np

from .base import Runner, RunnerError, TensorMetadata

__all__ = ["OpenVinoRunner", "fp32_config"]

_TYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64, "i32": np.int32}


def fp32_config(threads: int | None) -> dict[str, object]:
    """The compile configuration of an fp32 artifact on the CPU."""
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                 "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _text(value: object) -> str:
    """A compiled model's property as plain text: ``f32`` for an element type, ``LATENCY`` for an enum."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    return getattr(value, "name", None) or str(value)


class OpenVinoRunner(Runner):
    """OpenVINO on the CPU, fp32, latency hint; the artifact's precision is what runs."""

    name = "openvino"
    devices = ("cpu",)
    precisions = ("fp32",)
    precision_from_artifact = True
    thread_control = True  # INFERENCE_NUM_THREADS
    shape_fix = "give a clip of that shape, or rebuild the artifact for it"

    def activate_impl(self) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.source.file("model")), str(self.source.file("weights")))
            self.compiled = core.compile_model(model, "CPU", fp32_config(self.threads))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise RunnerError(f"OpenVINO {ov.__version__} cannot load {self.source.file('model')}: {first}; "
                              "rebuild the artifact (vcompile build --force)") from None
        self.settings = {name: _text(self.compiled.get_property(name)) for name in
                         ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                          "DYNAMIC_QUANTIZATION_GROUP_SIZE", "EXECUTION_MODE_HINT")}
        if self.settings["INFERENCE_PRECISION_HINT"] != "f32":
            raise RunnerError(f"OpenVINO compiled the fp32 artifact to run in "
                              f"{self.settings['INFERENCE_PRECISION_HINT']}, not f32")
        self.request = self.compiled.create_infer_request()

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        metadata = {}
        for port in self.compiled.inputs:
            kind = port.get_element_type().get_type_name()
            if kind not in _TYPES:
                raise RunnerError(f"{self.source.file()} input {port.get_any_name()!r} has type {kind}, which "
                                  "vcompile does not feed")
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            metadata[port.get_any_name()] = TensorMetadata(np.dtype(_TYPES[kind]), shape)
        return metadata

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        self.request.infer([video])
        return self.request.get_output_tensor(0).data.copy()

    def deactivate_impl(self) -> None:
        self.request = self.compiled = None
