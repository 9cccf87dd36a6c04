"""Test helpers, importable as `support` (tests/ is on pytest's pythonpath).

Tests run on tiny variants (4 frames, 64 px, 10 classes); of the paper-scale checks, only the cheap ones run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

# The cores shared out between pytest-xdist's workers (one worker per core by default), at most two per process as
# on the CI machines, so that runs are comparable and parallel workers do not oversubscribe the cores.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
torch.set_num_threads(THREADS)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m vcompile ARGS` in a fresh process, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "VCOMPILE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "vcompile", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def write_video(path, frames: int, height: int = 48, width: int = 64, noise_seed: int | None = None) -> None:
    """A video whose frame i is a flat grey of level 10 * i (mod 256), so sampled frames can be recognised; with
    ``noise_seed``, frames of seeded random pixels instead (content to calibrate on)."""
    import av
    import numpy as np

    rng = np.random.default_rng(noise_seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = (np.full((height, width, 3), (10 * i) % 256, dtype=np.uint8) if noise_seed is None else
                     rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def tiny_clip(batch: int = 2, seed: int = 0) -> torch.Tensor:
    from vcompile.zoo import TINY_FRAMES, TINY_SIZE

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, TINY_FRAMES, TINY_SIZE, TINY_SIZE, generator=gen)
