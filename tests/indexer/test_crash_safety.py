"""A build interrupted at any point and run again equals an uninterrupted build: no duplicates, nothing lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import indexer.maintenance
import indexer.pipeline
from indexer.catalog import Catalog
from indexer.layout import IndexPaths
from indexer.pipeline import index_paths
from indexer.stores import SegmentStore
from indexer.writer import PAUSE_HOOK_ENV, BatchWriter
from tests.indexer.conftest import (
    BROKEN_REASONS,
    BUILD_OPTIONS,
    GOOD_FILES,
    assert_same_index,
    index_snapshot,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class SimulatedCrash(BaseException):
    """BaseException, so no `except Exception` in the indexer can swallow it (as no code survives kill -9)."""


def assert_no_leftovers(index_dir: Path) -> None:
    paths = IndexPaths(index_dir)
    catalog = Catalog(paths.default_db_url())
    try:
        referenced = catalog.referenced_shards()
        counts = catalog.counts()
    finally:
        catalog.dispose()
    assert SegmentStore(paths).all_shard_files() == referenced, "orphan shard files"
    assert counts["pending"] == 0
    assert not list(index_dir.rglob("*.tmp-*")), "temporaries left behind"


def _crash_after_commits(monkeypatch, commits: int) -> None:
    original = BatchWriter.write_batch
    calls = {"n": 0}

    def write_batch(self, segments, encoded):
        original(self, segments, encoded)
        calls["n"] += 1
        if calls["n"] == commits:
            raise SimulatedCrash

    monkeypatch.setattr(BatchWriter, "write_batch", write_batch)


def _crash_between_shard_and_commit(monkeypatch) -> None:
    original = SegmentStore.write_shard

    def write_shard(self, name, embeddings, tokens):
        original(self, name, embeddings, tokens)
        raise SimulatedCrash

    monkeypatch.setattr(SegmentStore, "write_shard", write_shard)


def _crash_in_final_sync(monkeypatch) -> None:
    def sync_vectors(*args, **kwargs):
        raise SimulatedCrash

    monkeypatch.setattr(indexer.pipeline, "sync_vectors", sync_vectors)


def _crash_in_faiss_write(monkeypatch) -> None:
    def write_index(index, path):
        (path.parent / f"{path.name}.tmp-999999").write_bytes(b"half a file")
        raise SimulatedCrash

    monkeypatch.setattr(indexer.maintenance, "write_index", write_index)


CRASH_POINTS = {
    "after the first batch": lambda mp: _crash_after_commits(mp, 1),
    "mid video, after two batches": lambda mp: _crash_after_commits(mp, 2),
    "between shard write and commit": _crash_between_shard_and_commit,
    "before the FAISS sync": _crash_in_final_sync,
    "while writing FAISS": _crash_in_faiss_write,
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_interrupted_build_then_rerun_equals_uninterrupted(
    point, tmp_path, library, built_index, tiny_model, fingerprint, monkeypatch
):
    index_dir = tmp_path / "idx"
    with monkeypatch.context() as patch:
        CRASH_POINTS[point](patch)
        with pytest.raises(SimulatedCrash):
            index_paths(index_dir, [library], tiny_model, checkpoint_fingerprint=fingerprint, **BUILD_OPTIONS)
    summary = index_paths(
        index_dir, [library], tiny_model, checkpoint_fingerprint=fingerprint, **BUILD_OPTIONS
    )
    assert (summary["failed_total"], summary["pending"]) == (len(BROKEN_REASONS), 0)
    assert_same_index(index_snapshot(index_dir), index_snapshot(built_index[0]))
    assert_no_leftovers(index_dir)
    again = index_paths(index_dir, [library], tiny_model, checkpoint_fingerprint=fingerprint, **BUILD_OPTIONS)
    assert again["to_index"] == 0 and again["segments_added"] == 0


def _cli(index_dir: Path, library: Path, checkpoint: Path) -> list[str]:
    return [
        sys.executable, "-c", "import sys; from indexer.cli import main; sys.exit(main(sys.argv[1:]))",
        "build", str(library), "--index", str(index_dir), "--checkpoint", str(checkpoint), "--json",
        "--window", str(BUILD_OPTIONS["window"]), "--stride", str(BUILD_OPTIONS["stride"]),
        "--batch-size", str(BUILD_OPTIONS["batch_size"]), "--workers", "0", "--no-progress",
    ]  # fmt: skip


def _committed_segments(index_dir: Path) -> int:
    database = index_dir / "catalog.sqlite"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM segments").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_kill_9_midway_then_rerun(tmp_path, library, tiny_checkpoint, built_index):
    index_dir = tmp_path / "idx"
    env = {**os.environ, PAUSE_HOOK_ENV: "1", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(_cli(index_dir, library, tiny_checkpoint), cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 600  # generous: shared CI machines can be slow
        while _committed_segments(index_dir) < BUILD_OPTIONS["batch_size"]:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the build never committed a batch"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    committed = _committed_segments(index_dir)
    assert 0 < committed < sum(GOOD_FILES.values())  # killed midway

    env.pop(PAUSE_HOOK_ENV)
    rerun = subprocess.run(
        _cli(index_dir, library, tiny_checkpoint), cwd=REPO_ROOT, env=env, capture_output=True
    )
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert_same_index(index_snapshot(index_dir), index_snapshot(built_index[0]))
    assert_no_leftovers(index_dir)
    with sqlite3.connect(index_dir / "catalog.sqlite") as connection:
        statuses = [row[0] for row in connection.execute("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "finished"]


def test_a_file_that_kills_its_decoder_fails_alone(tmp_path, library, tiny_model, fingerprint, monkeypatch):
    from indexer.decode import CRASH_HOOK_ENV

    monkeypatch.setenv(CRASH_HOOK_ENV, "b.mp4")
    index_dir = tmp_path / "idx"
    summary = index_paths(
        index_dir, [library / "generated"], tiny_model, checkpoint_fingerprint=fingerprint,
        **{**BUILD_OPTIONS, "workers": 1},
    )  # fmt: skip
    reasons = {Path(f["path"]).name: f["error"] for f in summary["failures"]}
    assert reasons == {"b.mp4": "decoder crashed (worker process died)"}
    assert summary["indexed"] == 2 and summary["segments"] == GOOD_FILES["a.mp4"] + GOOD_FILES["c.mkv"]
