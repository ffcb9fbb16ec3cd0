"""Shared fixtures: a tiny saved checkpoint, a small mixed library (generated, real samples, broken files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.video_factory import sample_videos, write_broken_files, write_video

faiss.omp_set_num_threads(1)  # the test machine is small and shared; OpenMP spinning only slows it down

# Small segments so a few seconds of video give several segments and several batches.
WINDOW = 2.0
BUILD_OPTIONS = {"window": WINDOW, "stride": WINDOW, "batch_size": 4, "workers": 0}
BROKEN_REASONS = {
    "zero.mp4": "zero-byte file",
    "notes.mp4": "not a video: looks like a text file",
    "noise.mp4": "not a video",
    "truncated.mp4": "truncated MP4",
    "unknown_codec.avi": "unsupported codec",
    "huge.avi": "absurd resolution 9000x9000",
}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """clover-tiny shrunk further (1 block per stage, D=64) and saved, as the CLI would load it."""
    import torch

    from model import create_model

    torch.manual_seed(0)
    model = create_model("clover-tiny", embed_dim=64, video={"depths": [1, 1]})
    directory = tmp_path_factory.mktemp("checkpoint") / "clover-tiny"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from model import Clover

    return Clover.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="session")
def fingerprint(tiny_checkpoint) -> str:
    from model.checkpoint import fingerprint as checkpoint_fingerprint

    return checkpoint_fingerprint(tiny_checkpoint)


def make_library(root: Path) -> Path:
    """13 segments of good video in 5 files (2 real samples), plus one file of each broken kind."""
    write_video(root / "generated" / "a.mp4", num_frames=30, fps=10, seed=1)  # 3 s -> 2 segments
    write_video(root / "generated" / "b.mp4", num_frames=50, fps=10, seed=2)  # 5 s -> 3 segments
    write_video(root / "generated" / "sub" / "c.mkv", num_frames=20, fps=10, seed=3)  # 2 s -> 1 segment
    samples = {p.name: p for p in sample_videos()}
    (root / "samples").mkdir(parents=True)
    for name in ("carphone_distorted.mp4", "bikes.mp4"):  # 4 s -> 2, 10 s -> 5 segments
        shutil.copy(samples[name], root / "samples" / name)
    write_broken_files(root / "broken", root / "generated" / "a.mp4")
    (root / "generated" / "readme.txt").write_text("not scanned: not a video extension")
    return root


GOOD_FILES = {"a.mp4": 2, "b.mp4": 3, "c.mkv": 1, "carphone_distorted.mp4": 2, "bikes.mp4": 5}


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, library, tiny_model, fingerprint) -> tuple[Path, dict]:
    """One uninterrupted build of `library`, shared read-only by many tests (and the crash tests' reference)."""
    from indexer.pipeline import index_paths

    index_dir = tmp_path_factory.mktemp("index") / "idx"
    summary = index_paths(
        index_dir, [library], tiny_model, checkpoint_fingerprint=fingerprint, **BUILD_OPTIONS
    )
    return index_dir, summary


def index_snapshot(index_dir: Path, db_url: str | None = None) -> dict:
    """What must be identical between two builds of the same library: per-path status, error and segments."""
    from indexer.reader import IndexReader

    with IndexReader.open(index_dir, db_url=db_url) as reader:
        videos, _ = reader.list_videos(limit=1000)
        snapshot = {}
        for video in videos:
            segments = reader.segments_of_video(video.video_id)
            embeddings = (
                reader.segment_embeddings([s.segment_id for s in segments])
                if segments
                else np.zeros((0, reader.dim))
            )
            snapshot[Path(video.path).name] = {
                "status": video.status,
                "error": video.error,
                "windows": [(s.start, s.end) for s in segments],
                "embeddings": embeddings,
            }
        snapshot["__vectors__"] = reader.num_vectors
    return snapshot


def assert_same_index(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    assert left["__vectors__"] == right["__vectors__"]
    for name in left.keys() - {"__vectors__"}:
        a, b = left[name], right[name]
        assert (a["status"], a["error"], a["windows"]) == (b["status"], b["error"], b["windows"]), name
        np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=3e-3, err_msg=name)
