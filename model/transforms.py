"""Frame sampling, time windows and the pixel transform shared by training, indexing and serving.

One implementation for all three so a video is seen the same way when the model learns from it and when it is
indexed. There is deliberately no horizontal flip anywhere: captions and questions say "left", "right",
"turns left", and flipping would teach the model that those words mean nothing.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.video_io import probe_video, read_frames

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)  # None (fresh entropy) or an int seed


def sample_indices(
    num_total: int,
    num_frames: int,
    mode: str = "uniform",
    start: int = 0,
    end: int | None = None,
    rng: Any = None,
    num_clips: int = 1,
) -> np.ndarray:
    """TSN-style frame indices: split frames [start, end) into `num_frames` equal segments, one frame from each.

    "uniform" takes each segment's centre (deterministic: evaluation and indexing); "random" takes a random frame
    in each segment (training augmentation). With `num_clips > 1` returns `[num_clips, num_frames]` clips whose
    positions are evenly offset inside the segments, for test-time averaging; otherwise `[num_frames]`.
    A range shorter than `num_frames` repeats frames. Indices are int64 and always within [0, num_total).
    """
    if num_total <= 0:
        raise ValueError("num_total must be positive")
    if num_frames <= 0 or num_clips <= 0:
        raise ValueError("num_frames and num_clips must be positive")
    if mode not in ("uniform", "random"):
        raise ValueError(f"unknown sampling mode {mode!r}")
    first = min(max(int(start), 0), num_total - 1)
    stop = num_total if end is None else min(max(int(end), first + 1), num_total)
    segment = (stop - first) / num_frames  # frames per segment (may be < 1)
    bounds = first + segment * np.arange(num_frames)  # [num_frames] segment starts
    if mode == "uniform":
        offsets = (np.arange(num_clips) + 0.5) / num_clips  # [num_clips] fractions inside a segment
        positions = bounds[None, :] + segment * offsets[:, None]  # [num_clips, num_frames]
    else:
        fractions = _as_generator(rng).random((num_clips, num_frames))
        positions = bounds[None, :] + segment * fractions
    indices = np.clip(np.floor(positions).astype(np.int64), first, stop - 1)
    return indices[0] if num_clips == 1 else indices


def segment_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Cut [0, duration] seconds into windows of `window` seconds every `stride` seconds.

    A video no longer than one window is one segment. When the stride grid stops short of the end, a tail of up
    to a quarter window is absorbed by stretching the last window (no near-duplicate segment for a few frames
    of rounding), and a longer tail gets one more full window aligned to the end.
    """
    if window <= 0 or stride <= 0:
        raise ValueError("window and stride must be positive")
    duration = max(float(duration), 0.0)
    if duration <= window:
        return [(0.0, duration)]
    windows = []
    start = 0.0
    epsilon = 1e-6
    while start + window <= duration + epsilon:
        windows.append((start, start + window))
        start += stride
    tail = duration - windows[-1][1]
    if tail > 0.25 * window:
        windows.append((duration - window, duration))
    elif tail > 0:
        windows[-1] = (windows[-1][0], duration)
    return [(round(s, 6), round(min(e, duration), 6)) for s, e in windows]


class VideoTransform:
    """uint8 `[T, H, W, 3]` RGB frames -> float32 `[T, 3, S, S]` normalised with ImageNet mean/std.

    Resize so the short side is S (antialiased bilinear, as a photo would be shrunk), then crop S x S: the centre
    crop at evaluation; with `train=True`, a slightly larger resize (scale jitter up to `max_scale`) and a random
    crop, the same for every frame of the clip so motion stays coherent. Never flips.
    """

    def __init__(self, image_size: int, train: bool = False, max_scale: float = 1.15):
        self.image_size = int(image_size)
        self.train = train
        self.max_scale = max_scale
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        video = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"expected frames [T, H, W, 3], got {tuple(video.shape)}")
        video = video.permute(0, 3, 1, 2).float()  # [T, 3, H, W] in 0..255
        height, width = video.shape[-2:]
        target = self.image_size
        if self.train:
            target = round(self.image_size * float(torch.empty(1).uniform_(1.0, self.max_scale)))
        scale = target / min(height, width)
        new_h, new_w = max(target, round(height * scale)), max(target, round(width * scale))
        if (new_h, new_w) != (height, width):
            video = F.interpolate(
                video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
            )
        size = self.image_size
        if self.train:
            top = int(torch.randint(0, new_h - size + 1, ()))
            left = int(torch.randint(0, new_w - size + 1, ()))
        else:
            top, left = (new_h - size) // 2, (new_w - size) // 2
        video = video[:, :, top : top + size, left : left + size]  # [T, 3, S, S]
        video = (video / 255.0).clamp_(0.0, 1.0)
        return ((video - self.mean) / self.std).contiguous()

    def __repr__(self) -> str:
        return f"VideoTransform(image_size={self.image_size}, train={self.train})"


def shift_clip(frames: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[T, H, W, 3]` moved by one random (dy, dx) in [-max_shift, max_shift] pixels, edges replicated.

    Training augmentation for a world where captions name motions and shapes but never absolute positions: a Video
    Swin trained from scratch on a few thousand clips otherwise memorises where each object sits instead of
    learning its outline (`bench/probe_shape_learning.py --shift`). The same offset for every frame keeps motion
    intact.
    """
    if max_shift <= 0:
        return frames
    dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    height, width = frames.shape[1:3]
    padded = np.pad(frames, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    top, left = max_shift - dy, max_shift - dx
    return np.ascontiguousarray(padded[:, top : top + height, left : left + width])


def load_clip(
    path: str | os.PathLike,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
    mode: str = "uniform",
    transform: Any = None,
    rng: Any = None,
) -> Any:
    """Sample `num_frames` from [start, end) seconds of a video; the transform's output, or uint8 [T, H, W, 3]."""
    info = probe_video(path)
    first = 0 if start is None else int(round(start * info.fps))
    stop = None if end is None else int(round(end * info.fps))
    indices = sample_indices(info.num_frames, num_frames, mode=mode, start=first, end=stop, rng=rng)
    frames = read_frames(path, indices, info=info)  # [T, H, W, 3] uint8
    return transform(frames) if transform is not None else frames
