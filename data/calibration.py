"""Calibration from the user's own videos (`vcompile build --precision int8 --calibration DIR`).

An int8 artifact calibrates on seeded clips by default. Given a folder, it calibrates instead on one clip from each
video in it (subfolders included, sorted by path; at most `MAX_CALIBRATION_VIDEOS`, spread evenly over the sorted
list when there are more), decoded by `load_clip` with the evaluation sampling. A calibration clip must be whole:
a video shorter than the clip is refused rather than padded with repeated frames, which would calibrate on
statistics the model never sees. Everything is checked before anything is built, in one line per problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .video import VideoError, declared_frames, load_clip

__all__ = ["VIDEO_SUFFIXES", "MAX_CALIBRATION_VIDEOS", "calibration_videos", "calibration_clips"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv")
# Enough for min-max and histogram calibration to settle (NNCF's default subset is 300 samples of images; a clip of
# 16 frames carries 16 of them); more only lengthens the build, quadratically in NNCF's accuracy control.
MAX_CALIBRATION_VIDEOS = 32


def calibration_videos(folder: str | Path, frames: int) -> list[Path]:
    """The videos of ``folder`` an int8 build calibrates on, checked for a readable folder, at least one video,
    and, where the container declares its length, at least ``frames`` frames each."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoError(f"calibration folder not found: {folder}; give --calibration a folder of video files")
    try:
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    except OSError as err:
        raise VideoError(f"cannot read calibration folder {folder} ({err.strerror}); check its permissions") from None
    if not found:
        raise VideoError(f"calibration folder {folder} has no video files ({' '.join(VIDEO_SUFFIXES)}); give a "
                         "folder of videos, or leave --calibration out to calibrate on seeded clips")
    if len(found) > MAX_CALIBRATION_VIDEOS:
        step = (len(found) - 1) / (MAX_CALIBRATION_VIDEOS - 1)
        found = [found[round(i * step)] for i in range(MAX_CALIBRATION_VIDEOS)]
    for path in found:
        if not os.access(path, os.R_OK):
            raise VideoError(f"cannot read calibration video {path}; check its permissions or remove it")
        declared = declared_frames(path)
        if 0 < declared < frames:
            raise _too_short(path, declared, frames)
    return found


def calibration_clips(videos: list[Path], frames: int, size: int, mean: tuple[float, ...],
                      std: tuple[float, ...]) -> list[torch.Tensor]:
    """One normalised (1, 3, frames, size, size) clip per video, ``frames`` evenly spaced frames of it."""
    clips = []
    for path in videos:
        clip = load_clip(path, frames, size, mean, std)
        if clip.total_frames < frames:
            raise _too_short(path, clip.total_frames, frames)
        clips.append(clip.tensor)
    return clips


def _too_short(path: Path, total: int, frames: int) -> VideoError:
    return VideoError(f"calibration video {path} has {total} frames, fewer than the clip's {frames}; remove it from "
                      "the folder (calibration takes whole clips, never repeated frames)")
