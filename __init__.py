"""vcompile: compile, check and benchmark lightweight video action-recognition models across runtimes."""

from vcompile.errors import VcompileError

__version__ = "0.1.0"

__all__ = ["VcompileError", "__version__"]
