"""The one contract every runtime follows, in the manner of Polygraphy's runners.

A `Runner` is built from what it runs (an `Artifact`, or a PyTorch module for the torch runtimes), is activated
once (load the file, create the session), and then maps a video clip to logits::

    with load(artifact, "onnxruntime") as runner:
        runner.get_input_metadata()          # {"video": TensorMetadata(float32, (None, 3, T, H, W))}
        logits = runner.infer(clip)          # numpy float32 (B, 3, T, H, W) -> numpy float32 (B, classes)

Every runner class declares what it supports, and the base class holds every request to it:

- ``devices``: the device kinds it runs on. ``cpu`` and ``cuda`` (which also takes ``cuda:N``) are the standard
  kinds; a runner may declare its own (Core ML's compute units: ``all``, ``gpu``, ``ane``). The first is the
  default. `parse_device` is the one parser: ``cudaXYZ``, ``cuda:``, ``cuda:-1`` or ``gpu0`` are errors.
- ``precisions``: what it can execute. An artifact runner (``precision_from_artifact``) runs the precision the
  artifact was built in: ``precision=None`` means the artifact's, and any other precision is an error.
- ``thread_control``: whether it honours ``threads``; a ``threads`` request to a runner that cannot is an error.

A request that cannot be met raises a one-line `RunnerError` at construction, before any optional package is
imported. After activation, `infer` checks its input against `get_input_metadata` (dtype, rank, every static
dimension) before calling `infer_impl`: nothing is cast or reshaped silently.

Subclasses implement `activate_impl`, `get_input_metadata_impl`, `infer_impl` and, if they hold resources,
`deactivate_impl`; the hooks raise when called from anywhere but their public method. For timing, `infer_impl`
may leave work queued on a device; `synchronize` waits for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from ..compile.base import PRECISIONS
from ..errors import VcompileError, first_line

__all__ = ["Runner", "RunnerError", "TensorMetadata", "PRECISIONS", "STANDARD_DEVICES", "parse_device",
           "describe_devices", "artifact_precision", "require_cuda"]

STANDARD_DEVICES = ("cpu", "cuda")  # "cuda" stands for cuda and cuda:N
_CUDA = re.compile(r"cuda(?::(0|[1-9][0-9]*))?")
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class RunnerError(VcompileError):
    """A runtime failed to load or run an artifact; the message names the runtime and the cause."""


class TensorMetadata(NamedTuple):
    """One input of what a runner runs: its dtype and its shape, with None for a dynamic dimension."""

    dtype: np.dtype
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        static = all(d is not None for d in self.shape)
        return f"{_shape(self.shape)} ({'static' if static else 'None: any size'})"


def parse_device(device: Any, kinds: tuple[str, ...] = STANDARD_DEVICES) -> str | None:
    """The device in canonical form (``cpu``, ``cuda``, ``cuda:1``, a runner's own kind) if ``kinds`` has it, else
    None. Exact: ``cuda:N`` takes a non-negative integer without sign or leading zeros; nothing else has an index."""
    if not isinstance(device, str):
        return None
    text = device.strip().lower()
    if text in kinds:
        return text
    if "cuda" in kinds and _CUDA.fullmatch(text):
        return text
    return None


def describe_devices(kinds: tuple[str, ...]) -> str:
    """``cpu, cuda or cuda:N``; ``the CPU only``."""
    if tuple(kinds) == ("cpu",):
        return "the CPU only"
    names = [k for kind in kinds for k in ((kind, "cuda:N") if kind == "cuda" else (kind,))]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def artifact_precision(source: Any) -> str | None:
    """The precision an artifact was built in (its manifest's options), or None for a source without one."""
    manifest = getattr(source, "manifest", None)
    if not isinstance(manifest, dict):
        return None
    return (manifest.get("options") or {}).get("precision")


def require_cuda(runtime: str, device: str) -> None:
    """Raise a one-line `RunnerError` unless ``device`` (``cuda`` or ``cuda:N``) exists on this machine."""
    if not torch.cuda.is_available():
        raise RunnerError(f"the {runtime} runtime was asked for device {device}, but CUDA is not available here; "
                          "use --device cpu")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise RunnerError(f"the {runtime} runtime was asked for device {device}, but this machine has {count} CUDA "
                          f"device(s) (cuda:0 to cuda:{count - 1}); choose one of those")


# hook -> the public method that alone may call it
_HOOKS = {"activate_impl": "activate", "get_input_metadata_impl": "activate", "infer_impl": "infer",
          "bind_impl": "bind", "deactivate_impl": "deactivate"}


def _guarded(hook: str, caller: str, fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if self._inside != caller:
            raise RunnerError(f"{type(self).__name__}.{hook} is a hook called by {caller}() only; "
                              f"call runner.{caller}(...) instead")
        return fn(self, *args, **kwargs)

    wrapper._guarded = True
    return wrapper


class Runner:
    """Base class of all runners.

    Args:
        source: what to run: an `Artifact` of this runner's target, or an `nn.Module` for torch runtimes.
        device: one of `devices` (``cuda`` also as ``cuda:N``); None: the runner's default, ``devices[0]``.
        precision: one of `precisions`. None: the artifact's own precision for artifact runners, fp32 otherwise.
        threads: CPU threads the runtime may use (None: the runtime's default); only where `thread_control`.

    Raises:
        RunnerError: at construction, for a request the runner's declarations do not allow.
    """

    # Declarations: every subclass sets these (checked when the class is defined). ---------------------------
    name: str = "base"
    devices: tuple[str, ...] = ()  # device kinds; the first is the default
    precisions: tuple[str, ...] = ()  # what it can execute
    precision_from_artifact: bool = False  # the precision is the artifact's own; asking for another is an error
    thread_control: bool = False  # whether a threads request is honoured
    shape_fix: str = "give a clip of that shape"  # how to fix an input of the wrong shape
    # What the runtime was set to, read back after `activate` where it can be (recorded with every measurement).
    settings: dict[str, str] = {}  # replaced, never mutated, by the runners that have settings

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        problem = _declaration_problem(cls)
        if problem:
            raise TypeError(f"{cls.__name__}: {problem}")
        for hook, caller in _HOOKS.items():
            fn = cls.__dict__.get(hook)
            if fn is not None and not getattr(fn, "_guarded", False):
                setattr(cls, hook, _guarded(hook, caller, fn))

    def __init__(self, source: Any, device: str | None = None, precision: str | None = None,
                 threads: int | None = None):
        self.source = source
        self.device, self.precision, self.threads = self.check_request(device, precision, threads, source)
        self.is_active = False
        self._inside: str | None = None
        self._input_metadata: dict[str, TensorMetadata] | None = None

    @classmethod
    def check_request(cls, device: str | None = None, precision: str | None = None, threads: int | None = None,
                      source: Any = None) -> tuple[str, str | None, int | None]:
        """``(device, precision, threads)`` as the runner will use them, or a one-line `RunnerError` saying what
        was asked, what this runner supports and how to fix it. Imports nothing; needs no package but the core.

        The precision comes back None only for an artifact runner given neither a precision nor an artifact."""
        runtime = f"the {cls.name} runtime"
        default = cls.devices[0]
        parsed = default if device is None else parse_device(device, cls.devices)
        if parsed is None:
            raise RunnerError(f"{runtime} runs on {describe_devices(cls.devices)}, not {device!r}; "
                              f"use --device {default}")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
                raise RunnerError(f"threads must be a positive integer, or None for {runtime}'s default; "
                                  f"got {threads!r}")
            threads = int(threads)
            if not cls.thread_control:
                raise RunnerError(f"{runtime} has no thread setting, so threads={threads} cannot be honoured; "
                                  "pass threads=None (omit --threads)")
        what = " artifacts" if cls.precision_from_artifact else ""
        if precision is not None and precision not in cls.precisions:
            raise RunnerError(f"{runtime} runs {_either(cls.precisions)}{what}, not {precision!r}; "
                              f"choose {_either(cls.precisions)}")
        if not cls.precision_from_artifact:
            return parsed, precision or cls.precisions[0], threads
        built = artifact_precision(source)
        if built is None:
            return parsed, precision, threads
        if built not in cls.precisions:
            raise RunnerError(f"{runtime} runs {_either(cls.precisions)} artifacts; this one is {built}")
        if precision is not None and precision != built:
            raise RunnerError(f"{runtime} runs an artifact in the precision it was built in: this one is {built}, "
                              f"not {precision}; pass precision={built!r} (or None), or build the artifact in "
                              f"{precision}")
        return parsed, built, threads

    # The contract -------------------------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            try:
                self._call("activate_impl")
                try:
                    self._input_metadata = self._checked_metadata(self._call("get_input_metadata_impl"))
                except BaseException:
                    self._call("deactivate_impl")
                    raise
            except VcompileError:
                raise
            except Exception as err:  # noqa: BLE001 - a runtime's own exception becomes one clear error
                raise RunnerError(f"{self.name} could not load {self._what()}: {_first_line(err)}") from err
            self.is_active = True
        return self

    def get_input_metadata(self) -> dict[str, TensorMetadata]:
        """Input name -> `TensorMetadata` (dtype, shape with None for a dynamic dimension) of what runs."""
        self._require_active()
        return dict(self._input_metadata)

    def infer(self, video: np.ndarray) -> np.ndarray:
        """Run one batch: float32 (B, 3, T, H, W) in, float32 (B, classes) logits out.

        The input must match `get_input_metadata` (dtype, rank, every static dimension); it is never cast."""
        self._require_active()
        ((name, meta),) = self._input_metadata.items()
        self._check_input(name, meta, video)
        video = np.ascontiguousarray(video)
        try:
            out = self._call("infer_impl", video)
            self.synchronize()
        except VcompileError:
            raise
        except Exception as err:  # noqa: BLE001
            raise RunnerError(f"{self.name} failed to run {self._what()}: {_first_line(err)}") from err
        return np.asarray(out, dtype=np.float32)

    def bind(self, video: np.ndarray) -> tuple[Callable[[], None], bool]:
        """A step that computes on ``video`` without the transfers `infer` makes: the input placed once where the
        runtime computes (a device tensor, an I/O binding, a request's input tensor), the output left there.
        Returns ``(step, separate)``; ``separate`` is False where the runtime takes and returns host arrays
        itself, so its compute cannot be timed apart from `infer` (then ``step`` is `infer` on ``video``). Time
        the step with `synchronize` after it, as `infer` does."""
        self._require_active()
        ((name, meta),) = self._input_metadata.items()
        self._check_input(name, meta, video)
        video = np.ascontiguousarray(video)
        step = self._call("bind_impl", video)
        if step is None:
            return (lambda: self.infer(video)), False

        def compute() -> None:
            try:
                step()
            except VcompileError:
                raise
            except Exception as err:  # noqa: BLE001
                raise RunnerError(f"{self.name} failed to run {self._what()}: {_first_line(err)}") from err

        return compute, True

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on the CPU."""

    def deactivate(self) -> None:
        if self.is_active:
            self._call("deactivate_impl")
            self.is_active = False
            self._input_metadata = None

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc_info) -> None:
        self.deactivate()

    # Hooks for subclasses ------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def get_input_metadata_impl(self) -> dict[str, TensorMetadata]:
        """Called once, right after `activate_impl`."""
        raise NotImplementedError

    def infer_impl(self, video: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def bind_impl(self, video: np.ndarray) -> Callable[[], None] | None:
        """The compute-only step of `bind`; None (the default): the runtime cannot separate it from `infer`."""
        return None

    def deactivate_impl(self) -> None:
        """Release what `activate_impl` acquired (default: nothing to release)."""

    # Internals -----------------------------------------------------------------------------------------------
    def _call(self, hook: str, *args):
        outer, self._inside = self._inside, _HOOKS[hook]
        try:
            return getattr(self, hook)(*args)
        finally:
            self._inside = outer

    def _require_active(self) -> None:
        if not self.is_active:
            raise RunnerError(f"{self.name} runner used before activate(); use it as a context manager")

    def _checked_metadata(self, metadata) -> dict[str, TensorMetadata]:
        items = dict(metadata or {})
        if len(items) != 1:
            raise RunnerError(f"{self.name}: {self._what()} has {len(items)} inputs ({', '.join(items)}); "
                              "vcompile runs models with one video input")
        return {name: TensorMetadata(np.dtype(dtype), tuple(None if d is None else int(d) for d in shape))
                for name, (dtype, shape) in items.items()}

    def _check_input(self, name: str, meta: TensorMetadata, video: Any) -> None:
        where = f"{self.name} failed to run {self._what()}: input {name!r}"
        if not isinstance(video, np.ndarray):
            raise RunnerError(f"{where} must be a numpy array, not {type(video).__name__}; pass tensor.numpy()")
        if video.dtype != meta.dtype:
            raise RunnerError(f"{where} is {video.dtype}, but it takes {meta.dtype}; convert it with "
                              f".astype(np.{meta.dtype})")
        if len(video.shape) != len(meta.shape) or any(
                want is not None and want != got for want, got in zip(meta.shape, video.shape)):
            raise RunnerError(f"{where} has shape {_shape(video.shape)}, but it takes input shape "
                              f"{meta.describe()}; {self.shape_fix}")

    def _what(self) -> str:
        path = getattr(self.source, "path", None)
        return str(path) if path is not None else type(self.source).__name__


# The one hook with a default: guarded like those the runners define.
Runner.bind_impl = _guarded("bind_impl", "bind", Runner.bind_impl)


def _declaration_problem(cls) -> str | None:
    """What is wrong with a runner class's declarations, or None."""
    if not isinstance(cls.name, str) or not _NAME.fullmatch(cls.name):
        return f"name must be a lower-case identifier, not {cls.name!r}"
    if not isinstance(cls.devices, tuple) or not cls.devices or any(
            not isinstance(d, str) or not _NAME.fullmatch(d) for d in cls.devices) or len(set(cls.devices)) != len(
            cls.devices):
        return f"devices must be a non-empty tuple of distinct lower-case kinds without index, not {cls.devices!r}"
    if not isinstance(cls.precisions, tuple) or not cls.precisions or not set(cls.precisions) <= set(PRECISIONS):
        return f"precisions must be a non-empty tuple drawn from {PRECISIONS}, not {cls.precisions!r}"
    for flag in ("precision_from_artifact", "thread_control"):
        if not isinstance(getattr(cls, flag), bool):
            return f"{flag} must be True or False, not {getattr(cls, flag)!r}"
    return None


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _first_line(err: BaseException) -> str:
    """The error's type and its first informative line (`vcompile.errors.first_line`)."""
    line = first_line(err)
    return f"{type(err).__name__}: {line}" if line else type(err).__name__
