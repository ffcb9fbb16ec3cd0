"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from service.api.deps import EngineDep
from service.engine import EngineState
from service.schemas.jobs import HealthResponse, ReadinessResponse

router = APIRouter(tags=["health"])

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is up and its event loop answers (says nothing about the model or the index)."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadinessResponse,
            responses={503: {"model": ReadinessResponse, "description": "not ready: loading or failed"}})
async def readyz(engine: EngineDep) -> JSONResponse:
    """200 once model and index are loaded; 503 (with the reason) before that or when loading failed."""
    ready = engine.state == EngineState.READY
    body = ReadinessResponse(
        status=engine.state.value, detail=engine.state_detail, model_loaded=engine.model is not None,
        index_loaded=engine.readers.loaded, generation=engine.readers.generation,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: request counts and latencies by route, batching, index size."""
    text = request.app.state.metrics.render()
    return PlainTextResponse(text, media_type=PROMETHEUS_CONTENT_TYPE)
