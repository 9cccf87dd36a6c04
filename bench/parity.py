"""Parity: feed the same inputs to every runtime and to PyTorch eager fp32, and say whether they agree.

Each runtime runs its own artifact, built through the cache from the same weights; the reference is the zoo
model in eager fp32 on the CPU. Inputs are seeded clips (standard normal, like normalised video) or real video.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vcompile.bench.metrics import TOLERANCES, Agreement, Tolerance, compare_logits
from vcompile.compile import BuildOptions, build, example_input
from vcompile.errors import VcompileError
from vcompile.runtimes import RUNTIMES, load, resolve_runtime

__all__ = ["ParityRow", "parity_inputs", "reference_logits", "check_runtime", "run_parity", "PARITY_RUNTIMES"]

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


def parity_inputs(shape: tuple[int, ...], samples: int, seed: int, videos: list[torch.Tensor] = ()) -> list[
        torch.Tensor]:
    """``samples`` seeded clips of ``shape`` (batch included), followed by any real-video clips."""
    clips = [example_input(shape, seed + 1000 + i) for i in range(samples)]
    return clips + list(videos)


def reference_logits(model: torch.nn.Module, inputs: list[torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(x).float().numpy() for x in inputs])


def check_runtime(artifact_or_model, runtime: str, inputs: list[torch.Tensor], reference: np.ndarray,
                  tol: Tolerance, precision: str = "fp32", threads: int | None = None) -> Agreement:
    """Run ``inputs`` through one runtime and compare with ``reference`` (raises `VcompileError` on failure)."""
    with load(artifact_or_model, runtime, precision=precision, threads=threads) as runner:
        got = np.concatenate([runner.infer(x.numpy()) for x in inputs])
    return compare_logits(reference, got, tol)


def run_parity(model: str, runtimes: list[str], *, precision: str = "fp32", samples: int = 2, seed: int = 0,
               videos: list[torch.Tensor] = (), tol: Tolerance | None = None, options: BuildOptions | None = None,
               out: Path = Path("artifacts"), threads: int | None = None, localize: bool = False,
               log: Callable[[str], None] | None = None) -> list[ParityRow]:
    """Check every runtime of ``runtimes`` against PyTorch eager fp32 for one model.

    Artifacts are built (or fetched from the cache) at batch 1, so every runtime sees identical clips one at a
    time; runtimes that cannot run here are reported as unavailable rather than skipped silently. With
    ``localize``, a failing onnxruntime row names the first PyTorch module whose output diverges; other runtimes
    report final outputs only.
    """
    from vcompile.compile import get_target
    from vcompile.zoo import create_model

    options = replace(options or BuildOptions(), batch=1, precision=precision)
    tol = tol or TOLERANCES[precision]
    log = log or (lambda message: None)
    reference_model = create_model(model, num_classes=options.num_classes, frames=options.frames,
                                   size=options.size, seed=options.seed, weights=options.weights, tiny=options.tiny)
    args = reference_model.build_args
    inputs = parity_inputs((1, 3, args["frames"], args["size"], args["size"]), samples, seed, videos)
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
                artifact = build(model, target.name, options, out=out, log=lambda stage: log(f"{model}: {stage}"))
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
    return rows


def _localized(row: ParityRow, reference_model, artifact, inputs, tol: Tolerance, log) -> ParityRow:
    """Add where in the network a failing row's mismatch starts (onnxruntime only)."""
    if row.runtime != "onnxruntime":
        return replace(row, notes=(*row.notes, f"localization: onnxruntime only; {row.runtime} reports final "
                                               "outputs"))
    from vcompile.bench.localize import localize_onnx

    log(f"{row.model}: localizing")
    found = localize_onnx(reference_model, artifact.file(), inputs[0], tol, scopes_from=artifact.file("exported"))
    return replace(row, notes=(*row.notes, found.describe()), localization=found.to_dict())
