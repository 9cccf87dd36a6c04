"""Test helpers, importable as `support` (tests/ is on pytest's pythonpath).

Tests run on tiny variants (4 frames, 64 px, 10 classes); of the paper-scale checks, only the cheap ones run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

# Two threads, as on the CI machines, so that runs are comparable and the suite does not oversubscribe.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m vcompile ARGS` in a fresh process, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "VCOMPILE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "vcompile", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def tiny_clip(batch: int = 2, seed: int = 0) -> torch.Tensor:
    from vcompile.zoo import TINY_FRAMES, TINY_SIZE

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, TINY_FRAMES, TINY_SIZE, TINY_SIZE, generator=gen)
