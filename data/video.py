"""Real video as model input: decode with PyAV, sample frames as the paper does, resize and normalise.

The paper evaluates on 16 evenly spaced frames, single crop, resized to 224 x 224 (`uniform`), and trains on
TSN-style sparse segment sampling: one random frame from each of T equal segments (`segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MissingDependencyError, VcompileError

__all__ = ["VideoError", "Clip", "sample_indices", "declared_frames", "load_clip"]


class VideoError(VcompileError):
    """A file that is missing, is not a video, or cannot be decoded."""


@dataclass(frozen=True)
class Clip:
    """A model-ready clip (1, 3, T, S, S), normalised, and how it was made."""

    tensor: torch.Tensor
    source: str
    total_frames: int
    indices: tuple[int, ...]
    notes: tuple[str, ...] = ()


def sample_indices(total: int, frames: int, sampling: str = "uniform", seed: int = 0) -> list[int]:
    """Frame indices to take from a video of ``total`` frames.

    ``uniform``: ``frames`` evenly spaced frames, centred in equal segments (evaluation). ``segments``: one
    random frame from each of ``frames`` equal segments (TSN training sampling), seeded. A video shorter than
    the clip repeats frames.
    """
    if total < 1:
        raise VideoError("the video has no frames")
    if sampling == "uniform":
        return [min(total - 1, int((i + 0.5) * total / frames)) for i in range(frames)]
    if sampling == "segments":
        rng = np.random.default_rng(seed)
        edges = np.linspace(0, total, frames + 1)
        return [min(total - 1, int(rng.uniform(edges[i], max(edges[i + 1], edges[i] + 1)))) for i in range(frames)]
    raise VcompileError(f"unknown frame sampling {sampling!r}; choose uniform or segments")


def _open(path: Path):
    try:
        import av
    except ImportError:
        raise MissingDependencyError("av", "video", "decoding video files") from None
    return av


def _frames(path: Path, wanted: set[int] | None) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the first video stream of ``path`` once: how many frames it has, and the RGB frames at ``wanted``
    (None: none, only count). Memory holds only the wanted frames, whatever the length of the video."""
    av = _open(path)
    kept: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream")
            for count, frame in enumerate(container.decode(video=0), 1):
                if wanted is not None and count - 1 in wanted:
                    kept[count - 1] = frame.to_ndarray(format="rgb24")
    except VideoError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise VideoError(f"cannot decode video stream 0 of {path} after {count} frames ({type(err).__name__}: "
                         f"{err}); give a video file that ffmpeg can read (mp4, webm, avi, ...)") from None
    return count, kept


def declared_frames(path: Path) -> int:
    """The frame count the container declares for its first video stream (0 when it declares none)."""
    av = _open(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream")
            return max(0, int(container.streams.video[0].frames or 0))
    except VideoError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise VideoError(f"cannot decode {path} as video ({type(err).__name__}: {err}); "
                         "give a video file that ffmpeg can read (mp4, webm, avi, ...)") from None


def _sampled_frames(path: Path, frames: int, sampling: str, seed: int) -> tuple[int, list[int], list[np.ndarray]]:
    """The sampled frames of ``path`` with bounded memory: pick the indices from the declared frame count and keep
    only those while decoding; if the count the decoder finds differs (or none was declared), pick again from the
    true count and decode once more."""
    declared = declared_frames(path)
    total, kept = _frames(path, set(sample_indices(declared, frames, sampling, seed)) if declared else None)
    if total == 0:
        raise VideoError(f"{path} decoded to no frames; the file is empty or damaged")
    indices = sample_indices(total, frames, sampling, seed)
    if not set(indices) <= kept.keys():
        total, kept = _frames(path, set(indices))
    return total, indices, [kept[i] for i in indices]


def load_clip(path: str | Path, frames: int, size: int, mean: tuple[float, ...], std: tuple[float, ...],
              sampling: str = "uniform", seed: int = 0) -> Clip:
    """Decode ``path`` and return a normalised (1, 3, frames, size, size) float32 clip. Only the sampled frames are
    kept while decoding, so memory does not grow with the length of the video."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    total, indices, picked = _sampled_frames(path, frames, sampling, seed)
    notes = []
    if total < frames:
        notes.append(f"{path.name} has {total} frames, fewer than the clip's {frames}: frames repeat")
    video = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float() / 255.0
    video = F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    video = (video - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return Clip(video.permute(1, 0, 2, 3).unsqueeze(0).contiguous(), str(path), total, tuple(indices),
                tuple(notes))
