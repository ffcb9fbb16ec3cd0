"""The FastAPI application: `create_app(settings)` builds it; the lifespan loads the engine into app.state.

`clover serve` (service/serve.py) calls the factory with the settings from its options; `uvicorn
service.main:create_app --factory` reads them from `CLOVER_*` environment variables instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from service.api.main import api_router
from service.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.api.routes.ui import STATIC_DIR
from service.core.config import Settings
from service.core.errors import install_error_handlers
from service.core.metrics import ServiceMetrics
from service.engine import Engine
from service.engine.backend import Backend


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  (filled from the environment)
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, metrics, backend)
        app.state.engine = engine
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(
        title="Clover Search",
        summary="Video search and video question answering with the Clover video-language model.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(api_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # added last = outermost: metrics see every response, including 413s and CORS preflights
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Content-Range", "Accept-Ranges"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
