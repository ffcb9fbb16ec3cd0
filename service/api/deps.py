"""Dependencies the routes declare, as `Annotated` aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from service.core.config import Settings
from service.core.errors import Forbidden, Unauthorized
from service.engine import Engine


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_base_url(request: Request) -> str:
    """Prefix for URLs in responses: empty, or the reverse proxy's root_path."""
    return str(request.scope.get("root_path", "") or "").rstrip("/")


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BaseUrlDep = Annotated[str, Depends(get_base_url)]


def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="admin key, when the server has one")] = None,
) -> None:
    """Admin guard: open when no key is configured; otherwise 401 without a key and 403 with a wrong one."""
    if settings.api_key is None:
        return
    if not x_api_key:
        raise Unauthorized("this route needs an admin key in the X-API-Key header",
                           headers={"WWW-Authenticate": "APIKey"})
    expected = settings.api_key.get_secret_value()
    if not secrets.compare_digest(x_api_key.encode(), expected.encode()):
        raise Forbidden("the X-API-Key header does not match the admin key")


AdminDep = Depends(require_api_key)
