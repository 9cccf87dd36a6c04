"""What a command's lists mean: models, targets, modes and runtimes from ``a,b,c`` or ``all``.

The command line passes its strings here unchanged, so that the rules (which runtimes ``all`` means for a
benchmark and for a parity check, which names are accepted, that an empty list is an error) live in one tested
place and not in the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..compile import resolve_targets
from ..errors import VcompileError
from ..runtimes import RUNTIMES, resolve_runtime
from ..runtimes.base import parse_device
from ..zoo import list_models, resolve_name
from .case import MODES

__all__ = ["Selection", "resolve_models", "resolve_targets", "resolve_modes", "resolve_device", "select_runtimes",
           "bench_runtimes"]


def _items(spec: str) -> list[str]:
    return [item.strip() for item in spec.split(",") if item.strip()]


def resolve_models(spec: str) -> list[str]:
    """``all`` or a comma-separated list of model names and aliases -> canonical names (duplicates dropped)."""
    if spec.strip().lower() == "all":
        return list_models()
    names = list(dict.fromkeys(resolve_name(n) for n in _items(spec)))
    if not names:
        raise VcompileError(f"no model given in {spec!r}; name one or more (`vcompile models` lists them), or all")
    return names


def resolve_modes(spec: str) -> list[str]:
    """``all`` or a comma-separated list of the protocol's modes (train, batch, single, mobile)."""
    if spec.strip().lower() == "all":
        return list(MODES)
    modes = list(dict.fromkeys(m.lower() for m in _items(spec)))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        what = f"unknown mode {unknown[0]!r}" if unknown else f"no mode given in {spec!r}"
        raise VcompileError(f"{what}; choose from {', '.join(MODES)} or all")
    return modes


def resolve_device(spec: str) -> str:
    """A device as the benchmark protocol names it: exactly ``cpu``, ``cuda`` or ``cuda:N`` (the runners' parser)."""
    device = parse_device(spec)
    if device is None:
        raise VcompileError(f"unknown device {spec!r}; use cpu, cuda or cuda:N (N the GPU's index)")
    return device


@dataclass(frozen=True)
class Selection:
    """The runtimes a command will use, and those that ``all`` left out with the reason for each."""

    runtimes: list[str]
    skipped: dict[str, str]


def select_runtimes(spec: str, candidates: Iterable[str] | None = None) -> Selection:
    """The runtimes of ``spec``: names and aliases as given, or for ``all`` every runtime of ``candidates``
    (default: every registered runtime) that can run here; those that cannot are in ``skipped`` with the reason.
    Names given explicitly are kept even when they cannot run here: the command reports them as such."""
    if spec.strip().lower() != "all":
        names = list(dict.fromkeys(resolve_runtime(r).name for r in _items(spec)))
        if not names:
            raise VcompileError(f"no runtime given in {spec!r}; choose from {', '.join(RUNTIMES)}, or all")
        return Selection(names, {})
    chosen, skipped = [], {}
    for name in (list(RUNTIMES) if candidates is None else candidates):
        availability = RUNTIMES[name].probe()
        if availability.can_run:
            chosen.append(name)
        else:
            skipped[name] = availability.detail
    return Selection(chosen, skipped)


def bench_runtimes(spec: str, modes: list[str]) -> Selection:
    """`select_runtimes` for a benchmark: ``all`` is every runtime that can run here and that one of ``modes``
    uses (Inductor included: its compilation is the record's ``first_run_ms``, outside the timed runs)."""
    used = [name for name in RUNTIMES if any(name in MODES[m].runtimes for m in modes)]
    return select_runtimes(spec, used)
