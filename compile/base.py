"""What every compile target shares: build options, the target description, the build context and the artifact."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import calibration_clips, clip_set

__all__ = ["PRECISIONS", "PRECISION_NOTES", "CALIBRATION_CLIPS", "UNVERIFIED", "BuildOptions", "Target", "BuildContext",
           "TargetResult", "Artifact", "Verifier", "Judge", "module_path", "MAX_FLOAT_SHARE", "float_counts"]

# Numeric precisions, as data: what each means is in `PRECISION_NOTES`; which targets build and which runtimes run
# each is in `Target.precisions` and `Runner.precisions`; int8 and the float16s are judged by the accuracy gate.
PRECISION_NOTES = {
    "fp32": "32-bit float, the reference every artifact is checked against",
    "fp16": "IEEE half precision: CUDA (TensorRT, autocast), Core ML; on a CPU only where a runtime says so",
    "bf16": "bfloat16: CUDA, and CPUs with native bf16 (AVX-512 BF16, AMX, Arm BF16); never emulated",
    "int8": "8-bit integers by post-training quantization on calibration clips, behind the accuracy gate",
}
PRECISIONS = tuple(PRECISION_NOTES)
# Accuracy-aware int8: when a quantized artifact fails its gate, its most sensitive layers go back to float, in
# doubling numbers (`float_counts`), until it passes or this share of its quantizable layers is float.
MAX_FLOAT_SHARE = 0.25


def float_counts(layers: int) -> list[int]:
    """How many layers to keep float at each accuracy-aware attempt: 1, 2, 4, ... up to `MAX_FLOAT_SHARE` of
    ``layers`` (at least 1), that limit last."""
    limit = max(1, int(layers * MAX_FLOAT_SHARE))
    counts = [1]
    while counts[-1] * 2 < limit:
        counts.append(counts[-1] * 2)
    return counts + [limit] if counts[-1] < limit else counts


# Seeded clips an int8 build calibrates on, from `vcompile.data`'s "calibration" set (the gate never sees them).
CALIBRATION_CLIPS = 8
# The manifest's "parity" of an artifact built without a verifier (`vcompile.compile.build` called on its own).
UNVERIFIED = {"status": "unverified", "reason": "built without a verifier; vcompile's commands verify every build"}


def module_path(node: torch.fx.Node) -> str | None:
    """The PyTorch module a graph node came from (``blocks.3.attn.proj``), from ``torch.export``'s module stack;
    None for a node outside any submodule. Used by the targets' ``--explain`` to name what they leave out."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = next(reversed(stack.values()))[0]
    return path.removeprefix("L['self'].").removeprefix("L__self__.") or None


@dataclass(frozen=True)
class BuildOptions:
    """Everything about a build besides the model name and the target; all of it enters the cache key.

    Args:
        precision: numeric precision of the artifact (what each target supports is in `Target.precisions`).
        batch: batch size of the example input; targets with static shapes are built for exactly this batch,
            targets with dynamic batch (onnx, tensorrt profiles) take it as the optimum.
        frames, size, num_classes, tiny: passed to `vcompile.zoo.create_model` (None: the model's defaults).
        seed: seed of the random weights and of the example input.
        weights: a local weights file replacing the random weights.
        exporter: how the PyTorch graph is captured where a target has a choice (onnx: ``dynamo``,
            ``torchscript`` or ``auto``).
        max_batch: the largest batch an engine with a batch profile accepts (tensorrt; None: max(batch, 32)).
        calibration: a folder of videos an int8 build calibrates on (`vcompile.data.calibration_videos`); None:
            seeded clips. The cache key holds the videos' contents, not the folder's name.
    """

    precision: str = "fp32"
    batch: int = 1
    frames: int | None = None
    size: int | None = None
    num_classes: int | None = None
    seed: int = 0
    weights: str | None = None
    tiny: bool = False
    exporter: str = "auto"
    max_batch: int | None = None
    calibration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TargetResult:
    """What a target's build function returns: its files by role, and target-specific manifest entries."""

    files: dict[str, str]  # role -> file name inside the artifact folder; role "model" is the one a runtime loads
    info: dict[str, Any] = field(default_factory=dict)
    # The verification a target already ran on exactly these files through `BuildContext.verify` (onnx verifies
    # each exporter's graph, to fall back on the other when one does not run); None: `build` verifies them.
    parity: dict[str, Any] | None = None


@dataclass
class BuildContext:
    """What a target's build function receives. Files go into ``out_dir``; time stages with ``stage``.

    ``check_inputs`` are the seeded clips a build is verified on (``check_set`` names their set in
    `vcompile.data.CLIP_SETS`): for fp32, the example at the build batch and, for targets with a dynamic batch, a
    second clip at another batch; for a reduced precision, the accuracy gate's ``held_apart`` clips, which no
    calibration ever sees. `reference` gives the PyTorch outputs on them, computed once per build however often the
    build is verified.
    """

    model: nn.Module  # eval mode, fp32, on the CPU, seeded or loaded weights
    example: torch.Tensor  # (batch, 3, T, H, W), seeded
    options: BuildOptions
    out_dir: Path
    stages: dict[str, float] = field(default_factory=dict)
    dependency: Artifact | None = None  # the artifact this target builds from (tensorrt: the onnx artifact)
    cache_root: Path = Path("artifacts")  # the output folder; targets keep persistent caches under cache_root/cache
    log: Callable[[str], None] = lambda message: None
    # Targets that accelerate only part of a graph call this, as soon as they know, with what runs outside the
    # accelerator (`vcompile build --explain`); the same dict goes into the manifest's info as "explain".
    explain: Callable[[dict[str, Any]], None] = lambda explanation: None
    check_inputs: list[torch.Tensor] = field(default_factory=list)
    check_set: str = "trace"
    # Set by `vcompile.compile.build`: checks the files written so far (role -> name) and returns the manifest's
    # "parity" entry; `UNVERIFIED` when the build has no verifier.
    verify: Callable[[dict[str, str]], dict[str, Any]] = lambda files: dict(UNVERIFIED)
    # Set by `vcompile.compile.build` when the caller gave a judge: the verification's verdict on outputs the build
    # computed itself on ``check_inputs`` (an int8 reference model run in PyTorch), far cheaper than lowering and
    # running each candidate of an accuracy-aware search; None: no such shortcut, verify the files.
    judge: Callable[[list[torch.Tensor]], dict[str, Any]] | None = None
    # The videos of ``options.calibration`` (checked) and the model's input normalisation, to decode them with.
    calibration_videos: list[Path] = field(default_factory=list)
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = ((0.0,) * 3, (1.0,) * 3)
    _reference: list[torch.Tensor] | None = field(default=None, repr=False)
    _calibration: list[torch.Tensor] | None = field(default=None, repr=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record how long a build stage takes (``with ctx.stage("export"): ...``)."""
        self.log(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - start, 3)

    def calibration(self) -> list[torch.Tensor]:
        """The clips an int8 build calibrates on, one clip each (batch 1): one per video of the calibration
        folder when the build has one, else `CALIBRATION_CLIPS` of the "calibration" set for the build's seed;
        never the gate's held-apart clips. Decoded once per build."""
        if self._calibration is None:
            _, _, frames, size, _ = self.example.shape
            self._calibration = (calibration_clips(self.calibration_videos, frames, size, *self.normalization)
                                 if self.calibration_videos else
                                 clip_set("calibration", (1, *self.example.shape[1:]), CALIBRATION_CLIPS,
                                          self.options.seed))
        return self._calibration

    def calibration_info(self) -> dict[str, Any]:
        """What the build calibrated on, for its manifest."""
        if self.calibration_videos:
            return {"set": "videos", "folder": self.options.calibration, "videos": len(self.calibration_videos)}
        return {"set": "calibration", "clips": CALIBRATION_CLIPS}

    def reference(self) -> list[torch.Tensor]:
        """PyTorch eager fp32 outputs on ``check_inputs`` (computed on first use, then reused)."""
        if self._reference is None:
            with torch.inference_mode():
                self._reference = [self.model(x) for x in self.check_inputs]
        return self._reference


@dataclass(frozen=True)
class Target:
    """A compile target: how to build an artifact from a PyTorch model, and what that needs.

    Args:
        name: canonical name (``onnx``, ``tensorrt``, ``coreml``, ``executorch``, ``ptl``).
        build: the function that writes the artifact's files.
        versions: the versions of the compilers it uses; they enter the cache key.
        requires: import names of the packages it needs beyond vcompile's core.
        extra: the pip extra that installs them.
        precisions: the precisions it can build.
        default_precision: the precision built when none is asked for (coreml: fp16).
        runtime: the runtime that runs its artifacts.
        depends_on: a target whose artifact it is built from.
        int8_from: for an int8 build, the target whose fp32 artifact it quantizes (``ctx.dependency``), where that
            differs from ``depends_on`` (onnx quantizes its own fp32 graph).
        dynamic_batch: whether its artifacts take other batches than the one built for (verified at two).
        needs: why it cannot build here beyond missing packages (e.g. no GPU); None if it can.
    """

    name: str
    build: Callable[[BuildContext], TargetResult]
    versions: Callable[[], dict[str, str]]
    runtime: str
    requires: tuple[str, ...] = ()
    extra: str | None = None
    precisions: tuple[str, ...] = ("fp32",)
    default_precision: str = "fp32"
    depends_on: str | None = None
    int8_from: str | None = None
    dynamic_batch: bool = False
    needs: Callable[[], str | None] = lambda: None

    def unavailable_reason(self) -> str | None:
        """Why this target cannot build on this machine, with the fix; None if it can."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                fix = f'pip install "vcompile[{self.extra}]"' if self.extra else f"pip install {module}"
                return f"the {self.name} target needs the '{module}' package, which is not installed; {fix}"
        return self.needs()


@dataclass(frozen=True)
class Artifact:
    """A built artifact: a folder of files plus its manifest (see `vcompile.compile.cache`)."""

    model: str
    target: str
    key: str
    path: Path
    manifest: dict[str, Any]
    cached: bool = False

    def file(self, role: str = "model") -> Path:
        """Path of one of the artifact's files, by role."""
        return self.path / self.manifest["files"][role]["name"]

    @property
    def options(self) -> BuildOptions:
        return BuildOptions(**self.manifest["options"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input_shape"])

    @property
    def size_bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())

    def __str__(self) -> str:
        return json.dumps({"model": self.model, "target": self.target, "path": str(self.path)})


# What the layer above `compile` passes to `vcompile.compile.build` to check an artifact right after it is built
# (`vcompile.check.parity.verify_build`): the artifact (its files still in the staging folder) and the build's
# context, for `BuildContext.check_inputs` and `BuildContext.reference`; it returns the manifest's "parity" entry.
Verifier = Callable[[Artifact, BuildContext], dict[str, Any]]
# Judges outputs computed on ``ctx.check_inputs`` as the verifier would judge the artifact's (see `BuildContext.judge`).
Judge = Callable[[list[torch.Tensor], BuildContext], dict[str, Any]]
