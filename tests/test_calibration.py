"""int8 calibration on the user's own videos (`--calibration DIR`): what is taken, what is refused, and that the
artifact is keyed by the videos' contents."""

from __future__ import annotations

import shutil

import pytest
from support import write_video

from vcompile.data import VideoError, calibration_clips, calibration_videos

pytest.importorskip("av", reason='PyAV is needed to write and decode video: pip install "vcompile[video]"')


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three 6-frame noise videos, one in a subfolder, and a file that is not a video."""
    folder = tmp_path_factory.mktemp("calibration")
    (folder / "class_b").mkdir()
    for i, name in enumerate(["a.mp4", "class_b/c.avi", "b.mp4"]):
        write_video(folder / name, frames=6, height=64, width=64, noise_seed=i)
    (folder / "labels.txt").write_text("not a video")
    return folder


def test_every_video_in_the_folder_and_its_subfolders_is_taken_in_order(videos, monkeypatch):
    assert [p.relative_to(videos).as_posix() for p in calibration_videos(videos, frames=4)] == \
        ["a.mp4", "b.mp4", "class_b/c.avi"]
    import vcompile.data.calibration as calibration

    monkeypatch.setattr(calibration, "MAX_CALIBRATION_VIDEOS", 2)  # more videos than that: spread, ends included
    assert [p.name for p in calibration_videos(videos, frames=4)] == ["a.mp4", "c.avi"]
    clips = calibration_clips(calibration_videos(videos, frames=4), 4, 32, (0.5,) * 3, (0.25,) * 3)
    assert len(clips) == 2 and all(c.shape == (1, 3, 4, 32, 32) for c in clips)
    assert (clips[0] - clips[1]).abs().mean() > 0.1  # two different videos, not one clip twice


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "calibration folder not found: .*missing; give --calibration a folder of video files"),
    (lambda d: d, "calibration folder .* has no video files"),
])
def test_a_missing_or_empty_folder_is_refused(tmp_path, make, message):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(VideoError, match=message):
        calibration_videos(make(tmp_path), frames=4)


def test_a_video_shorter_than_the_clip_is_refused_not_padded(videos):
    with pytest.raises(VideoError, match=r"calibration video .*a.mp4 has 6 frames, fewer than the clip's 8; remove it"):
        calibration_videos(videos, frames=8)
    with pytest.raises(VideoError, match="has 6 frames, fewer than the clip's 8"):  # counted while decoding too
        calibration_clips([videos / "a.mp4"], 8, 32, (0.5,) * 3, (0.25,) * 3)


def test_an_int8_build_calibrates_on_the_videos_keyed_by_their_contents(videos, tmp_path):
    from vcompile.check.parity import build_verified
    from vcompile.compile import BuildOptions

    options = BuildOptions(tiny=True, batch=1, precision="int8", calibration=str(videos))
    artifact = build_verified("x3d-xs", "onnx", options, out=tmp_path)
    assert artifact.manifest["info"]["calibration"] == {"set": "videos", "folder": str(videos), "videos": 3}
    assert artifact.manifest["parity"]["clips"] == "held_apart"  # the gate never judges on calibration clips
    seeded = build_verified("x3d-xs", "onnx", BuildOptions(tiny=True, batch=1, precision="int8"), out=tmp_path)
    assert seeded.key != artifact.key and seeded.manifest["info"]["calibration"]["set"] == "calibration"
    assert seeded.file().read_bytes() != artifact.file().read_bytes()  # other ranges, other scales
    moved = tmp_path / "moved"
    shutil.copytree(videos, moved)
    again = build_verified("x3d-xs", "onnx", options.__class__(**{**options.to_dict(), "calibration": str(moved)}),
                           out=tmp_path)
    assert again.cached and again.key == artifact.key  # the same videos elsewhere: the same artifact
    (moved / "b.mp4").unlink()
    fewer = build_verified("x3d-xs", "onnx", options.__class__(**{**options.to_dict(), "calibration": str(moved)}),
                           out=tmp_path)
    assert fewer.key != artifact.key and fewer.manifest["info"]["calibration"]["videos"] == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--precision", "int8", "--calibration", "{empty}"], "error: calibration folder .* has no video files"),
    (["--precision", "int8", "--calibration", "{short}"], "error: calibration video .* has 6 frames, fewer than the "
                                                          "clip's 8"),
    (["--calibration", "{videos}"], "error: --calibration sets the ranges of int8 quantization; this build is fp32"),
])
def test_bad_calibration_input_is_one_line_and_builds_nothing(cli, tmp_path, videos, extra, message):
    import re

    (tmp_path / "empty").mkdir()
    folders = {"empty": tmp_path / "empty", "short": videos, "videos": videos}
    out = tmp_path / "out"
    args = [a.format(**folders) for a in extra]
    result = cli("build", "-m", "x3d-xs", "-t", "onnx", "--tiny", "--frames", "8", "--out", str(out), *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and re.match(message, lines[0]), result.stderr
    assert not (out / "builds").exists()  # checked before anything, the fp32 graph included, was built
