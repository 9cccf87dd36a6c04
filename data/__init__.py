"""Model inputs: seeded clips, named clip sets, and real video decoded and sampled as the paper does.

`data` knows only the zoo's input contract (shapes, normalisation); everything that feeds a model reads its
clips here, so calibration and checking can never silently share a clip.
"""

from __future__ import annotations

from .calibration import MAX_CALIBRATION_VIDEOS, VIDEO_SUFFIXES, calibration_clips, calibration_videos
from .clips import CLIP_SETS, MAX_SEED, check_seed, clip_set, example_input
from .video import Clip, VideoError, load_clip, sample_indices

__all__ = ["CLIP_SETS", "MAX_SEED", "check_seed", "clip_set", "example_input", "Clip", "VideoError", "load_clip",
           "sample_indices", "MAX_CALIBRATION_VIDEOS", "VIDEO_SUFFIXES", "calibration_clips", "calibration_videos"]
