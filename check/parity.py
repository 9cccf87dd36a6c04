"""Parity: feed the same inputs to every runtime and to PyTorch eager fp32, and say whether they agree.

Each runtime runs its own artifact, built through the cache from the same weights; the reference is the zoo
model in eager fp32 on the CPU. Inputs are seeded clips (standard normal, like normalised video) or real video.

`verify_build` is the check every build gets right after it is built (`vcompile.compile.build`'s ``verify``):
the build's own check clips through the artifact's runtime, once, against the reference, computed once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..compile import Artifact, BuildContext, BuildOptions, build, get_target
from ..data import check_seed, clip_set, load_clip
from ..errors import VcompileError
from ..runtimes import RUNTIMES, load, resolve_runtime
from ..runtimes.precision import native_bf16
from ..zoo import create_model
from .localize import localize_onnx
from .metrics import TOLERANCES, Agreement, Tolerance, compare_logits

__all__ = ["ParityRow", "ParityResult", "PARITY_RUNTIMES", "parity_inputs", "reference_logits", "check_runtime",
           "verify_build", "judge_outputs", "build_verified", "run_parity"]

# Runtimes that parity compares against the reference (torch itself is the reference).
PARITY_RUNTIMES = tuple(name for name, info in RUNTIMES.items() if info.target is not None)


@dataclass(frozen=True)
class ParityRow:
    """One runtime's agreement with the reference for one model."""

    model: str
    runtime: str
    precision: str
    status: str  # "pass", "fail", "unavailable", "error"
    agreement: Agreement | None = None
    message: str = ""
    artifact: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    localization: dict | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["agreement"] = self.agreement.to_dict() if self.agreement else None
        return data


@dataclass(frozen=True)
class ParityResult:
    """The rows of one model, and what the inputs were: how many clips, and notes about the decoded videos."""

    model: str
    rows: list[ParityRow]
    clips: int
    notes: tuple[str, ...] = ()


def parity_inputs(shape: tuple[int, ...], samples: int, seed: int, videos: Sequence[torch.Tensor] = ()) -> list[
        torch.Tensor]:
    """``samples`` seeded clips of ``shape`` (batch included), followed by any real-video clips."""
    clips = clip_set("parity", shape, samples, seed)
    return clips + list(videos)


def reference_logits(model: torch.nn.Module, inputs: list[torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(x).float().numpy() for x in inputs])


def check_runtime(artifact_or_model, runtime: str, inputs: list[torch.Tensor], reference: np.ndarray,
                  tol: Tolerance, precision: str | None = None, threads: int | None = None) -> Agreement:
    """Run ``inputs`` through one runtime and compare with ``reference`` (raises `VcompileError` on failure)."""
    with load(artifact_or_model, runtime, precision=precision, threads=threads) as runner:
        got = np.concatenate([runner.infer(x.numpy()) for x in inputs])
    return compare_logits(reference, got, tol)


def verify_build(artifact: Artifact, ctx: BuildContext) -> dict[str, Any]:
    """A fresh artifact against PyTorch on the build's check clips, in its runtime (the manifest's ``parity``):
    fp32 parity on the traced example, or, for a reduced precision, the accuracy gate on held-apart clips at that
    precision's thresholds (`vcompile.check.metrics.TOLERANCES`).

    ``status`` is ``pass`` or ``fail`` with the agreement, ``error`` with the reason when the runtime cannot load
    or run the artifact, or ``not run`` when the runtime cannot run on this machine (Core ML off macOS; a bf16
    artifact of a CPU runtime on a CPU without native bf16, which would only emulate it).
    """
    runtime = artifact.manifest["runtime"]
    availability = RUNTIMES[runtime].probe()
    if not availability.can_run:
        return {"status": "not run", "runtime": runtime, "reason": availability.detail}
    precision = artifact.manifest["options"]["precision"]
    if precision == "bf16" and RUNTIMES[runtime].default_device == "cpu":
        has_bf16, why = native_bf16()
        if not has_bf16:
            return {"status": "not run", "runtime": runtime, "reason": f"{why}; check it on one that has"}
    reference = np.concatenate([r.float().numpy() for r in ctx.reference()])
    try:
        agreement = check_runtime(artifact, runtime, ctx.check_inputs, reference, TOLERANCES[precision],
                                  precision=precision, threads=torch.get_num_threads())
    except VcompileError as err:
        return {"status": "error", "runtime": runtime, "reason": str(err)}
    return {"status": "pass" if agreement.passed else "fail", "runtime": runtime, "clips": ctx.check_set,
            "batches": [int(x.shape[0]) for x in ctx.check_inputs], **agreement.to_dict()}


def judge_outputs(outputs: list[torch.Tensor], ctx: BuildContext) -> dict[str, Any]:
    """`verify_build`'s verdict on logits a build computed itself on ``ctx.check_inputs`` (an int8 reference model
    in PyTorch, during an accuracy-aware search), at the build precision's thresholds."""
    reference = np.concatenate([r.float().numpy() for r in ctx.reference()])
    got = np.concatenate([o.detach().float().numpy() for o in outputs])
    agreement = compare_logits(reference, got, TOLERANCES[ctx.options.precision])
    return {"status": "pass" if agreement.passed else "fail", "runtime": "pytorch", "clips": ctx.check_set,
            **agreement.to_dict()}


def build_verified(model: str, target: str, options: BuildOptions | None = None, **kwargs) -> Artifact:
    """`vcompile.compile.build` with `verify_build` and `judge_outputs`: how vcompile's commands build (same
    arguments)."""
    return build(model, target, options, verify=verify_build, judge=judge_outputs, **kwargs)


def run_parity(model: str, runtimes: list[str], *, precision: str = "fp32", samples: int = 2, seed: int = 0,
               videos: Sequence[str | Path] = (), tol: Tolerance | None = None, options: BuildOptions | None = None,
               out: Path = Path("artifacts"), threads: int | None = None, localize: bool = False,
               log: Callable[[str], None] | None = None) -> ParityResult:
    """Check every runtime of ``runtimes`` against PyTorch eager fp32 for one model.

    Artifacts are built (or fetched from the cache) at batch 1, so every runtime sees identical clips one at a
    time: ``samples`` seeded clips, then one clip per video file in ``videos``, decoded at the model's clip length
    and size. Runtimes that cannot run here are reported as unavailable rather than skipped silently. With
    ``localize``, a failing onnxruntime row names the first PyTorch module whose output diverges; other runtimes
    report final outputs only.
    """
    if samples < 1 and not videos:
        raise VcompileError("nothing to compare: no seeded clips (--samples 0) and no --video; give --samples 1 or "
                            "more, or a video file")
    options = replace(options or BuildOptions(), batch=1, precision=precision)
    check_seed(seed)
    tol = tol or TOLERANCES[precision]
    log = log or (lambda message: None)
    reference_model = create_model(model, num_classes=options.num_classes, frames=options.frames,
                                   size=options.size, seed=options.seed, weights=options.weights, tiny=options.tiny)
    args, spec = reference_model.build_args, reference_model.spec
    decoded = [load_clip(v, args["frames"], args["size"], spec.mean, spec.std) for v in videos]
    inputs = parity_inputs((1, 3, args["frames"], args["size"], args["size"]), samples, seed,
                           [c.tensor for c in decoded])
    reference = reference_logits(reference_model, inputs)
    rows = []
    for name in runtimes:
        info = resolve_runtime(name)
        availability = info.probe()
        artifact = None
        try:
            if info.target is not None:
                target = get_target(info.target)
                if precision not in target.precisions:
                    rows.append(ParityRow(model, info.name, precision, "unavailable",
                                          message=f"{target.name} builds {', '.join(target.precisions)} only"))
                    continue
                log(f"{model}: building {target.name}")
                artifact = build_verified(model, target.name, options, out=out,
                                          log=lambda stage: log(f"{model}: {stage}"))
            if not availability.can_run:
                rows.append(ParityRow(model, info.name, precision, "unavailable", message=availability.detail,
                                      artifact=str(artifact.file()) if artifact else None))
                continue
            log(f"{model}: running {info.name}")
            source = artifact if artifact is not None else reference_model
            agreement = check_runtime(source, info.name, inputs, reference, tol, precision, threads)
        except VcompileError as err:
            rows.append(ParityRow(model, info.name, precision, "error", message=str(err),
                                  artifact=str(artifact.file()) if artifact else None))
            continue
        row = ParityRow(model, info.name, precision, "pass" if agreement.passed else "fail", agreement,
                        agreement.reason, str(artifact.file()) if artifact else None)
        if localize and not agreement.passed:
            row = _localized(row, reference_model, artifact, inputs, tol, log)
        rows.append(row)
    return ParityResult(model, rows, len(inputs), tuple(n for c in decoded for n in c.notes))


def _localized(row: ParityRow, reference_model, artifact, inputs, tol: Tolerance, log) -> ParityRow:
    """Add where in the network a failing row's mismatch starts (onnxruntime only)."""
    if row.runtime != "onnxruntime":
        return replace(row, notes=(*row.notes, f"localization: onnxruntime only; {row.runtime} reports final "
                                               "outputs"))
    log(f"{row.model}: localizing")
    found = localize_onnx(reference_model, artifact.file(), inputs[0], tol, scopes_from=artifact.file("exported"))
    return replace(row, notes=(*row.notes, found.describe()), localization=found.to_dict())


def check_rows_file(path: Path) -> None:
    """Refuse, before anything is checked, a ``parity --json`` path that cannot be written, or an existing file that
    is not an earlier ``parity --json`` file (it would be replaced, and it is not vcompile's to replace)."""
    path = Path(path)
    if path.exists():
        try:
            rows = json.loads(path.read_bytes()) if path.is_file() else None
        except (UnicodeDecodeError, ValueError):
            rows = None
        if not (isinstance(rows, list) and all(isinstance(r, dict) and {"model", "runtime", "status"} <= r.keys()
                                               for r in rows)):
            raise VcompileError(f"refusing to replace {path}: it is not a vcompile parity --json file; give a new "
                                "file name for --json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VcompileError(f"cannot write {path} ({err.strerror}); choose a writable --json path") from None
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise VcompileError(f"cannot write {path} (permission denied); choose a writable --json path")


def write_rows_file(path: Path, rows: Sequence[ParityRow]) -> None:
    """Write parity rows as JSON, whole or not at all (a temporary file renamed over the target)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    os.replace(tmp, path)
