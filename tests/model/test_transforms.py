"""Frame sampling, time windows and the pixel transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoTransform,
    load_clip,
    sample_indices,
    segment_windows,
    shift_clip,
)
from tests.video_factory import frame_level, write_video


def test_uniform_takes_segment_centres():
    assert sample_indices(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert sample_indices(80, 8).dtype == np.int64


def test_uniform_on_a_range():
    indices = sample_indices(100, 4, start=20, end=60)
    assert indices.tolist() == [25, 35, 45, 55]


def test_short_video_repeats_frames():
    indices = sample_indices(3, 8)
    assert len(indices) == 8 and set(indices.tolist()) == {0, 1, 2}
    assert np.all(np.diff(indices) >= 0)
    assert sample_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("num_total, num_frames", [(1, 8), (7, 8), (100, 8), (1001, 16)])
def test_random_one_frame_per_segment(num_total, num_frames):
    rng = np.random.default_rng(0)
    for _ in range(20):
        indices = sample_indices(num_total, num_frames, mode="random", rng=rng)
        assert indices.shape == (num_frames,)
        assert indices.min() >= 0 and indices.max() < num_total
        segment = num_total / num_frames
        lower = np.floor(segment * np.arange(num_frames))
        upper = np.maximum(np.floor(segment * (np.arange(num_frames) + 1)), lower)
        assert np.all(indices >= lower) and np.all(indices <= upper)


def test_random_is_reproducible_with_a_seed_and_varies_otherwise():
    a = sample_indices(1000, 8, mode="random", rng=3)
    assert np.array_equal(a, sample_indices(1000, 8, mode="random", rng=3))
    rng = np.random.default_rng(1)
    draws = {tuple(sample_indices(1000, 8, mode="random", rng=rng)) for _ in range(5)}
    assert len(draws) > 1


def test_multiple_clips_are_evenly_offset():
    clips = sample_indices(80, 4, num_clips=2)  # segments of 20 frames: offsets 5 and 15
    assert clips.shape == (2, 4)
    assert clips.tolist() == [[5, 25, 45, 65], [15, 35, 55, 75]]
    assert sample_indices(80, 4, mode="random", num_clips=3, rng=0).shape == (3, 4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        sample_indices(0, 8)
    with pytest.raises(ValueError):
        sample_indices(10, 8, mode="dense")


def test_segment_windows():
    assert segment_windows(3.0, 4.0, 4.0) == [(0.0, 3.0)]
    assert segment_windows(8.0, 4.0, 4.0) == [(0.0, 4.0), (4.0, 8.0)]
    # the stride grid stops short of the end: one more full window aligned to the end
    assert segment_windows(10.0, 4.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (6.0, 10.0)]
    overlapping = segment_windows(10.0, 4.0, 2.0)
    assert overlapping == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert segment_windows(0.0, 4.0, 4.0) == [(0.0, 0.0)]
    # a tail of a few frames stretches the last window instead of adding a near-duplicate one
    assert segment_windows(4.004, 2.0, 2.0) == [(0.0, 2.0), (2.0, 4.004)]
    assert segment_windows(4.6, 2.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (2.6, 4.6)]


@pytest.mark.parametrize("duration", [0.5, 4.0, 4.01, 9.9, 61.3, 3600.0])
def test_windows_cover_the_whole_video(duration):
    windows = segment_windows(duration, 4.0, 3.0)
    assert windows[0][0] == 0.0 and windows[-1][1] == pytest.approx(duration)
    for (s0, e0), (s1, _) in zip(windows, windows[1:], strict=False):
        assert s1 <= e0 and s1 > s0  # no gaps, always moving forward
    assert all(min(4.0, duration) - 1e-6 <= e - s <= 5.0 for s, e in windows)


def test_transform_shape_and_normalisation():
    frames = np.full((4, 48, 64, 3), 255, np.uint8)
    frames[..., 1] = 0
    out = VideoTransform(32)(frames)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    expected = [
        (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
        -IMAGENET_MEAN[1] / IMAGENET_STD[1],
        (1 - IMAGENET_MEAN[2]) / IMAGENET_STD[2],
    ]
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.tensor(expected), atol=1e-5)


def test_transform_centre_crops_the_long_side():
    frames = np.zeros((1, 40, 120, 3), np.uint8)
    frames[:, :, 40:80] = 255  # the central third is white
    out = VideoTransform(40)(torch.from_numpy(frames))  # short side already 40: crop the centre 40 columns
    assert out.shape == (1, 3, 40, 40)
    white = (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(out[0, 0], torch.full((40, 40), white), atol=1e-5)


def test_transform_never_flips():
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[:, :, :8] = 255  # white on the left
    torch.manual_seed(0)
    transform = VideoTransform(24, train=True)
    for _ in range(10):
        out = transform(frames)
        assert out.shape == (2, 3, 24, 24)
        assert out[:, 0, :, 0].mean() >= out[:, 0, :, -1].mean()  # left stays brighter than right


def test_shift_clip_moves_every_frame_by_one_offset_and_replicates_edges():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    frames[:, 6:9, 6:9] = 200  # a 3 x 3 square in the middle
    frames[:, :, 0] = 50  # a grey left edge column
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(20):
        out = shift_clip(frames, 3, rng)
        assert out.shape == frames.shape and out.dtype == np.uint8
        ys, xs = np.nonzero(out[0, :, :, 0] == 200)
        dy, dx = int(ys.min()) - 6, int(xs.min()) - 6
        assert -3 <= dy <= 3 and -3 <= dx <= 3 and len(ys) == 9  # the square moved whole, not cut
        assert (out == out[:1]).all()  # the same offset in every frame
        if dx > 0:
            assert (out[0, :, :dx + 1, 0] == 50).all()  # the edge column replicated into the gap
        offsets.add((dy, dx))
    assert len(offsets) > 5
    assert shift_clip(frames, 0, rng) is frames


def test_transform_rejects_wrong_layout():
    with pytest.raises(ValueError):
        VideoTransform(32)(np.zeros((3, 32, 32), np.uint8))


def test_load_clip(tmp_path):
    path = write_video(tmp_path / "v.mp4", num_frames=40, fps=10)
    frames = load_clip(path, 4, start=1.0, end=3.0)  # frames 10..29, centres of 4 segments of 5
    background = frames[:, -10:].mean(axis=(1, 2, 3))
    assert np.allclose(background, [frame_level(i) for i in (12, 17, 22, 27)], atol=4)
    clip = load_clip(path, 4, transform=VideoTransform(32))
    assert clip.shape == (4, 3, 32, 32)
