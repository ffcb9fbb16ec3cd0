"""Broken and hostile files in a library: the indexer records each with a reason, indexes the good ones, and
nothing crashes, hangs or does unbounded work.

The corpus (`hostile_corpus`) goes beyond tests/indexer's broken files: wrong extensions both ways, an image
named .mp4, an audio-only MP4, a frame-count bomb (an AVI declaring 100 million frames), a pixel bomb (a real
H.264 stream of 8448x8448 frames in a small file), a real but large 4096x2304 video, dangling symlinks, a
symlink loop, a named pipe and a directory named like a video, a tiny file declaring 0.01 fps, and hostile file
names (one not UTF-8). The build runs with a decode worker process, as `clover index build` does, so a decoder
that crashes would cost a file, not the test run.

Four of these once defeated the indexer (a symlink loop and a name that is not UTF-8 aborted the whole build, a
named pipe blocked it forever, the 0.01 fps file was cut into 250 segments from five frames); each also has a
test of its own below that pins the fixed behaviour. Reading an unreadable file is checked only when not
running as root (root reads a chmod-000 file anyway).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.video_factory import write_broken_files, write_huge_resolution_avi, write_video

GOOD = "indexed"


def _write_stream(path: Path, width: int, height: int, frames: int, rate: int | Fraction = 10) -> Path:
    """Black H.264 frames: compresses to almost nothing whatever the frame size."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            image = np.full((height, width, 3), 40 * i % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _frame_count_bomb(path: Path) -> Path:
    """A 16x16 raw AVI of 3 frames whose headers declare 100 million (dwTotalFrames and the stream's dwLength)."""
    write_huge_resolution_avi(path, 16, 16)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"avih") + 8 + 16, 100_000_000)
    struct.pack_into("<I", data, data.find(b"strh") + 8 + 32, 100_000_000)
    path.write_bytes(bytes(data))
    return path


def hostile_corpus(root: Path) -> dict[str, str]:
    """Write the corpus under `root`; file name -> what must happen: "indexed", "failed: <reason prefix>",
    "failed or indexed" (either, with a reason when failed), "missing: <reason>" (reported, no catalog row) or
    "ignored" (not a file: never looked at)."""
    from PIL import Image

    root.mkdir(parents=True)
    good = write_video(root / "good.mp4", num_frames=30, seed=1)
    broken = write_broken_files(root, good)  # zero, text, random, truncated, unknown codec, absurd header size
    write_video(root / "really_an_mp4.avi", num_frames=30, seed=2)  # wrong extension, right content
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "picture.mp4", format="PNG")
    _write_audio_only(root / "audio_only.mp4")
    _frame_count_bomb(root / "frames_bomb.avi")
    _write_stream(root / "pixels_bomb.mp4", 8448, 8448, 1)  # 71 MP frames; over MAX_FRAME_PIXELS
    _write_stream(root / "large_4k.mp4", 4096, 2304, 2)  # 9.4 MP frames: under the limits, a real video
    write_video(root / "new\nline and spaces.mp4", num_frames=20, seed=3)
    write_video(root / ("long" * 60 + ".mp4"), num_frames=20, seed=4)  # a 244-byte name
    (root / "dangling.mp4").symlink_to(root / "nowhere.mp4")
    (root / "folder.mp4").mkdir()
    (root / "loop_a.mp4").symlink_to(root / "loop_b.mp4")
    (root / "loop_b.mp4").symlink_to(root / "loop_a.mp4")
    os.mkfifo(root / "pipe.mp4")
    write_video(root / "not_utf8.mp4", num_frames=20, seed=5)
    os.rename(root / "not_utf8.mp4", os.fsencode(root) + b"/bad\xff\xfename.mp4")
    _write_stream(root / "slow.mp4", 64, 48, 5, rate=Fraction(1, 100))  # 5 frames declaring 500 s
    return {
        "good.mp4": GOOD,
        broken["zero"].name: "failed: zero-byte file",
        broken["text"].name: "failed: not a video: looks like a text file",
        broken["random"].name: "failed: not a video",
        broken["truncated"].name: "failed: truncated MP4",
        broken["codec"].name: "failed: unsupported codec",
        broken["huge"].name: "failed: absurd resolution 9000x9000",
        "really_an_mp4.avi": GOOD,
        "picture.mp4": "failed or indexed",
        "audio_only.mp4": "failed: no video stream (audio only)",
        "frames_bomb.avi": "failed: truncated: header says 100000000 frames",
        "pixels_bomb.mp4": "failed: absurd resolution 8448x8448",
        "large_4k.mp4": GOOD,
        "new\nline and spaces.mp4": GOOD,
        "long" * 60 + ".mp4": GOOD,
        "nowhere.mp4": "missing: file not found",
        "folder.mp4": "ignored",
        "loop_a.mp4": "missing: symlink loop",
        "loop_b.mp4": "missing: symlink loop",
        "pipe.mp4": "missing: not a regular file (named pipe)",
        "bad\\xff\\xfename.mp4": "missing: path is not valid UTF-8 (rename the file to index it)",  # as reported
        "slow.mp4": GOOD,  # one segment per frame (see test_a_tiny_file_cannot_declare_unbounded_work)
    }


@pytest.fixture(scope="module")
def clover(tiny_checkpoint):
    from model import Clover

    return Clover.from_pretrained(tiny_checkpoint).eval()


def _build(index_dir: Path, sources: list[Path], model, workers: int = 0) -> dict:
    from indexer.pipeline import index_paths

    return index_paths(index_dir, sources, model, checkpoint_fingerprint="hostile-files-test", window=2.0,
                       stride=2.0, workers=workers)


def test_every_hostile_file_is_recorded_and_nothing_crashes(tmp_path, clover):
    from indexer.pipeline import verify_index
    from indexer.reader import IndexReader

    expected = hostile_corpus(tmp_path / "library")
    began = time.monotonic()
    summary = _build(tmp_path / "index", [tmp_path / "library"], clover, workers=1)
    assert time.monotonic() - began < 120
    with IndexReader.open(tmp_path / "index") as reader:
        videos, _ = reader.list_videos(limit=100)
    recorded = {Path(v.path).name: v for v in videos}
    missing = {Path(m["path"]).name: m["error"] for m in summary["missing"]}
    for name, outcome in expected.items():
        if outcome == "ignored":
            assert name not in recorded and name not in missing, name
        elif outcome.startswith("missing: "):
            assert missing.get(name) == outcome.removeprefix("missing: "), (name, missing)
        elif outcome == GOOD:
            assert recorded[name].status == "indexed" and recorded[name].num_segments >= 1, (name, recorded[name])
        elif outcome == "failed or indexed":
            assert recorded[name].status == "indexed" or recorded[name].error, (name, recorded[name])
        else:
            video = recorded[name]
            assert video.status == "failed" and video.error.startswith(outcome.removeprefix("failed: ")), (name, video)
    assert set(recorded) <= set(expected)
    assert summary["pending"] == 0 and verify_index(tmp_path / "index")["ok"]
    again = _build(tmp_path / "index", [tmp_path / "library"], clover)  # failures are remembered, not retried
    assert again["to_index"] == 0


def test_an_unreadable_file_is_recorded(tmp_path, clover):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading, so there is nothing to refuse")
    library = tmp_path / "library"
    write_video(library / "good.mp4", num_frames=20, seed=1)
    locked = write_video(library / "locked.mp4", num_frames=20, seed=2)
    locked.chmod(0)
    summary = _build(tmp_path / "index", [library], clover)
    assert [(Path(f["path"]).name, f["error"]) for f in summary["failures"]] == [("locked.mp4", "permission denied")]


# ---------------------------------------------------------------------------------- once fatal, now recorded
# Each of these once aborted, hung or blew up a whole build (see docs/reliability.md, "Fixed defects").


def _one_good_video_and(tmp_path: Path) -> Path:
    library = tmp_path / "library"
    write_video(library / "good.mp4", num_frames=20, seed=1)
    return library


def _reported(summary: dict) -> dict[str, str]:
    """File name -> reason, for the scan's problems and the failed videos of a build summary."""
    return {Path(entry["path"]).name: entry["error"] for entry in [*summary["missing"], *summary["failures"]]}


def test_a_symlink_loop_is_recorded_not_fatal(tmp_path, clover):
    library = _one_good_video_and(tmp_path)
    (library / "loop_a.mp4").symlink_to(library / "loop_b.mp4")
    (library / "loop_b.mp4").symlink_to(library / "loop_a.mp4")
    summary = _build(tmp_path / "index", [library], clover)
    assert summary["indexed"] == 1 and summary["videos"] == 1
    assert _reported(summary) == {"loop_a.mp4": "symlink loop", "loop_b.mp4": "symlink loop"}


def test_a_file_name_that_is_not_utf8_is_recorded_not_fatal(tmp_path, clover):
    """Reported by the scan with its name escaped, never catalogued: a catalog path must be one that opens."""
    library = _one_good_video_and(tmp_path)
    write_video(library / "other.mp4", num_frames=20, seed=2)
    os.rename(library / "other.mp4", os.fsencode(library) + b"/bad\xff\xfename.mp4")
    summary = _build(tmp_path / "index", [library], clover)
    assert summary["indexed"] == 1 and summary["videos"] == 1
    assert _reported(summary) == {"bad\\xff\\xfename.mp4": "path is not valid UTF-8 (rename the file to index it)"}
    json.dumps(summary, ensure_ascii=False).encode("utf-8")  # what the service's job result does with it


def test_a_named_pipe_is_recorded_not_waited_on(tmp_path, clover):
    library = _one_good_video_and(tmp_path)
    pipe = library / "pipe.mp4"
    os.mkfifo(pipe)
    result: dict = {}
    build = threading.Thread(target=lambda: result.update(_build(tmp_path / "index", [library], clover)), daemon=True)
    build.start()
    build.join(30)  # a one-video build is done in about a second; the margin is for a loaded machine
    rescued = build.is_alive()
    if rescued:  # release a blocked open() (a writer appears, then EOF), so the test itself never hangs
        with open(pipe, "wb"):
            pass
        build.join(60)
    assert not rescued, "the build was still blocked on the named pipe after 30 s"
    assert result["indexed"] == 1 and result["videos"] == 1
    assert _reported(result) == {"pipe.mp4": "not a regular file (named pipe)"}


def test_a_tiny_file_cannot_declare_unbounded_work(tmp_path, clover):
    """5 frames declaring 0.01 fps (500 s): one segment per frame, at the frames' own times, not 250. A rate
    above MAX_FPS is refused: it would squeeze a video into one segment."""
    from indexer.reader import IndexReader
    from model.video_io import MAX_FPS

    library = _one_good_video_and(tmp_path)
    _write_stream(library / "slow.mp4", 64, 48, 5, rate=Fraction(1, 100))  # 5 frames, 500 s declared
    _write_stream(library / "fast.mp4", 64, 48, 5, rate=int(MAX_FPS) * 10)  # 5 frames in half a millisecond
    summary = _build(tmp_path / "index", [library], clover)
    assert summary["indexed"] == 2 and summary["failed"] == 1
    with IndexReader.open(tmp_path / "index") as reader:
        videos = {Path(v.path).name: v for v in reader.list_videos(limit=10)[0]}
        slow = videos["slow.mp4"]
        assert slow.status == "indexed" and slow.num_segments == 5 and slow.duration == pytest.approx(500)
        starts = [segment.start for segment in reader.segments_of_video(slow.video_id)]
    assert starts == pytest.approx([0, 100, 200, 300, 400])  # where each frame is shown
    assert videos["fast.mp4"].status == "failed"
    assert videos["fast.mp4"].error == f"absurd frame rate 10000 fps (more than {MAX_FPS:g})"
