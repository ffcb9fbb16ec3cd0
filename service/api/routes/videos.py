"""Reading the catalog: list, details, thumbnails, streaming, similar videos."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from service.api.bounds import check_page
from service.api.deps import BaseUrlDep, EngineDep, SettingsDep
from service.api.streaming import file_response
from service.schemas.common import ERROR_RESPONSES, ErrorResponse
from service.schemas.search import SearchHitPublic, SimilarResponse
from service.schemas.videos import SegmentPublic, VideoDetailPublic, VideoListResponse, VideoPublic

router = APIRouter(prefix="/videos", tags=["videos"], responses=ERROR_RESPONSES)


@router.get("", response_model=VideoListResponse)
async def list_videos(
    engine: EngineDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    offset: Annotated[int, Query(description="videos to skip")] = 0,
    limit: Annotated[int, Query(description="videos per page")] = 20,
    status: Annotated[str | None, Query(max_length=32, description="indexed | failed | ...")] = None,
    q: Annotated[str | None, Query(max_length=500, description="substring of title or path")] = None,
) -> VideoListResponse:
    """The catalog, a page at a time."""
    check_page(limit, offset, settings, k_name="limit")
    videos, total = await engine.catalog.list_videos(offset, limit, status or None, (q or "").strip() or None)
    return VideoListResponse(total=total, offset=offset, limit=limit,
                             videos=[VideoPublic.from_record(v, base) for v in videos])


@router.get("/{video_id}", response_model=VideoDetailPublic)
async def get_video(video_id: str, engine: EngineDep, base: BaseUrlDep) -> VideoDetailPublic:
    """One video with its segments (the moments search can return)."""
    video, segments = await engine.catalog.video_with_segments(video_id)
    public = VideoPublic.from_record(video, base)
    thumb = public.thumbnail_url
    return VideoDetailPublic(**public.model_dump(), segments=[
        SegmentPublic(segment_id=int(s.segment_id), start=float(s.start), end=float(s.end),
                      thumbnail_url=f"{thumb}?segment_id={int(s.segment_id)}")
        for s in segments
    ])


@router.get("/{video_id}/thumbnail", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG"}})
async def get_thumbnail(
    video_id: str,
    engine: EngineDep,
    segment_id: Annotated[int | None, Query(description="default: the middle segment")] = None,
) -> FileResponse:
    path = await engine.catalog.thumbnail_file(video_id, segment_id)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.head("/{video_id}/stream", include_in_schema=False)
@router.get(
    "/{video_id}/stream",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "the whole file"},
        206: {"content": {"video/mp4": {}}, "description": "the requested byte range"},
        403: {"model": ErrorResponse, "description": "the file lies outside the library roots"},
        416: {"model": ErrorResponse, "description": "malformed or unsatisfiable Range"},
    },
)
async def stream_video(video_id: str, request: Request, engine: EngineDep) -> Response:
    """The video file, with HTTP Range support (seekable in a browser's <video>)."""
    _, path = await engine.catalog.video_file(video_id)
    return file_response(request, path)


@router.get("/{video_id}/similar", response_model=SimilarResponse)
async def similar_videos(
    video_id: str,
    engine: EngineDep,
    settings: SettingsDep,
    base: BaseUrlDep,
    k: Annotated[int, Query(description="results per page")] = 10,
    offset: Annotated[int, Query(description="results to skip")] = 0,
) -> SimilarResponse:
    """Videos closest to this one (its mean segment embedding searched against every segment)."""
    t0 = time.perf_counter()
    check_page(k, offset, settings)
    video, outcome = await engine.search.similar(video_id, k, offset)
    return SimilarResponse(
        video_id=video.video_id, took_ms=round((time.perf_counter() - t0) * 1000, 2), k=k, offset=offset,
        has_more=outcome.has_more, results=[SearchHitPublic.from_hit(h, base) for h in outcome.hits])
