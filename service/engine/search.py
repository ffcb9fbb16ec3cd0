"""Text-to-video search, fusion re-ranking and video-to-video similarity.

A query is encoded once (through the micro-batcher), FAISS returns the nearest *segments*, and segments are
grouped per video keeping each video's best-scoring segment as its "moment". Pages are cut from the grouped
list. With re-ranking, the best segments of the top `rerank_k` videos are re-scored by the fusion encoder from
their cached tokens (`model.match_score`) and those videos are ordered by `model.rerank_scores` (match log-odds
plus the weighted cosine); videos below `rerank_k` keep their embedding order after them, so paging stays
consistent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.errors import Conflict
from service.engine import inference
from service.engine.lookup import require_video, stored_arrays_may_vanish

if TYPE_CHECKING:
    from service.engine.engine import Engine

RERANK_CHUNK = 32  # token grids per match_score call: bounds peak memory whatever rerank_k is


@dataclass
class SearchFilters:
    """Conditions on the video a hit belongs to; all given conditions must hold."""

    video_ids: list[str] | None = None
    path_prefix: str | None = None
    title_contains: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    metadata: dict[str, Any] | None = None  # exact match on the catalog's per-video metadata

    def matches(self, video: Any) -> bool:
        if video is None:
            return False
        if self.video_ids is not None and str(video.video_id) not in {str(v) for v in self.video_ids}:
            return False
        if self.path_prefix is not None and not str(video.path).startswith(self.path_prefix):
            return False
        if self.title_contains is not None and self.title_contains.lower() not in str(video.title or "").lower():
            return False
        duration = video.duration
        if self.min_duration is not None and (duration is None or duration < self.min_duration):
            return False
        if self.max_duration is not None and (duration is None or duration > self.max_duration):
            return False
        if self.metadata:
            meta = video.metadata or {}
            if any(meta.get(key) != value for key, value in self.metadata.items()):
                return False
        return True


@dataclass
class SearchParams:
    query: str
    k: int = 10
    offset: int = 0
    rerank: bool = False
    rerank_k: int = 20
    filters: SearchFilters | None = None


@dataclass
class Hit:
    video: Any  # VideoRecord
    segment: Any  # SegmentRecord: the video's best moment
    score: float  # cosine similarity of query and segment embeddings
    rerank_score: float | None = None  # model.rerank_scores: match log-odds + weighted cosine, when re-ranked


@dataclass
class SearchOutcome:
    hits: list[Hit]
    has_more: bool
    reranked: int = 0  # how many videos were re-scored
    timings_ms: dict[str, float] = field(default_factory=dict)


class SearchEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def search(self, params: SearchParams) -> SearchOutcome:
        t0 = time.perf_counter()
        query_vec = await self.engine.batcher.encode(params.query)  # (D,)
        t1 = time.perf_counter()
        outcome = await self.engine.run(self._search_sync, query_vec, params)
        outcome.timings_ms["encode"] = round((t1 - t0) * 1000, 2)
        return outcome

    async def similar(self, raw_video_id: str, k: int, offset: int = 0) -> tuple[Any, SearchOutcome]:
        return await self.engine.run(self._similar_sync, raw_video_id, k, offset)

    # ---- executor side -----------------------------------------------------------------------------------

    def _search_sync(self, query_vec: np.ndarray, params: SearchParams) -> SearchOutcome:
        engine = self.engine
        want = params.offset + params.k + 1  # one extra video tells whether another page exists
        pool = max(want, params.rerank_k if params.rerank else 0)
        timings: dict[str, float] = {}
        with engine.readers.lease() as reader:
            t0 = time.perf_counter()
            keep = params.filters.matches if params.filters else None
            groups = self._collect(reader, query_vec, pool, keep=keep)
            t1 = time.perf_counter()
            timings["faiss_ms"] = round((t1 - t0) * 1000, 2)
            hits = [Hit(video, segment, score) for video, segment, score in groups]
            reranked = 0
            if params.rerank and hits:
                top = hits[: params.rerank_k]
                scored = self._rerank_scores(reader, [h.segment.segment_id for h in top], params.query)
                top = [h for h in top if h.segment.segment_id in scored]  # a video deleted meanwhile drops out
                match = np.array([scored[h.segment.segment_id] for h in top], dtype=np.float32)
                cosines = np.array([h.score for h in top], dtype=np.float32)
                scores = inference.rerank_scores(self.engine.require_model(), match, cosines)
                for hit, value in zip(top, scores, strict=True):
                    hit.rerank_score = float(value)
                # stable sort: equal rerank scores keep their embedding order
                hits = sorted(top, key=lambda h: -(h.rerank_score or 0.0)) + hits[params.rerank_k:]
                reranked = len(top)
                timings["rerank_ms"] = round((time.perf_counter() - t1) * 1000, 2)
        page = hits[params.offset: params.offset + params.k]
        return SearchOutcome(page, has_more=len(hits) > params.offset + params.k, reranked=reranked,
                             timings_ms=timings)

    def _rerank_scores(self, reader: Any, segment_ids: list[int], query: str) -> dict[int, float]:
        """segment id -> match log-odds, for the segments the catalog still has (a delete can race a search)."""
        model = self.engine.require_model()
        out: dict[int, float] = {}
        with self.engine.timed("rerank"):
            for start in range(0, len(segment_ids), RERANK_CHUNK):
                with stored_arrays_may_vanish():
                    present, tokens = reader.present_video_tokens(segment_ids[start: start + RERANK_CHUNK])
                if present:
                    out.update(zip(present, inference.match_scores(model, tokens, query).tolist(), strict=True))
        return out

    def _similar_sync(self, raw_video_id: str, k: int, offset: int) -> tuple[Any, SearchOutcome]:
        with self.engine.readers.lease() as reader:
            video = require_video(reader, raw_video_id)
            segments = reader.segments_of_video(video.video_id)
            if not segments:
                raise Conflict(f"video {video.video_id} has no indexed segments (status: {video.status})")
            with stored_arrays_may_vanish():
                embeddings = reader.segment_embeddings([s.segment_id for s in segments])  # (S, D)
            centre = np.asarray(embeddings, dtype=np.float32).mean(axis=0)
            norm = float(np.linalg.norm(centre))
            if norm > 0:
                centre /= norm
            want = offset + k + 1
            groups = self._collect(reader, centre, want, exclude=video.video_id, extra=len(segments))
        hits = [Hit(v, s, score) for v, s, score in groups]
        page = hits[offset: offset + k]
        return video, SearchOutcome(page, has_more=len(hits) > offset + k)

    def _collect(
        self,
        reader: Any,
        query_vec: np.ndarray,
        want: int,
        *,
        keep: Callable[[Any], bool] | None = None,
        exclude: Any = None,
        extra: int = 0,
    ) -> list[tuple[Any, Any, float]]:
        """The best `want` videos as (video, best segment, score), best first.

        FAISS ranks segments, not videos, so a video with many close segments can fill the top-n alone: the
        search widens (x4) until `want` distinct videos pass the filters or the whole index (capped by
        `max_search_candidates`) has been looked at. Candidates are grouped by video through the reader's
        in-memory segment -> video map; only videos that may make the list are read from the catalog, which
        also drops any deleted since the reader was opened.
        """
        total = int(reader.num_vectors)
        limit = min(total, self.engine.settings.max_search_candidates)
        if limit <= 0:
            return []
        n = min(limit, max(4 * want + extra, 64))
        query = np.ascontiguousarray(query_vec, dtype=np.float32).reshape(1, -1)  # (1, D)
        known: dict[int, Any] = {}  # video id -> VideoRecord (None: gone from the catalog), across rounds
        while True:
            with self.engine.timed("faiss_search"):
                scores, ids = reader.search(query, n)  # (1, n) each; -1 where fewer than n exist
            candidates = _best_segment_per_video(reader.segment_owners(ids[0]), ids[0], scores[0], exclude)
            groups: list[tuple[Any, Any, float]] = []
            chunk = max(want, 16)
            for start in range(0, len(candidates), chunk):
                groups += _resolve(reader, candidates[start: start + chunk], known, keep)
                if len(groups) >= want:
                    return groups[:want]
            if n >= limit:
                return groups
            n = min(limit, n * 4)


def _best_segment_per_video(
    owners: np.ndarray, seg_ids: np.ndarray, scores: np.ndarray, exclude: Any = None
) -> list[tuple[int, int, float]]:
    """(video id, its best segment id, score) per video, best video first; segments whose video is unknown
    (-1: FAISS padding, deleted, or a stale FAISS file) and the `exclude`d video are left out."""
    best: list[tuple[int, int, float]] = []
    seen: set[int] = set()
    for i in np.argsort(-scores, kind="stable"):
        video_id = int(owners[i])
        if video_id < 0 or video_id in seen or video_id == exclude:
            continue
        seen.add(video_id)
        best.append((video_id, int(seg_ids[i]), float(scores[i])))
    return best


def _resolve(
    reader: Any, candidates: list[tuple[int, int, float]], known: dict[int, Any], keep: Callable[[Any], bool] | None
) -> list[tuple[Any, Any, float]]:
    """Catalog records of (video id, segment id, score) candidates, in order: two queries, whatever their number.
    Candidates the catalog no longer has as indexed, or that `keep` rejects, are dropped."""
    new = [video_id for video_id, _, _ in candidates if video_id not in known]
    found = reader.videos(new)
    known.update({video_id: found.get(video_id) for video_id in new})
    segments = {s.segment_id: s for s in reader.segments([seg_id for _, seg_id, _ in candidates])}
    out = []
    for video_id, seg_id, score in candidates:
        video, segment = known[video_id], segments.get(seg_id)
        if video is None or segment is None or segment.video_id != video_id:  # gone, or its id reused since
            continue
        if keep is not None and not keep(video):
            continue
        out.append((video, segment, score))
    return out
