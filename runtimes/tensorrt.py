"""TensorRT runner: runs a tensorrt `Artifact` (``model.plan``) on an NVIDIA GPU with TensorRT 10's tensor API.

Device buffers are torch CUDA tensors (no pycuda or cuda-python needed); every I/O tensor is bound by name with
``set_tensor_address`` and the engine is enqueued with ``execute_async_v3`` on the runner's own CUDA stream.
`enqueue` runs on device tensors and returns without waiting, so a benchmark can time it with CUDA events on
`stream` and call `synchronize`; `infer` copies in and out and waits.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Runner, RunnerError, TensorMetadata, require_cuda

__all__ = ["TensorRTRunner"]


class TensorRTRunner(Runner):
    """A deserialized engine and one execution context; the engine's precision is what runs.

    Its input metadata is the engine's: a dimension of -1 (the batch of a profile) is dynamic; the profile's
    bounds are checked when a batch is enqueued.
    """

    name = "tensorrt"
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "bf16")
    precision_from_artifact = True
    thread_control = False
    shape_fix = "give a clip of that shape, or rebuild the engine for it"

    def activate_impl(self) -> None:
        import tensorrt as trt

        require_cuda(self.name, self.device)
        self.torch_device = torch.device(self.device)
        info = self.source.manifest.get("info", {})
        major, minor = torch.cuda.get_device_capability(self.torch_device)
        built = (info.get("gpu_capability"), info.get("tensorrt"))
        here = (f"{major}.{minor}", trt.__version__)
        if built != here:
            raise RunnerError(f"this engine was built for compute capability {built[0]} with TensorRT {built[1]}; "
                              f"this GPU is {here[0]} with TensorRT {here[1]}; rebuild it here (engines are not "
                              "portable)")
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.source.file().read_bytes())
        if self.engine is None:
            raise RunnerError(f"TensorRT could not deserialize {self.source.file()}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream(device=self.torch_device)
        self._dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                        trt.DataType.BF16: torch.bfloat16, trt.DataType.INT32: torch.int32,
                        trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}
        self._numpy = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
                       trt.DataType.INT64: np.int64, trt.DataType.BOOL: np.bool_}
        self._held: list = []

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        metadata = {}
        for name in self.inputs:
            dtype = self.engine.get_tensor_dtype(name)
            if dtype not in self._numpy:
                raise RunnerError(f"{self.source.file()} input {name!r} is {dtype}, which vcompile does not feed")
            shape = tuple(None if d < 0 else int(d) for d in self.engine.get_tensor_shape(name))
            metadata[name] = TensorMetadata(np.dtype(self._numpy[dtype]), shape)
        return metadata

    def enqueue(self, video):
        """Queue one batch on `stream`: a CUDA tensor (B, 3, T, H, W) in, the logits tensor out (not yet ready)."""
        name = self.inputs[0]
        with torch.cuda.stream(self.stream):
            video = video.to(self.torch_device, self._dtypes[self.engine.get_tensor_dtype(name)]).contiguous()
            if not self.context.set_input_shape(name, tuple(video.shape)):
                profile = self.engine.get_tensor_profile_shape(name, 0)
                raise RunnerError(f"input shape {tuple(video.shape)} is outside the engine's profile "
                                  f"(min {tuple(profile[0])}, max {tuple(profile[2])}); rebuild with larger max_batch")
            self.context.set_tensor_address(name, video.data_ptr())
            outputs = {}
            for out in self.outputs:
                shape = tuple(self.context.get_tensor_shape(out))
                outputs[out] = torch.empty(shape, dtype=self._dtypes[self.engine.get_tensor_dtype(out)],
                                           device=self.torch_device)
                self.context.set_tensor_address(out, outputs[out].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RunnerError("TensorRT's execute_async_v3 failed (see its log above)")
        self._held = [video, *outputs.values()]  # alive until the stream has used them
        return outputs[self.outputs[0]]

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        logits = self.enqueue(torch.from_numpy(video).pin_memory())
        with torch.cuda.stream(self.stream):
            host = logits.float().cpu()
        self.synchronize()
        return host.numpy()

    def bind_impl(self, video: np.ndarray):
        resident = torch.from_numpy(video).to(self.torch_device)  # the input already on the GPU
        return lambda: self.enqueue(resident)

    def synchronize(self) -> None:
        if getattr(self, "stream", None) is not None:
            self.stream.synchronize()

    def deactivate_impl(self) -> None:
        self.synchronize()
        self._held, self.context, self.engine, self.runtime, self.stream = [], None, None, None, None
