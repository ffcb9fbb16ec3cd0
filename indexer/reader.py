"""The read API of an index directory: the only way `service/` (or anyone) reads what the indexer wrote.

`IndexReader.open` loads index.json and vectors.faiss into memory and opens the catalog; embeddings and tokens are
memory-mapped from their shards on demand. A reader never takes the writer lock and never sees a half-written
file: while an indexer updates the directory the reader keeps searching the FAISS index it loaded, and catalog
lookups of segments deleted since simply come back empty. Reopen to see the new state.

Thread-safe for concurrent searches and lookups (FAISS CPU search is; each catalog call uses its own session).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select

from indexer.catalog import STATUS_INDEXED, Catalog, Segment, Video
from indexer.layout import IndexManifest, IndexOpenError, IndexPaths, read_manifest, resolve_db_url
from indexer.stores import SegmentStore, expand_tokens
from indexer.vectors import apply_search_params, empty_index, read_index
from indexer.vectors import search as faiss_search

__all__ = ["IndexOpenError", "IndexReader", "SegmentRecord", "VideoRecord"]


@dataclass(frozen=True)
class SegmentRecord:
    segment_id: int
    video_id: int
    start: float  # seconds
    end: float
    thumbnail_path: str | None  # absolute path of the JPEG


@dataclass(frozen=True)
class VideoRecord:
    video_id: int
    path: str
    title: str | None
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    size_bytes: int | None
    status: str  # indexed, failed or pending
    error: str | None  # why it failed
    metadata: dict[str, Any] = field(default_factory=dict)
    num_segments: int = 0
    indexed_at: dt.datetime | None = None  # UTC


class IndexReader:
    def __init__(self, paths: IndexPaths, manifest: IndexManifest, catalog: Catalog, index: Any):
        self._paths = paths
        self._manifest = manifest
        self._catalog = catalog
        self._index = index
        self._store = SegmentStore(paths)
        self._owners: tuple[np.ndarray, np.ndarray] | None = None  # see segment_owners
        self._owners_lock = threading.Lock()

    @classmethod
    def open(
        cls, index_dir: str | Path, checkpoint_fingerprint: str | None = None, db_url: str | None = None
    ) -> IndexReader:
        """Open an index; `IndexOpenError` if it is missing, unreadable or built with another checkpoint."""
        paths = IndexPaths(Path(index_dir).resolve())
        manifest = read_manifest(paths)
        if manifest is None:
            raise IndexOpenError(
                f"{paths.root} is not an index (no index.json); build one with `clover index build`"
            )
        if checkpoint_fingerprint and checkpoint_fingerprint != manifest.checkpoint_fingerprint:
            raise IndexOpenError(
                f"index built with checkpoint {manifest.checkpoint_fingerprint}, not {checkpoint_fingerprint}"
            )
        try:
            index = read_index(paths.vectors) if paths.vectors.is_file() else empty_index(manifest.dim)
        except RuntimeError as error:
            raise IndexOpenError(
                f"{paths.vectors} is unreadable ({error}); run `clover index verify --repair`"
            ) from None
        if index.d != manifest.dim:
            raise IndexOpenError(f"vectors.faiss has dimension {index.d}, index.json says {manifest.dim}")
        apply_search_params(index, manifest.search_params)
        try:
            catalog = Catalog(resolve_db_url(paths, manifest, db_url), create=False)
            catalog.counts()  # fails now, not on the first request, if the catalog is missing or foreign
        except IndexOpenError:
            raise
        except Exception as error:
            raise IndexOpenError(f"cannot open the catalog: {type(error).__name__}: {error}") from None
        return cls(paths, manifest, catalog, index)

    # ---- properties --------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self._manifest.dim)

    @property
    def num_vectors(self) -> int:
        return int(self._index.ntotal)

    @property
    def fingerprint(self) -> str:
        """sha256 of the checkpoint's model.safetensors that encoded this index."""
        return self._manifest.checkpoint_fingerprint

    @property
    def index_dir(self) -> Path:
        return self._paths.root

    @property
    def manifest(self) -> IndexManifest:
        return self._manifest

    @property
    def token_shape(self) -> tuple[int, int]:
        """(K, C) of what `video_tokens` returns (always the model's full K, pooled tokens expanded)."""
        return tuple(self._manifest.model_token_shape)

    # ---- search ------------------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest segments by cosine: scores [Q, k] float32 and segment ids [Q, k] int64 (-1, -inf: none)."""
        query = np.asarray(query, dtype=np.float32)
        if query.ndim == 1:
            query = query[None, :]
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(f"query must be [Q, {self.dim}], got {tuple(query.shape)}")
        if k <= 0:
            raise ValueError("k must be positive")
        if self.num_vectors == 0:
            return np.full((len(query), k), -np.inf, np.float32), np.full((len(query), k), -1, np.int64)
        return faiss_search(self._index, query, k)

    # ---- catalog -----------------------------------------------------------------------------------------

    def segments(self, segment_ids: list[int]) -> list[SegmentRecord]:
        """Records in the order asked; ids unknown to the catalog (deleted since, or -1) are left out."""
        wanted = [int(i) for i in segment_ids if int(i) >= 0]
        if not wanted:
            return []
        with self._catalog.session() as session:
            rows = session.execute(
                select(Segment.id, Segment.video_id, Segment.start, Segment.end, Segment.thumbnail)
                .join(Video)
                .where(Segment.id.in_(sorted(set(wanted))), Video.status == STATUS_INDEXED)
            ).all()
        by_id = {int(row[0]): self._segment_record(row) for row in rows}
        return [by_id[i] for i in wanted if i in by_id]

    def segment_owners(self, segment_ids: np.ndarray | list[int]) -> np.ndarray:
        """The video id of each segment, -1 where the segment is unknown or its video is not indexed.

        Answered from a segment -> video map read from the catalog once per reader (16 bytes a segment), so a
        search can group hundreds of FAISS candidates by video without a query each. The map is as old as the
        reader: callers confirm what they return with `segments` / `videos`, which ask the catalog.
        """
        ids, owners = self._owner_map()
        wanted = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return np.full(len(wanted), -1, np.int64)
        pos = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
        return np.where(ids[pos] == wanted, owners[pos], -1)

    def _owner_map(self) -> tuple[np.ndarray, np.ndarray]:
        with self._owners_lock:
            if self._owners is None:
                with self._catalog.session() as session:
                    rows = session.execute(
                        select(Segment.id, Segment.video_id)
                        .join(Video)
                        .where(Video.status == STATUS_INDEXED)
                        .order_by(Segment.id)
                    ).all()
                pairs = np.array(rows, dtype=np.int64).reshape(-1, 2)
                self._owners = (np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1]))
            return self._owners

    def segments_of_video(self, video_id: int) -> list[SegmentRecord]:
        """The video's segments in time order (empty unless the video is indexed)."""
        with self._catalog.session() as session:
            rows = session.execute(
                select(Segment.id, Segment.video_id, Segment.start, Segment.end, Segment.thumbnail)
                .join(Video)
                .where(Segment.video_id == int(video_id), Video.status == STATUS_INDEXED)
                .order_by(Segment.ordinal)
            ).all()
        return [self._segment_record(row) for row in rows]

    def video(self, video_id: int | str) -> VideoRecord | None:
        """By catalog id (an int, or a string of digits), or by the video's path."""
        with self._catalog.session() as session:
            row = None
            text = str(video_id).strip()
            if isinstance(video_id, int) or (text.isdigit() and len(text) < 19):
                row = session.get(Video, int(text))
            elif text:
                row = session.scalar(select(Video).where(Video.path == text))
            return self._video_record(row) if row is not None else None

    def videos(self, video_ids: list[int]) -> dict[int, VideoRecord]:
        """Records by catalog id, in one query; ids unknown to the catalog are left out."""
        wanted = sorted({int(i) for i in video_ids})
        if not wanted:
            return {}
        with self._catalog.session() as session:
            rows = session.scalars(select(Video).where(Video.id.in_(wanted))).all()
            return {int(row.id): self._video_record(row) for row in rows}

    def list_videos(
        self, offset: int = 0, limit: int = 50, status: str | None = None, query: str | None = None
    ) -> tuple[list[VideoRecord], int]:
        """A page of videos by id, and how many match: `status` filters, `query` matches title or path."""
        conditions = []
        if status:
            conditions.append(Video.status == status)
        if query:
            pattern = f"%{query.strip().lower()}%"
            conditions.append(
                or_(func.lower(Video.title).like(pattern), func.lower(Video.path).like(pattern))
            )
        with self._catalog.session() as session:
            total = session.scalar(select(func.count(Video.id)).where(*conditions)) or 0
            rows = session.scalars(
                select(Video)
                .where(*conditions)
                .order_by(Video.id)
                .offset(max(offset, 0))
                .limit(max(limit, 0))
            ).all()
            return [self._video_record(row) for row in rows], int(total)

    # ---- stored arrays -----------------------------------------------------------------------------------

    def video_tokens(self, segment_ids: list[int]) -> np.ndarray:
        """fp16 [N, K, C] backbone tokens, for re-ranking and QA without decoding the video again."""
        present, tokens = self.present_video_tokens(segment_ids)
        if len(present) != len(segment_ids):
            found = set(present)
            raise KeyError(f"unknown segment ids: {[int(i) for i in segment_ids if int(i) not in found][:10]}")
        return tokens

    def present_video_tokens(self, segment_ids: list[int]) -> tuple[list[int], np.ndarray]:
        """(the ids the catalog still has, in the order asked, and their tokens): for callers that would rather
        drop a segment deleted a moment ago than fail (re-ranking a result list)."""
        located = self._located(segment_ids)
        present = [i for i in (int(s) for s in segment_ids) if i in located]
        if not present:
            return [], np.zeros((0, *self.token_shape), np.float16)
        tokens = self._store.read_tokens([located[i] for i in present])
        return present, expand_tokens(tokens, tuple(self._manifest.token_grid))

    def segment_embeddings(self, segment_ids: list[int]) -> np.ndarray:
        """float32 [N, D] unit-norm segment embeddings (stored as fp16)."""
        return self._store.read_embeddings(self._locations(segment_ids)).astype(np.float32)

    def _located(self, segment_ids: list[int]) -> dict[int, tuple[str, int]]:
        """segment id -> (shard, row), for the ids the catalog has."""
        wanted = [int(i) for i in segment_ids]
        if not wanted:
            raise ValueError("no segment ids given")
        with self._catalog.session() as session:
            rows = session.execute(
                select(Segment.id, Segment.shard, Segment.row).where(Segment.id.in_(sorted(set(wanted))))
            ).all()
        return {int(i): (str(shard), int(row)) for i, shard, row in rows}

    def _locations(self, segment_ids: list[int]) -> list[tuple[str, int]]:
        """(shard, row) of each segment, in order; KeyError if any is unknown."""
        by_id = self._located(segment_ids)
        missing = [int(i) for i in segment_ids if int(i) not in by_id]
        if missing:
            raise KeyError(f"unknown segment ids: {missing[:10]}")
        return [by_id[int(i)] for i in segment_ids]

    # ---- stats -------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        counts = self._catalog.counts()
        sizes = self._store.bytes_on_disk()
        segments = max(counts["segment_rows"], 1)
        vectors_bytes = self._paths.vectors.stat().st_size if self._paths.vectors.is_file() else 0
        stored_tokens, channels = self._manifest.token_shape
        return {
            "videos": counts["videos"],
            "indexed": counts["indexed"],
            "failed": counts["failed"],
            "pending": counts["pending"],
            "segments": counts["segments"],
            "vectors": self.num_vectors,
            "dim": self.dim,
            "factory": self._manifest.built_factory,
            "search_params": self._manifest.search_params,
            "fingerprint": self.fingerprint,
            "window": self._manifest.window,
            "stride": self._manifest.stride,
            "num_frames": self._manifest.num_frames,
            "image_size": self._manifest.image_size,
            "stored_tokens": [int(stored_tokens), int(channels)],
            "bytes": {**sizes, "vectors": vectors_bytes},
            "bytes_per_segment": {
                "embedding": self.dim * 2,
                "tokens": int(stored_tokens * channels * 2),
                "thumbnail": round(sizes["thumbs"] / segments),
                "on_disk": round(
                    (sizes["embeddings"] + sizes["tokens"] + sizes["thumbs"] + vectors_bytes) / segments
                ),
            },
            "format_version": self._manifest.format_version,
            "catalog": self._manifest.catalog,
        }

    def close(self) -> None:
        self._store.close()
        self._catalog.dispose()

    def __enter__(self) -> IndexReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- records -----------------------------------------------------------------------------------------

    def _segment_record(self, row: Any) -> SegmentRecord:
        segment_id, video_id, start, end, thumbnail = row
        thumbnail_path = str(self._paths.root / thumbnail) if thumbnail else None
        return SegmentRecord(int(segment_id), int(video_id), float(start), float(end), thumbnail_path)

    @staticmethod
    def _video_record(video: Video) -> VideoRecord:
        indexed_at = video.indexed_at
        if indexed_at is not None and indexed_at.tzinfo is None:  # SQLite stores naive UTC
            indexed_at = indexed_at.replace(tzinfo=dt.UTC)
        return VideoRecord(
            video_id=int(video.id),
            path=video.path,
            title=video.title,
            duration=video.duration,
            fps=video.fps,
            width=video.width,
            height=video.height,
            size_bytes=video.size_bytes,
            status=video.status,
            error=video.error,
            metadata=dict(video.extra or {}),
            num_segments=int(video.num_segments or 0),
            indexed_at=indexed_at,
        )
