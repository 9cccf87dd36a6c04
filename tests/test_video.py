"""Decoding real video with PyAV: the tests write their own small videos."""

from __future__ import annotations

import numpy as np
import pytest
from support import write_video

from vcompile.data.video import VideoError, load_clip, sample_indices

av = pytest.importorskip("av", reason='PyAV is needed to write and decode video: pip install "vcompile[video]"')


def test_uniform_sampling_is_the_papers_evenly_spaced_frames():
    assert sample_indices(20, 4) == [2, 7, 12, 17]
    assert sample_indices(3, 6) == [0, 0, 1, 1, 2, 2]
    segments = sample_indices(20, 4, "segments", seed=1)
    assert all(5 * i <= idx < 5 * (i + 1) for i, idx in enumerate(segments))
    assert segments == sample_indices(20, 4, "segments", seed=1)


def test_load_clip_samples_resizes_and_normalises(tmp_path):
    path = tmp_path / "ramp.mp4"
    write_video(path, frames=20)
    clip = load_clip(path, frames=4, size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert clip.tensor.shape == (1, 3, 4, 32, 32) and clip.total_frames == 20
    assert clip.indices == (2, 7, 12, 17) and not clip.notes
    levels = (clip.tensor[0].mean(dim=(0, 2, 3)) * 0.25 + 0.5) * 255  # undo normalisation
    np.testing.assert_allclose(levels.numpy(), [20, 70, 120, 170], atol=6)  # lossy codec


def test_short_video_repeats_frames_and_says_so(tmp_path):
    path = tmp_path / "short.mp4"
    write_video(path, frames=3)
    clip = load_clip(path, frames=8, size=16, mean=(0, 0, 0), std=(1, 1, 1))
    assert clip.tensor.shape == (1, 3, 8, 16, 16)
    assert "fewer than the clip's 8: frames repeat" in clip.notes[0]


def test_not_a_video_and_missing_file(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video")
    with pytest.raises(VideoError, match="cannot decode .*notes.mp4"):
        load_clip(bogus, 4, 16, (0, 0, 0), (1, 1, 1))
    with pytest.raises(VideoError, match="video file not found"):
        load_clip(tmp_path / "missing.mp4", 4, 16, (0, 0, 0), (1, 1, 1))


def test_a_long_video_keeps_only_the_sampled_frames(tmp_path):
    """Memory holds the clip's frames, not the video's: 300 frames decoded, 4 kept."""
    from vcompile.data.video import _frames

    path = tmp_path / "long.mp4"
    write_video(path, frames=300, height=16, width=16)
    total, kept = _frames(path, {5, 150, 299})
    assert total == 300 and sorted(kept) == [5, 150, 299] and kept[150].shape == (16, 16, 3)
    assert _frames(path, None) == (300, {})
    clip = load_clip(path, frames=4, size=16, mean=(0, 0, 0), std=(1, 1, 1))
    assert clip.total_frames == 300 and clip.indices == tuple(sample_indices(300, 4))


def test_a_stream_that_declares_no_frame_count_is_counted(tmp_path):
    """A raw elementary stream has no frame count in its header: frames are counted, then sampled."""
    path = tmp_path / "raw.m4v"
    with av.open(str(path), mode="w", format="m4v") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(20):
            image = np.full((32, 32, 3), 10 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert not container.streams.video[0].frames  # nothing declared
    clip = load_clip(path, frames=4, size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert clip.total_frames == 20 and clip.indices == (2, 7, 12, 17)
    levels = (clip.tensor[0].mean(dim=(0, 2, 3)) * 0.25 + 0.5) * 255
    np.testing.assert_allclose(levels.numpy(), [20, 70, 120, 170], atol=6)
