"""The one contract every runtime follows, in the manner of Polygraphy's runners.

A `Runner` is built from what it runs (an `Artifact`, or a PyTorch module for the torch runtimes), is activated
once (load the file, create the session), and then maps a video clip to logits::

    with load(artifact, "onnxruntime") as runner:
        logits = runner.infer(clip)          # numpy float32 (B, 3, T, H, W) -> numpy float32 (B, classes)

Subclasses implement `activate_impl`, `infer_impl` and, if they hold resources, `deactivate_impl`. For timing,
`infer_impl` may leave work queued on a device; `synchronize` waits for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vcompile.errors import VcompileError

__all__ = ["Runner", "RunnerError"]


class RunnerError(VcompileError):
    """A runtime failed to load or run an artifact; the message names the runtime and the cause."""


class Runner:
    """Base class of all runners.

    Args:
        source: what to run: an `Artifact` of this runner's target, or an `nn.Module` for torch runtimes.
        device: ``cpu`` or ``cuda[:N]``.
        precision: ``fp32``, ``fp16`` or ``bf16`` (what the runtime executes in; artifacts carry their own).
        threads: CPU threads the runtime may use (None: the runtime's default).
    """

    name = "base"

    def __init__(self, source: Any, device: str = "cpu", precision: str = "fp32", threads: int | None = None):
        self.source = source
        self.device = device
        self.precision = precision
        self.threads = threads
        self.is_active = False

    # The contract -------------------------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            try:
                self.activate_impl()
            except VcompileError:
                raise
            except Exception as err:  # noqa: BLE001 - a runtime's own exception becomes one clear error
                raise RunnerError(f"{self.name} could not load {self._what()}: {_first_line(err)}") from err
            self.is_active = True
        return self

    def infer(self, video: np.ndarray) -> np.ndarray:
        """Run one batch: float32 (B, 3, T, H, W) in, float32 (B, classes) logits out."""
        if not self.is_active:
            raise RunnerError(f"{self.name} runner used before activate(); use it as a context manager")
        video = np.ascontiguousarray(video, dtype=np.float32)
        try:
            out = self.infer_impl(video)
            self.synchronize()
        except VcompileError:
            raise
        except Exception as err:  # noqa: BLE001
            raise RunnerError(f"{self.name} failed to run {self._what()}: {_first_line(err)}") from err
        return np.asarray(out, dtype=np.float32)

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on the CPU."""

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc_info) -> None:
        self.deactivate()

    # Hooks for subclasses ------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        """Release what `activate_impl` acquired (default: nothing to release)."""

    def _what(self) -> str:
        path = getattr(self.source, "path", None)
        return str(path) if path is not None else type(self.source).__name__


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__
