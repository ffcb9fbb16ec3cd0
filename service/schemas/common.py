"""Pieces shared by several schemas."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from pydantic import BaseModel, Field, StrictInt, StrictStr

# Catalog ids are integers; requests may also send them as numeric strings (they come from URLs).
VideoId = Annotated[StrictInt | StrictStr, Field(description="catalog id of the video (an integer)")]


class ErrorResponse(BaseModel):
    detail: str = Field(description="what was wrong, in words")


def video_url(base: str, video_id: int | str, suffix: str = "") -> str:
    """URL of a video resource, relative to the server (honours a reverse proxy's root_path)."""
    return f"{base}/videos/{quote(str(video_id), safe='')}{suffix}"


# Documented on every route that can produce them, so /docs shows the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Bad request (malformed JSON, impossible value)",
        404: "Unknown video, segment or job",
        422: "A parameter is missing or out of bounds",
        503: "The model or index is not loaded (yet)",
    }.items()
}
