"""All routers, assembled once."""

from fastapi import APIRouter

from service.api.routes import admin, health, qa, search, ui, videos

api_router = APIRouter()
api_router.include_router(ui.router)
api_router.include_router(search.router)
api_router.include_router(qa.router)
api_router.include_router(videos.router)
api_router.include_router(admin.router)
api_router.include_router(health.router)
