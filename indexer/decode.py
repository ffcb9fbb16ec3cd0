"""Decode-side work, run in worker processes: probe a video, cut it into windows, decode clips and thumbnails.

Functions here take and return plain picklable values so a process pool can run them. A video is probed once
(one task) and then decoded in chunks of windows (further tasks), so a two-hour film never has to be held in
memory whole and several workers can share it.
"""

from __future__ import annotations

import io
import math
import os
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch

from model.transforms import VideoTransform, sample_indices, segment_windows
from model.video_io import VideoInfo, probe_video, read_frames

# Test hook: a worker that probes a file whose name contains this string kills itself with SIGSEGV, the way a
# decoder crash would; lets the tests prove one crashing file cannot take the build down. Read in the parent
# (workers fork from a server started earlier, whose environment may predate the variable) and passed along.
CRASH_HOOK_ENV = "CLOVER_INDEXER_TEST_CRASH"


@dataclass(frozen=True)
class DecodeSettings:
    num_frames: int  # frames sampled per segment (the model's T)
    image_size: int  # the model's S
    window: float  # segment length, seconds
    stride: float  # seconds between segment starts
    thumb_max_side: int = 320  # longer side of a thumbnail JPEG
    thumb_quality: int = 80
    crash_marker: str | None = None  # test hook, see CRASH_HOOK_ENV


@dataclass(frozen=True)
class Window:
    ordinal: int  # position in the video
    start: float  # seconds
    end: float


@dataclass
class ProbeResult:
    video_id: int
    info: VideoInfo
    windows: list[Window]
    seconds: float = 0.0  # wall time in the worker


@dataclass
class DecodedChunk:
    video_id: int
    windows: list[Window]
    clips: torch.Tensor  # [n, T, 3, S, S] float32, normalised
    thumbnails: list[bytes]  # one JPEG per window
    seconds: float = 0.0  # wall time in the worker


def init_worker() -> None:
    """Decode workers must not each start a full set of BLAS/OpenMP threads on a shared machine."""
    torch.set_num_threads(1)


def probe_and_cut(video_id: int, path: str, settings: DecodeSettings) -> ProbeResult:
    if settings.crash_marker and settings.crash_marker in os.path.basename(path):
        os.kill(os.getpid(), signal.SIGSEGV)
    began = time.perf_counter()
    info = probe_video(path)
    windows = windows_with_frames(info, segment_windows(info.duration, settings.window, settings.stride))
    return ProbeResult(video_id, info, windows, time.perf_counter() - began)


def windows_with_frames(info: VideoInfo, spans: list[tuple[float, float]]) -> list[Window]:
    """The windows in which at least one frame starts, numbered from 0.

    At ordinary frame rates every window has frames of its own and all are kept. A window in which no frame
    starts would only repeat the frame shown before it, and a file can declare a tiny rate to make its duration
    huge (5 frames at 0.01 fps "last" 500 s: 250 two-second windows): keeping only windows with a frame bounds
    the segments of any video by the frames it really holds, so a small file cannot demand unbounded work.
    """
    kept: list[Window] = []
    for start, end in spans:
        first = math.ceil(start * info.fps - 1e-6)  # the first frame starting at or after `start` (at i / fps)
        if first < info.num_frames and first < end * info.fps - 1e-6:
            kept.append(Window(len(kept), start, end))
    return kept


def window_frame_indices(info: VideoInfo, window: Window, num_frames: int) -> np.ndarray:
    """The model's frames for one window: uniform over the frames shown between start and end. [T]"""
    first = min(int(math.floor(window.start * info.fps + 1e-6)), info.num_frames - 1)
    stop = max(first + 1, min(int(math.ceil(window.end * info.fps - 1e-6)), info.num_frames))
    return sample_indices(info.num_frames, num_frames, mode="uniform", start=first, end=stop)


def decode_chunk(
    video_id: int, path: str, info: VideoInfo, windows: list[Window], settings: DecodeSettings
) -> DecodedChunk:
    began = time.perf_counter()
    indices = np.stack([window_frame_indices(info, w, settings.num_frames) for w in windows])  # [n, T]
    # The model's frames are decoded exactly as training and `clover eval` decode them (straight to the model's
    # short side), so an indexed segment embeds like the same clip in evaluation.
    frames = read_frames(path, indices.reshape(-1), short_side=settings.image_size, info=info)
    frames = frames.reshape(len(windows), settings.num_frames, *frames.shape[1:])  # [n, T, H, W, 3] uint8
    transform = VideoTransform(settings.image_size)
    clips = torch.stack([transform(clip) for clip in frames])  # [n, T, 3, S, S]
    middles = indices[:, settings.num_frames // 2]  # thumbnails: the middle frame, at display size
    thumb_frames = read_frames(path, middles, max_side=settings.thumb_max_side, info=info)
    thumbnails = [encode_thumbnail(frame, settings) for frame in thumb_frames]
    return DecodedChunk(video_id, windows, clips, thumbnails, time.perf_counter() - began)


def encode_thumbnail(frame: np.ndarray, settings: DecodeSettings) -> bytes:
    """One RGB frame [H, W, 3] -> JPEG bytes, the longer side at most `thumb_max_side`."""
    from PIL import Image

    image = Image.fromarray(frame)
    image.thumbnail((settings.thumb_max_side, settings.thumb_max_side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=settings.thumb_quality)
    return buffer.getvalue()
