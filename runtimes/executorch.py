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

from vcompile.runtimes.base import Runner, RunnerError

__all__ = ["ExecuTorchRunner", "set_threadpool_size"]


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
    """Runs an executorch `Artifact` (``model.pte``) on the CPU."""

    name = "executorch"

    def activate_impl(self) -> None:
        from executorch.runtime import Runtime

        if self.device != "cpu":
            raise RunnerError(f"the {self.name} runtime runs on the CPU here, not on {self.device}")
        if self.precision != "fp32":
            raise RunnerError(f"the {self.name} runtime runs fp32 programs, not {self.precision}")
        with _filtered_stderr():
            if self.threads:
                set_threadpool_size(self.threads)
            self.input_shape = tuple(self.source.input_shape)
            self.program = Runtime.get().load_program(self.source.file())
            self.method = self.program.load_method("forward")
        if self.method is None:
            raise RunnerError(f"{self.source.file()} has no 'forward' method")

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        if video.shape != self.input_shape:
            raise RunnerError(f"this {self.name} program takes input shape {self.input_shape} (static), "
                              f"got {video.shape}; rebuild it for that batch and clip size")
        outputs = self.method.execute([torch.from_numpy(video)])
        return outputs[0].numpy()

    def deactivate_impl(self) -> None:
        self.method = None
        self.program = None
