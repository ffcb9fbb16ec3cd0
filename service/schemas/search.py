"""Search requests and results."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import VideoId, video_url


class SearchFiltersRequest(BaseModel):
    """Optional conditions on the videos a search may return (POST /search only); all must hold."""

    model_config = ConfigDict(extra="forbid")

    video_ids: list[VideoId] | None = Field(None, max_length=1000, description="only these videos")
    path_prefix: str | None = Field(None, max_length=4096, description="video path starts with this")
    title_contains: str | None = Field(None, max_length=500, description="case-insensitive title substring")
    min_duration: float | None = Field(None, ge=0, description="seconds")
    max_duration: float | None = Field(None, ge=0, description="seconds")
    metadata: dict[str, str | int | float | bool | None] | None = Field(
        None, max_length=50, description="exact matches on the catalog's per-video metadata")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str = Field(description="the text query", examples=["a red ball bounces on a table"])
    k: int = Field(10, ge=1, description="results per page (at most the server's max_k)")
    offset: int = Field(0, ge=0, description="results to skip (paging)")
    rerank: bool = Field(False, description="re-score the top rerank_k videos with the fusion encoder")
    rerank_k: int | None = Field(None, ge=1, description="videos to re-rank; default the server's rerank_k")
    filters: SearchFiltersRequest | None = None


class SearchHitPublic(BaseModel):
    video_id: VideoId
    segment_id: int = Field(description="the video's best-matching segment (the moment)")
    path: str
    title: str | None
    start: float = Field(description="moment start, seconds")
    end: float = Field(description="moment end, seconds")
    score: float = Field(description="cosine similarity of query and moment embeddings")
    rerank_score: float | None = Field(description="re-ranking score when re-ranked (fusion match log-odds + weighted cosine), else null")
    thumbnail_url: str
    stream_url: str = Field(description="the video, seekable; append #t=start to start at the moment")
    duration: float | None = Field(None, description="video length, seconds")

    @classmethod
    def from_hit(cls, hit: Any, base: str = "") -> SearchHitPublic:
        video, segment = hit.video, hit.segment
        return cls(
            video_id=video.video_id,
            segment_id=int(segment.segment_id),
            path=str(video.path),
            title=video.title,
            start=float(segment.start),
            end=float(segment.end),
            score=round(float(hit.score), 6),
            rerank_score=None if hit.rerank_score is None else round(float(hit.rerank_score), 6),
            thumbnail_url=video_url(base, video.video_id, f"/thumbnail?segment_id={int(segment.segment_id)}"),
            stream_url=video_url(base, video.video_id, "/stream"),
            duration=None if video.duration is None else float(video.duration),
        )


class SearchResponse(BaseModel):
    query: str
    took_ms: float
    k: int
    offset: int
    has_more: bool = Field(description="whether a next page (offset + k) has results")
    rerank: bool
    rerank_k: int = Field(description="videos actually re-ranked (0 without rerank)")
    results: list[SearchHitPublic]


class SimilarResponse(BaseModel):
    video_id: VideoId
    took_ms: float
    k: int
    offset: int
    has_more: bool
    results: list[SearchHitPublic]
