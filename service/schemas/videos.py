"""Videos in the catalog, and admin requests that add them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import VideoId, video_url


class SegmentPublic(BaseModel):
    segment_id: int
    start: float
    end: float
    thumbnail_url: str


class VideoPublic(BaseModel):
    video_id: VideoId
    path: str
    title: str | None
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    size_bytes: int | None
    status: str
    error: str | None
    metadata: dict[str, Any]
    num_segments: int
    indexed_at: str | None
    thumbnail_url: str
    stream_url: str

    @classmethod
    def from_record(cls, video: Any, base: str = "") -> VideoPublic:
        indexed_at = video.indexed_at
        return cls(
            video_id=video.video_id,
            path=str(video.path),
            title=video.title,
            duration=_opt_float(video.duration),
            fps=_opt_float(video.fps),
            width=video.width,
            height=video.height,
            size_bytes=video.size_bytes,
            status=str(video.status),
            error=video.error,
            metadata=dict(video.metadata or {}),
            num_segments=int(video.num_segments or 0),
            indexed_at=indexed_at.isoformat() if hasattr(indexed_at, "isoformat") else (
                None if indexed_at is None else str(indexed_at)),
            thumbnail_url=video_url(base, video.video_id, "/thumbnail"),
            stream_url=video_url(base, video.video_id, "/stream"),
        )


class VideoDetailPublic(VideoPublic):
    segments: list[SegmentPublic]


class VideoListResponse(BaseModel):
    total: int
    offset: int
    limit: int
    videos: list[VideoPublic]


class AddVideoRequest(BaseModel):
    """Index a file or a directory that lies under one of the server's library roots."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=4096, description="absolute, or relative to a library root",
                      examples=["holidays/beach.mp4"])


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
