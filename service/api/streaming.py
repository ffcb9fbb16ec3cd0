"""Serving a video file with HTTP Range support, so browsers can seek (RFC 9110 section 14).

One range per request is served as 206 Partial Content; a multi-range request is answered with the whole file
(200), which the RFC allows and every browser handles. A malformed or unsatisfiable range is a 416 with
`Content-Range: bytes */size`. The file is read in chunks in a worker thread, never loaded whole.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.core.errors import RangeNotSatisfiable

CHUNK_BYTES = 256 * 1024


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte range `(first, last)` a Range header asks for, or None to send the whole file."""
    unit, sep, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not sep or not spec.strip():
        raise _unsatisfiable(size, f"malformed Range header {header!r} (expected bytes=first-last)")
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > 1:
        return None
    first_text, dash, last_text = parts[0].partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or (first_text and not first_text.isdigit()) or (last_text and not last_text.isdigit()):
        raise _unsatisfiable(size, f"malformed Range header {header!r}")
    if not first_text:  # suffix range: the last N bytes
        if not last_text or int(last_text) == 0:
            raise _unsatisfiable(size, f"malformed Range header {header!r}")
        if size == 0:
            raise _unsatisfiable(size, "the file is empty")
        return max(size - int(last_text), 0), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last < first:
        raise _unsatisfiable(size, f"range {first}-{last} ends before it starts")
    if first >= size:
        raise _unsatisfiable(size, f"range starts at byte {first} but the file has {size} bytes")
    return first, min(last, size - 1)


def _unsatisfiable(size: int, detail: str) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(detail, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})


def _read_chunks(path: Path, first: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(first)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(CHUNK_BYTES, remaining))
            if not chunk:  # the file shrank under us: stop rather than promise bytes that are gone
                return
            remaining -= len(chunk)
            yield chunk


def file_response(request: Request, path: Path) -> Response:
    """200 with the whole file, or 206 with the requested range; HEAD gets the headers only."""
    stat = os.stat(path)
    size = stat.st_size
    etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
        "Cache-Control": "private, max-age=3600",
    }
    byte_range = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    # If-Range: only honour the range when the client's copy is still this file
    if range_header and (if_range is None or if_range in (etag, headers["Last-Modified"])):
        byte_range = parse_range(range_header, size)
    if byte_range is None:
        first, length, status = 0, size, 200
    else:
        first, last = byte_range
        length, status = last - first + 1, 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(_read_chunks(path, first, length), status_code=status, headers=headers,
                             media_type=media_type)
