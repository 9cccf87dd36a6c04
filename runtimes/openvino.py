"""OpenVINO runner: compiles an openvino `Artifact` (IR) for the CPU and runs it with one synchronous request.

Settings, all stated and read back from the compiled model (`OpenVinoRunner.settings`): the thread count
(``INFERENCE_NUM_THREADS``), the latency performance hint (one request, one stream: what batch-1 and batch
inference time), and the execution precision of the artifact: f32 for an fp32 artifact, bf16 for a bf16 one
(the same fp32 IR, compiled to run in bf16; only on a CPU with native bf16). Left to its defaults, OpenVINO's CPU
plugin runs in bf16 on a CPU that has native bf16 (AVX-512 BF16, AMX), and may quantize the activations of matrix
products to int8 on the fly (``DYNAMIC_QUANTIZATION_GROUP_SIZE``); vcompile states the precision and turns the
dynamic quantization off, so that an artifact computes in the precision its manifest names. The precision that runs
is read back, never assumed: a compiled model that would run another one is refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import first_line
from .base import Runner, RunnerError, TensorMetadata

__all__ = ["OpenVinoRunner", "compile_config", "OV_PRECISION"]

_TYPES = {"f32": np.float32, "f16": np.float16, "f64": np.float64, "i64": np.int64, "i32": np.int32}


# vcompile's precision -> OpenVINO's INFERENCE_PRECISION_HINT. An int8 IR runs its quantized layers in int8 and
# the rest in f32 (never silently in bf16).
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def compile_config(precision: str, threads: int | None) -> dict[str, object]:
    """The CPU compile configuration of an artifact of ``precision`` (fp32, bf16 or int8)."""
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
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
    """OpenVINO on the CPU, latency hint; the artifact's precision (fp32, bf16 or int8) is what runs."""

    name = "openvino"
    devices = ("cpu",)
    precisions = ("fp32", "bf16", "int8")
    precision_from_artifact = True
    thread_control = True  # INFERENCE_NUM_THREADS
    shape_fix = "give a clip of that shape, or rebuild the artifact for it"

    def activate_impl(self) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(self.source.file("model")), str(self.source.file("weights")))
            self.compiled = core.compile_model(model, "CPU", compile_config(self.precision, self.threads))
        except RuntimeError as err:
            first = first_line(err) or type(err).__name__
            raise RunnerError(f"OpenVINO {ov.__version__} cannot load {self.source.file('model')}: {first}; "
                              "rebuild the artifact (vcompile build --force)") from None
        self.settings = {name: _text(self.compiled.get_property(name)) for name in
                         ("INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                          "DYNAMIC_QUANTIZATION_GROUP_SIZE", "EXECUTION_MODE_HINT")}
        ran, wanted = self.settings["INFERENCE_PRECISION_HINT"], OV_PRECISION[self.precision]
        if ran != wanted:
            raise RunnerError(f"OpenVINO compiled the {self.precision} artifact to run in {ran}, not {wanted}"
                              + (": this CPU has no native bf16" if wanted == "bf16" else ""))
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

    def bind_impl(self, video: np.ndarray):
        import openvino as ov

        request = self.compiled.create_infer_request()  # its own, so `infer` keeps working beside it
        request.set_input_tensor(ov.Tensor(video, shared_memory=True))
        return request.infer

    def deactivate_impl(self) -> None:
        self.request = self.compiled = None
