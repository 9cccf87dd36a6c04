"""The exception hierarchy. The CLI turns any `VcompileError` into one line and a non-zero exit."""

from __future__ import annotations

__all__ = [
    "VcompileError",
    "UnknownModelError",
    "InvalidShapeError",
    "WeightsError",
    "MissingDependencyError",
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
