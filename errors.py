"""The exception hierarchy. The CLI turns any `VcompileError` into one line and a non-zero exit."""

from __future__ import annotations

__all__ = [
    "VcompileError",
    "UnknownModelError",
    "InvalidShapeError",
    "WeightsError",
    "MissingDependencyError",
    "first_line",
]


class VcompileError(Exception):
    """Base class: an error the user can act on. Its message says what failed and how to fix it."""

    exit_code = 2


class UnknownModelError(VcompileError, KeyError):
    """A model name that is neither a canonical name nor an alias."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidShapeError(VcompileError, ValueError):
    """An input shape a model cannot take (too few frames, a size the patching cannot divide, ...)."""


class WeightsError(VcompileError):
    """A weights file that is missing, unreadable, or does not fit the model."""


class MissingDependencyError(VcompileError, ImportError):
    """An optional package that is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str):
        self.package, self.extra = package, extra
        super().__init__(f"{purpose} needs the '{package}' package, which is not installed; "
                         f'install it with: pip install "vcompile[{extra}]"')


def first_line(err: BaseException) -> str:
    """An exception's first informative line, without its type: OpenVINO prefixes its messages with lines that
    only say where in its sources the exception passed ("Exception from src/inference/src/cpp/infer_request.cpp:224:"),
    and those are skipped. Empty when the exception has no message."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    informative = [line for line in lines if not (line.startswith("Exception from ") and line.endswith(":"))]
    return (informative or lines or [""])[0][:300]
