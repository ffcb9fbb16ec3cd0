"""Admin routes (guarded by X-API-Key when a key is configured): add and delete videos, jobs, reload."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.deps import AdminDep, BaseUrlDep, EngineDep, SettingsDep
from service.api.uploads import read_json_body, receive_upload
from service.core.errors import BadRequest, NotFound, ServiceError
from service.core.paths import resolve_request_path, video_files_under
from service.schemas.common import ERROR_RESPONSES, ErrorResponse
from service.schemas.jobs import JobPublic, ReloadResponse
from service.schemas.videos import AddVideoRequest

router = APIRouter(tags=["admin"], dependencies=[AdminDep], responses={
    **ERROR_RESPONSES,
    401: {"model": ErrorResponse, "description": "X-API-Key missing"},
    403: {"model": ErrorResponse, "description": "X-API-Key wrong, or path outside the library roots"},
})


class UnsupportedMediaType(ServiceError):
    status_code = 415


_ADD_VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AddVideoRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


@router.post("/videos", status_code=202, response_model=JobPublic, openapi_extra=_ADD_VIDEO_BODY,
             responses={413: {"model": ErrorResponse, "description": "upload too large"}})
async def add_video(request: Request, engine: EngineDep, settings: SettingsDep, base: BaseUrlDep) -> JSONResponse:
    """Index a file or directory under a library root (JSON `{"path"}`), or an uploaded file (multipart `file`).

    Returns 202 and a job at once; the video becomes searchable when the job succeeds.
    """
    engine.require_model()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        saved = await receive_upload(request, settings.resolved_upload_dir, settings.max_upload_bytes)
        files = [saved.resolve()]
    elif content_type in ("application/json", ""):
        body = await read_json_body(request, settings.max_body_bytes)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON body: {exc}") from exc
        try:
            add = AddVideoRequest.model_validate(payload)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc
        roots = settings.allowed_roots
        resolved = await asyncio.to_thread(resolve_request_path, add.path, roots)
        files = await asyncio.to_thread(video_files_under, resolved, roots)
    else:
        raise UnsupportedMediaType(f"send application/json with a path, or multipart/form-data with a file "
                                   f"(got {content_type!r})")
    job = engine.jobs.submit("index", paths=[str(f) for f in files])
    public = JobPublic.from_job(job, base)
    return JSONResponse(public.model_dump(mode="json"), status_code=202, headers={"Location": public.url})


@router.delete("/videos/{video_id}", status_code=202, response_model=JobPublic)
async def delete_video(video_id: str, engine: EngineDep, base: BaseUrlDep) -> JSONResponse:
    """Remove a video from the index (an uploaded file is deleted too); 202 and a job."""
    engine.require_model()
    video = await engine.catalog.video(video_id)
    job = engine.jobs.submit("delete", video_ids=[video.video_id], paths=[str(video.path)])
    public = JobPublic.from_job(job, base)
    return JSONResponse(public.model_dump(mode="json"), status_code=202, headers={"Location": public.url})


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, engine: EngineDep, base: BaseUrlDep) -> JobPublic:
    job = engine.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id[:64]!r} (jobs are kept in memory until the server restarts)")
    return JobPublic.from_job(job, base)


@router.post("/admin/reload", response_model=ReloadResponse,
             responses={409: {"model": ErrorResponse, "description": "an index job is running, or reload failed"}})
async def reload_index(engine: EngineDep, settings: SettingsDep) -> ReloadResponse:
    """Re-open the index directory (after an external `clover index update`) and swap it in atomically."""
    result = await asyncio.to_thread(engine.reload, settings.reload_wait_s)
    return ReloadResponse(**result)
