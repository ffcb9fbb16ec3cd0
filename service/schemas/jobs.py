"""Background indexing jobs and admin results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.engine.jobs import Job


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class JobPublic(BaseModel):
    job_id: str
    kind: str = Field(description="index | delete")
    status: str = Field(description="queued | running | succeeded | failed")
    paths: list[str]
    video_ids: list[int | str]
    created_at: str
    started_at: str | None
    finished_at: str | None
    summary: dict[str, Any] | None = Field(description="the indexer's report and the reload that followed")
    error: str | None
    url: str = Field(description="poll this for the job's status")

    @classmethod
    def from_job(cls, job: Job, base: str = "") -> JobPublic:
        return cls(
            job_id=job.job_id, kind=job.kind, status=job.status, paths=job.paths, video_ids=job.video_ids,
            created_at=_iso(job.created_at) or "", started_at=_iso(job.started_at),
            finished_at=_iso(job.finished_at), summary=job.summary, error=job.error,
            url=f"{base}/jobs/{job.job_id}",
        )


class ReloadResponse(BaseModel):
    generation: int = Field(description="how many times an index has been loaded since start")
    num_vectors: int
    fingerprint: str | None
    took_ms: float


class HealthResponse(BaseModel):
    status: str


class ReadinessResponse(BaseModel):
    status: str = Field(description="ready | loading | no_index | failed")
    detail: str
    model_loaded: bool
    index_loaded: bool
    generation: int
