"""Probe and decode video files: decord first, PyAV when decord fails or misreports.

Every bad file raises `VideoDecodeError(reason)` and nothing else; the reason is a short human sentence that the
indexer stores in its catalog ("zero-byte file", "truncated MP4: ...", "absurd resolution 9000x9000", ...).

Cheap checks run before any decoder touches the file, because a hostile or broken file must not cost a heavy
decode (or an allocation of gigabytes) before it is rejected: file stat and read permission, a text sniff, an MP4
box walk that detects truncation, and a PyAV header probe for stream, codec and resolution.

decord 0.6 is fast (batched seeks) but misreports the frame count of some files (e.g. some AVI) and returns
wrongly shaped frames for some raw formats, so its answer is cross-checked against the container header and
the last frame is decoded once; any doubt sends the file to PyAV, which decodes sequentially by frame order.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

# Guards against files that would make a decoder allocate gigabytes (a 40000x40000 frame is 4.8 GB in RGB).
MAX_SIDE_PIXELS = 8192
MAX_FRAME_PIXELS = 50_000_000
# A declared rate above this is a broken header (e.g. a 90 kHz time base read as the frame rate), not footage:
# trusting it would squeeze minutes of video into one segment. Low rates are real (slideshows, a still image over
# an audio track): the indexer bounds their segments by their frames, so they are not refused here.
MAX_FPS = 1000.0
# decord's frame count is trusted when it is within this many frames (or this fraction) of the container's.
_COUNT_TOLERANCE_FRAMES = 2
_COUNT_TOLERANCE_FRACTION = 0.05


class VideoDecodeError(Exception):
    """A file that cannot be decoded as a video; `str(error)` is the reason recorded in the catalog."""

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # decodable frames, in presentation order (frame indices are 0..num_frames-1)
    fps: float  # average frame rate; frame i is shown at about i / fps seconds
    duration: float  # seconds
    width: int
    height: int
    codec: str  # FFmpeg decoder name, e.g. "h264"
    backend: str  # "decord" or "pyav": the backend read_frames will use for this file


@dataclass(frozen=True)
class _ContainerHeader:
    """What the container header says, before decoding anything."""

    codec: str
    width: int
    height: int
    fps: float
    header_frames: int  # 0 when the container does not store a count (e.g. Matroska)
    duration: float  # seconds, 0.0 when unknown


# --------------------------------------------------------------------------------------------- cheap checks


def _check_file(path: str) -> None:
    """Reject missing, unreadable, empty, text and truncated MP4/AVI files without decoding them."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError("file not found") from None
    except PermissionError:
        raise VideoDecodeError("permission denied") from None
    except OSError as error:
        raise VideoDecodeError(f"cannot stat file: {error.strerror or error}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VideoDecodeError("not a regular file")
    if st.st_size == 0:
        raise VideoDecodeError("zero-byte file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except PermissionError:
        raise VideoDecodeError("permission denied") from None
    except OSError as error:
        raise VideoDecodeError(f"unreadable file: {error.strerror or error}") from None
    if _looks_like_text(head):
        raise VideoDecodeError("not a video: looks like a text file")
    if head[4:8] == b"ftyp":
        truncation = _mp4_truncation(path, st.st_size)
        if truncation:
            raise VideoDecodeError(truncation)
    if head[:4] == b"RIFF" and len(head) >= 12:
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if declared > st.st_size:
            kind = head[8:12].decode("latin-1").strip()
            raise VideoDecodeError(f"truncated {kind}: header says {declared} bytes, file has {st.st_size}")


def _looks_like_text(head: bytes) -> bool:
    """True for bytes that decode as UTF-8 with no control characters other than whitespace."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the 4096-byte boundary is still text.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def _mp4_truncation(path: str, size: int) -> str | None:
    """Walk the top-level MP4/MOV boxes; a box running past the end of the file means the file was cut."""
    saw_moov = False
    offset = 0
    with open(path, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            if len(header) < 8:
                return f"truncated MP4: {size - offset} stray bytes after the last box"
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1:  # 64-bit size follows the type
                if len(header) < 16:
                    return "truncated MP4: cut inside a box header"
                box_size = struct.unpack(">Q", header[8:16])[0]
            elif box_size == 0:  # box runs to the end of the file
                box_size = size - offset
            if box_size < 8:
                return f"corrupt MP4: box of {box_size} bytes at offset {offset}"
            saw_moov = saw_moov or box_type == b"moov"
            if offset + box_size > size:
                kind = box_type.decode("latin-1")
                return f"truncated MP4: '{kind}' box needs {offset + box_size} bytes, file has {size}"
            offset += box_size
    if not saw_moov:
        return "truncated MP4: no 'moov' index box (file cut off or never finalised)"
    return None


def _probe_header(path: str) -> _ContainerHeader:
    """Read the container header with PyAV (no decoding) and turn its failures into reasons."""
    import av

    try:
        container = av.open(path)
    except PermissionError:
        raise VideoDecodeError("permission denied") from None
    except av.error.FFmpegError as error:
        raise VideoDecodeError(f"not a video: {_ffmpeg_message(error)}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError("no video stream" + (" (audio only)" if container.streams.audio else ""))
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None:
            raise VideoDecodeError("unsupported codec: no decoder for the video stream")
        width, height = int(context.width or 0), int(context.height or 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        return _ContainerHeader(
            codec=context.name,
            width=width,
            height=height,
            fps=fps,
            header_frames=int(stream.frames or 0),
            duration=duration,
        )


def _ffmpeg_message(error: Exception) -> str:
    message = getattr(error, "strerror", None) or str(error)
    return message.rstrip(".").lower() or type(error).__name__


def _check_resolution(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise VideoDecodeError(f"invalid resolution {width}x{height} (decoder rejected the frame size)")
    if max(width, height) > MAX_SIDE_PIXELS or width * height > MAX_FRAME_PIXELS:
        raise VideoDecodeError(f"absurd resolution {width}x{height}")


def _check_frame_rate(fps: float) -> None:
    """Frame times and the duration (frames / fps) come from the rate, so an implausible one is refused."""
    if not math.isfinite(fps) or fps <= 0:
        raise VideoDecodeError("unknown frame rate")
    if fps > MAX_FPS:
        raise VideoDecodeError(f"absurd frame rate {fps:g} fps (more than {MAX_FPS:g})")


def _count_plausible(count: int, header: _ContainerHeader) -> bool:
    """Does a backend's frame count agree with what the container says (stored count, else duration x fps)?"""
    reference = header.header_frames or round(header.duration * header.fps)
    if count <= 0:
        return False
    if reference <= 0:
        return True
    return abs(count - reference) <= max(_COUNT_TOLERANCE_FRAMES, _COUNT_TOLERANCE_FRACTION * reference)


# --------------------------------------------------------------------------------------------- probe


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, rate, size and the backend to decode with; `VideoDecodeError(reason)` for a bad file."""
    path = os.fspath(path)
    _check_file(path)
    header = _probe_header(path)
    _check_resolution(header.width, header.height)
    info = _probe_with_decord(path, header)
    info = info if info is not None else _probe_with_pyav(path, header)
    _check_frame_rate(info.fps)
    return info


def _probe_with_decord(path: str, header: _ContainerHeader) -> VideoInfo | None:
    """decord's view of the file, or None when decord fails, miscounts or decodes the last frame wrongly."""
    try:
        import decord

        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        if not _count_plausible(count, header):
            return None
        last = reader[count - 1].asnumpy()  # [H, W, 3]: proves the end of the file decodes
        if last.shape != (header.height, header.width, 3):
            return None
        fps = float(reader.get_avg_fps()) or header.fps
    except Exception:  # decord raises bare RuntimeError/DECORDError for everything
        return None
    duration = count / fps if fps > 0 else header.duration
    return VideoInfo(count, fps, duration, header.width, header.height, header.codec, "decord")


def _probe_with_pyav(path: str, header: _ContainerHeader) -> VideoInfo:
    """Count demuxed packets (cheap: no decoding) and decode the tail to prove the file is whole."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size > 0]
            count = len(packets)
            if count == 0:
                raise VideoDecodeError("truncated or empty: no video packets")
            if header.header_frames and count < header.header_frames - max(
                _COUNT_TOLERANCE_FRAMES, _COUNT_TOLERANCE_FRACTION * header.header_frames
            ):
                raise VideoDecodeError(
                    f"truncated: header says {header.header_frames} frames, only {count} present"
                )
            tail_pts = max((p.pts for p in packets if p.pts is not None), default=None)
            decoded_tail = _decode_tail(container, stream, tail_pts)
    except VideoDecodeError:
        raise
    except av.error.FFmpegError as error:
        raise VideoDecodeError(f"corrupt video: {_ffmpeg_message(error)}") from None
    if decoded_tail == 0:
        raise VideoDecodeError("truncated or corrupt: the last frames do not decode")
    fps = header.fps or (count / header.duration if header.duration > 0 else 0.0)
    if fps <= 0:
        raise VideoDecodeError("unknown frame rate")
    return VideoInfo(count, fps, count / fps, header.width, header.height, header.codec, "pyav")


def _decode_tail(container: Any, stream: Any, tail_pts: int | None) -> int:
    """Seek to the keyframe before the last packet and decode to the end; returns the frames decoded."""
    import av

    try:
        if tail_pts is not None:
            container.seek(tail_pts, backward=True, any_frame=False, stream=stream)
        else:
            container.seek(0)
        return sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError:
        return 0


# --------------------------------------------------------------------------------------------- read


def read_frames(
    path: str | os.PathLike,
    indices: Any,
    *,
    max_side: int | None = None,
    short_side: int | None = None,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Decode the frames at `indices` (clamped to the video) as uint8 RGB `[T, H, W, 3]`.

    `max_side` shrinks frames so the longer side is at most that (thumbnails); `short_side` shrinks them so the
    shorter side is that (decode straight to model resolution: much less memory and resize work for HD input).
    Frames are never enlarged. Pass the `info` from `probe_video` to skip probing again.
    """
    path = os.fspath(path)
    info = info or probe_video(path)
    wanted = np.clip(np.asarray(indices, dtype=np.int64).reshape(-1), 0, info.num_frames - 1)  # [T]
    if wanted.size == 0:
        return np.zeros((0, info.height, info.width, 3), np.uint8)
    width, height = _output_size(info.width, info.height, max_side, short_side)
    if info.backend == "decord":
        try:
            return _read_with_decord(path, wanted, width, height)
        except Exception:  # fall back on any decord failure mid-file
            pass
    return _read_with_pyav(path, wanted, width, height)


def _output_size(width: int, height: int, max_side: int | None, short_side: int | None) -> tuple[int, int]:
    scale = 1.0
    if max_side:
        scale = min(scale, max_side / max(width, height))
    if short_side:
        scale = min(scale, short_side / min(width, height))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _read_with_decord(path: str, wanted: np.ndarray, width: int, height: int) -> np.ndarray:
    import decord

    reader = decord.VideoReader(path, num_threads=1, width=width, height=height)
    frames = reader.get_batch(wanted.tolist()).asnumpy()  # [T, H, W, 3]
    if frames.shape != (len(wanted), height, width, 3):
        raise RuntimeError(f"decord returned {frames.shape}")
    return frames


def _read_with_pyav(path: str, wanted: np.ndarray, width: int, height: int) -> np.ndarray:
    """Decode in presentation order up to the last wanted frame; frame i is the i-th decoded frame."""
    import av

    needed = set(wanted.tolist())
    last_needed = int(wanted.max())
    decoded: dict[int, np.ndarray] = {}
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index in needed:
                    decoded[index] = frame.to_ndarray(format="rgb24", width=width, height=height)
                if index >= last_needed:
                    break
    except av.error.FFmpegError as error:
        if not decoded:
            raise VideoDecodeError(f"corrupt video: {_ffmpeg_message(error)}") from None
    if not decoded:
        raise VideoDecodeError("no frames decode")
    # A file that ends early repeats its last decodable frame rather than failing the whole clip.
    available = np.array(sorted(decoded))
    nearest = available[np.clip(np.searchsorted(available, wanted, side="right") - 1, 0, None)]
    return np.stack([decoded[int(i)] for i in nearest])
