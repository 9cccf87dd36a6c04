"""Build many models for many targets, verified, recording each cell of the model x target grid instead of stopping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..check.parity import build_verified
from ..compile import BuildOptions, get_target
from ..errors import MissingDependencyError, VcompileError
from .environment import environment

__all__ = ["GridCell", "single_cell", "build_grid", "write_grid"]


@dataclass(frozen=True)
class GridCell:
    """One model x target outcome: ``ok``, ``failed`` (reason in a few words) or ``unavailable`` here."""

    model: str
    target: str
    status: str
    reason: str = ""
    path: str | None = None
    bytes: int | None = None
    seconds: float | None = None
    cached: bool | None = None
    parity: str | None = None  # the build's verification: pass, fail, error, not run


def single_cell(model: str, target: str, options: BuildOptions, *, out: Path, force: bool = False,
                precision: str | None = None, log: Callable[[str], None] | None = None,
                explain: Callable[[str, str, dict], None] | None = None) -> GridCell:
    """Build and verify one model for one target; unlike `build_grid`, errors propagate (one build, one error)."""
    tgt = get_target(target)
    started = time.perf_counter()
    artifact = build_verified(model, tgt.name, replace(options, precision=precision or tgt.default_precision),
                              out=out, force=force, log=log, explain=explain)
    return GridCell(artifact.model, artifact.target, "ok", path=str(artifact.file()), bytes=artifact.size_bytes,
                    seconds=round(time.perf_counter() - started, 2), cached=artifact.cached,
                    parity=artifact.manifest.get("parity", {}).get("status"))


def build_grid(models: list[str], targets: list[str], options: BuildOptions, *, out: Path, force: bool = False,
               precision: str | None = None,
               log: Callable[[str, str, str], None] | None = None,
               explain: Callable[[str, str, dict], None] | None = None) -> Iterator[GridCell]:
    """Build every model for every target, yielding one `GridCell` per pair as soon as it is known.

    ``precision`` overrides ``options.precision``; None builds each target at its default precision
    (fp16 for coreml, fp32 elsewhere).

    A target that cannot build on this machine (missing package, no GPU) is ``unavailable``; a build that
    raises is ``failed`` with its one-line reason; neither stops the grid.
    """
    for target in targets:
        tgt = get_target(target)
        unavailable = tgt.unavailable_reason()
        for model in models:
            if unavailable:
                yield GridCell(model, target, "unavailable", unavailable)
                continue
            started = time.perf_counter()
            try:
                yield single_cell(model, target, options, out=out, force=force, precision=precision,
                                  log=(lambda stage, m=model, t=target: log(m, t, stage)) if log else None,
                                  explain=explain)
            except MissingDependencyError as err:
                yield GridCell(model, target, "unavailable", str(err))
            except VcompileError as err:
                yield GridCell(model, target, "failed", str(err), seconds=round(time.perf_counter() - started, 2))


def write_grid(cells: list[GridCell], options: BuildOptions, out: Path) -> Path:
    """Write the grid as JSON beside the artifacts: ``<out>/build-grid.json``."""
    path = Path(out) / "build-grid.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = {
        "options": options.to_dict(),
        "models": list(dict.fromkeys(c.model for c in cells)),
        "targets": list(dict.fromkeys(c.target for c in cells)),
        "cells": [asdict(c) for c in cells],
        "environment": environment(),
    }
    path.write_text(json.dumps(grid, indent=2))
    return path
