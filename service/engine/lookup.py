"""Turning a video id from a URL or request body into a catalog record, with one clear 404 when there is none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from service.core.errors import Conflict, NotFound

MAX_ID = 2**63 - 1  # catalog ids are 64-bit integers; anything larger cannot exist


def parse_video_id(raw: Any) -> int:
    """Catalog video ids are integers; anything else cannot name a video (404, not a DB error)."""
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_ID:
        raise NotFound(f"no video with id {text[:64]!r} (video ids are integers)")
    return int(text)


def require_video(reader: Any, raw_video_id: Any) -> Any:
    """The VideoRecord for an id as it appears in a URL or request body; 404 when unknown."""
    video_id = parse_video_id(raw_video_id)
    video = reader.video(video_id)
    if video is None:
        raise NotFound(f"no video with id {video_id}")
    return video


@contextmanager
def stored_arrays_may_vanish() -> Iterator[None]:
    """Reading tokens or embeddings of segments found a moment ago can race a delete: a 409, not a 500."""
    try:
        yield
    except KeyError as exc:
        raise Conflict(f"the index changed while answering (a video was deleted: {exc}); retry") from exc
