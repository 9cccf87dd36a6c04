"""ExecuTorch runner: loads a ``.pte`` program through ``executorch.runtime`` and runs its ``forward`` method.

XNNPACK's work runs on one process-wide thread pool, by default as large as the machine's core count. ``threads``
resizes it through the pybindings' ``_unsafe_reset_threadpool`` (an experimental API, the only one the Python
runtime exposes); the pool is shared, so the last runner activated sets the size for every ExecuTorch program in the
process. Programs have a static input shape: the batch they were built for.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import numpy as np
import torch

from .base import Runner, RunnerError, TensorMetadata

__all__ = ["ExecuTorchRunner", "set_threadpool_size", "INPUT_NAME"]

INPUT_NAME = "video"


def set_threadpool_size(threads: int) -> int:
    """Resize ExecuTorch's CPU thread pool (used by XNNPACK); returns the size now in effect."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    return portable_lib._threadpool_get_thread_count()


# ExecuTorch's CPU probe logs these on every x86 machine (it looks for ARM's identification files); they say nothing.
_NOISE = ("[cpuinfo_utils.cpp",)


@contextlib.contextmanager
def _filtered_stderr():
    """Run native code with file descriptor 2 captured, then pass on what it wrote except `_NOISE` lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not line.startswith(_NOISE)))


class ExecuTorchRunner(Runner):
    """Runs an executorch `Artifact` (``model.pte``) on the CPU, with the static input shape it was built for."""

    name = "executorch"
    devices = ("cpu",)
    precisions = ("fp32", "int8")
    precision_from_artifact = True
    thread_control = True  # the XNNPACK thread pool (process-wide; see set_threadpool_size)
    shape_fix = "rebuild it for that batch and clip size (ExecuTorch programs are static)"

    def activate_impl(self) -> None:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        with _filtered_stderr():
            if self.threads:
                set_threadpool_size(self.threads)
            self.program = Runtime.get().load_program(self.source.file())
            self.method = self.program.load_method("forward")
        # XNNPACK's work runs on this pool; the portable kernels run on the calling thread.
        self.settings = {"threadpool_threads": str(portable_lib._threadpool_get_thread_count())}
        if self.method is None:
            raise RunnerError(f"{self.source.file()} has no 'forward' method")

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        return {INPUT_NAME: TensorMetadata(np.dtype(np.float32), tuple(self.source.input_shape))}

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        outputs = self.method.execute([torch.from_numpy(video)])
        return outputs[0].numpy()

    def bind_impl(self, video: np.ndarray):
        resident = [torch.from_numpy(video)]
        return lambda: self.method.execute(resident)

    def deactivate_impl(self) -> None:
        self.method = None
        self.program = None
