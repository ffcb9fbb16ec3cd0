"""Files on disk: H.264 MP4 clips and JSON/JSONL manifests, each written to a temporary name and renamed.

The rename (`os.replace`) is atomic, so an interrupted run never leaves a truncated file under a final name;
that is what lets a rerun skip every clip that already exists instead of re-checking its contents.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

# Linux /proc/cpuinfo flag -> x264 CPU capability name (x264's own names, order as in its cpu.c).
_X264_CPU_NAMES = (
    ("sse", "MMX2"),
    ("sse", "SSE"),
    ("sse2", "SSE2"),
    ("sse2", "SSE2Fast"),
    ("pni", "SSE3"),
    ("ssse3", "SSSE3"),
    ("sse4_1", "SSE4.1"),
    ("sse4_2", "SSE4.2"),
    ("abm", "LZCNT"),
    ("avx", "AVX"),
    ("xop", "XOP"),
    ("fma4", "FMA4"),
    ("fma", "FMA3"),
    ("bmi1", "BMI1"),
    ("bmi2", "BMI2"),
    ("avx2", "AVX2"),
)


@functools.cache
def x264_params() -> str | None:
    """x264 options that keep encoding reproducible on this CPU, or None when x264's defaults already do.

    x264's AVX-512 code paths gave different bitstreams (hence different decoded pixels) for the same frames
    from one call to the next on this project's AMD EPYC machines, while every narrower instruction set was
    repeatable. So on CPUs with AVX-512 the capability list is given explicitly without it; the output is the
    same bitstream x264 produces on a CPU that lacks AVX-512.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if "avx512f" not in flags:
        return None
    names = [name for flag, name in _X264_CPU_NAMES if flag in flags]
    return "asm=" + ",".join([*names, "Cache64"])


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 18) -> int:
    """Encode uint8 RGB frames `[T, H, W, 3]` as H.264 (yuv420p) MP4 at `path`; returns the file size.

    One encoder thread: parallelism comes from worker processes, and it keeps the bytes reproducible.
    `faststart` puts the index first so the service can stream clips over HTTP range requests.
    """
    path = Path(path)
    num_frames, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
    tmp = _tmp_name(path)
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = Fraction(1, fps)
            options = {"crf": str(crf), "preset": "medium", "threads": "1"}
            if x264_params():
                options["x264-params"] = x264_params()
            stream.options = options
            for index, image in enumerate(frames):
                # Convert to yuv420p ourselves: PyAV's implicit conversion inside encode() was seen to give
                # different bytes from run to run, and the clips must be reproducible.
                rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame = rgb.reformat(format="yuv420p", src_colorspace="ITU601", dst_colorspace="ITU601")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def read_mp4(path: str | Path) -> np.ndarray:
    """Decode every frame of a clip to uint8 RGB `[T, H, W, 3]` (for checks; the model uses model.video_io)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _write_text(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    _write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """One compact JSON object per line, keys in insertion order, so equal records give equal bytes."""
    _write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
