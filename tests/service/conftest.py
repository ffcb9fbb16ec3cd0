"""Fixtures for the service tests: one tiny real checkpoint and one library + index, built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.model.helpers import tiny_model
from tests.video_factory import write_video

ANSWERS = ["red", "green", "blue", "ball", "cube", "left", "right"]
NUM_VIDEOS = 5


@dataclass
class World:
    checkpoint: Path
    index_dir: Path
    library: Path
    videos: list[Path]
    backend: Any = None  # None = the real model and indexer (service.engine.backend.CloverBackend)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A clover-tiny with a (random) open-ended QA head, saved as a real checkpoint directory."""
    model = tiny_model()
    model.set_answer_vocab(ANSWERS)
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("library")
    videos = [write_video(root / f"clip{i}.mp4", num_frames=40 + 10 * i, fps=10, seed=i) for i in range(NUM_VIDEOS)]
    return root, videos


@pytest.fixture(scope="session")
def world(tiny_checkpoint, library, tmp_path_factory) -> World:
    """A real index over the generated library, built by the real indexer with the tiny checkpoint.

    2 s windows every 1 s, so each video has several segments and grouping per video is exercised.
    """
    from indexer.pipeline import index_paths
    from model import Clover
    from model.checkpoint import fingerprint

    root, videos = library
    index_dir = tmp_path_factory.mktemp("index") / "idx"
    model = Clover.from_pretrained(tiny_checkpoint)
    summary = index_paths(index_dir, videos, model, checkpoint_fingerprint=fingerprint(tiny_checkpoint),
                          window=2.0, stride=1.0, workers=0)
    assert summary["indexed"] == NUM_VIDEOS and summary["failed"] == 0, summary
    return World(tiny_checkpoint, index_dir, root.resolve(), videos)
