"""The write stage: thumbnails, then one durable shard, then one catalog transaction per batch.

That order is the crash-safety argument. A segment row is committed only after its embedding and tokens are
fsynced in a shard, so every committed row points at data. A video becomes `indexed` in the same transaction as
its last segment, so a video is either fully indexed or still `pending` (and redone from scratch by the next
run). A kill between the shard write and the commit leaves an unreferenced shard, which the next writer
deletes. FAISS is not touched here: it is rebuilt from the catalog and the shards (see maintenance.sync_vectors).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select, update

from indexer.catalog import STATUS_FAILED, STATUS_INDEXED, Catalog, Segment, Video, utcnow
from indexer.decode import Window
from indexer.encode import EncodedBatch
from indexer.layout import IndexPaths, atomic_write_bytes
from indexer.stores import SegmentStore
from model.video_io import VideoInfo

# Test hook: seconds to sleep after each committed batch, so a test can kill -9 a build between batches.
PAUSE_HOOK_ENV = "CLOVER_INDEXER_PAUSE_AFTER_BATCH"


@dataclass
class PendingSegment:
    video_id: int
    window: Window
    thumbnail: bytes


def thumbnail_relpath(video_id: int, ordinal: int) -> str:
    """Relative to the index directory; grouped by thousands so no directory holds millions of files."""
    return f"thumbs/{video_id // 1000:05d}/{video_id}_{ordinal:05d}.jpg"


def remove_thumbnails(paths: IndexPaths, video_id: int) -> None:
    directory = paths.root / Path(thumbnail_relpath(video_id, 0)).parent
    if directory.is_dir():
        for entry in directory.glob(f"{video_id}_*.jpg"):
            entry.unlink(missing_ok=True)


class BatchWriter:
    """Commits encoded batches and video outcomes; counts what it wrote."""

    def __init__(self, paths: IndexPaths, catalog: Catalog, store: SegmentStore, run_id: int):
        self.paths = paths
        self.catalog = catalog
        self.store = store
        self.run_id = run_id
        self._probes: dict[int, tuple[VideoInfo, int]] = {}  # video_id -> (info, number of windows)
        self._committed: dict[int, int] = {}  # video_id -> segments committed in this run
        self.pause_after_batch = float(os.environ.get(PAUSE_HOOK_ENV, "0") or 0)
        self.indexed_video_ids: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.segments_written = 0
        self.bytes_written = 0
        self.seconds = 0.0

    def expect(self, video_id: int, info: VideoInfo, num_windows: int) -> None:
        self._probes[video_id] = (info, num_windows)
        self._committed[video_id] = 0

    def write_batch(self, segments: Sequence[PendingSegment], encoded: EncodedBatch) -> None:
        start = time.perf_counter()
        for segment in segments:  # cosmetic files first: a kill here leaves thumbnails nobody references yet
            relpath = thumbnail_relpath(segment.video_id, segment.window.ordinal)
            atomic_write_bytes(self.paths.root / relpath, segment.thumbnail, durable=False)
        shard = self.store.new_shard_name()
        self.bytes_written += self.store.write_shard(shard, encoded.embeddings, encoded.tokens)
        with self.catalog.session() as session:
            for row, segment in enumerate(segments):
                session.add(
                    Segment(
                        video_id=segment.video_id,
                        ordinal=segment.window.ordinal,
                        start=segment.window.start,
                        end=segment.window.end,
                        shard=shard,
                        row=row,
                        thumbnail=thumbnail_relpath(segment.video_id, segment.window.ordinal),
                    )
                )
                self._committed[segment.video_id] += 1
            for video_id in sorted({s.video_id for s in segments}):
                info, expected = self._probes[video_id]
                if self._committed[video_id] == expected:
                    self._mark_indexed(session, video_id, info, expected)
        self.segments_written += len(segments)
        self.seconds += time.perf_counter() - start
        if self.pause_after_batch:
            time.sleep(self.pause_after_batch)

    def _mark_indexed(self, session, video_id: int, info: VideoInfo, num_segments: int) -> None:
        session.execute(
            update(Video)
            .where(Video.id == video_id)
            .values(
                status=STATUS_INDEXED,
                error=None,
                num_segments=num_segments,
                indexed_at=utcnow(),
                updated_at=utcnow(),
                run_id=self.run_id,
                **_info_columns(info),
            )
        )
        self.indexed_video_ids.append(video_id)

    def fail(self, video_id: int, reason: str, info: VideoInfo | None = None) -> None:
        """Record a failed video at once, dropping any segments of it committed earlier in this run."""
        with self.catalog.session() as session:
            shards = set(session.scalars(select(Segment.shard).where(Segment.video_id == video_id)).all())
            session.execute(delete(Segment).where(Segment.video_id == video_id))
            values = {"status": STATUS_FAILED, "error": reason[:2000], "num_segments": 0, "indexed_at": None}
            session.execute(
                update(Video)
                .where(Video.id == video_id)
                .values(
                    updated_at=utcnow(), run_id=self.run_id, **values, **(_info_columns(info) if info else {})
                )
            )
        if shards:
            self.store.remove_shards(sorted(shards - self.catalog.referenced_shards()))
        remove_thumbnails(self.paths, video_id)
        self._committed.pop(video_id, None)
        self.failed.append((video_id, reason))

    def incomplete_videos(self) -> list[int]:
        """Videos probed in this run whose segments were not all committed (should be empty at the end)."""
        return [
            v for v, (_, expected) in self._probes.items() if self._committed.get(v, expected) != expected
        ]


def _info_columns(info: VideoInfo) -> dict:
    values = dataclasses.asdict(info)
    values.pop("backend")
    return values
