"""Receiving a video upload without ever holding more than the configured size.

The declared Content-Length is checked before a byte is read, and the body stream is counted while it is
parsed, so a client that lies about (or omits) the length is cut off at the limit with a 413 too.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.core.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.core.paths import safe_upload_name

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")


def check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length must be a number")
        if int(declared) > limit:
            raise _too_large(limit)


async def limited_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        yield chunk


async def read_json_body(request: Request, limit: int) -> bytes:
    check_declared_length(request, limit)
    return b"".join([chunk async for chunk in limited_body(request, limit)])


async def receive_upload(request: Request, upload_dir: Path, max_bytes: int) -> Path:
    """Save the multipart field `file` under `upload_dir` with a fresh, safe name; returns its path."""
    body_limit = max_bytes + MULTIPART_OVERHEAD
    check_declared_length(request, body_limit)
    parser = MultiPartParser(request.headers, limited_body(request, body_limit), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from exc
    upload = form.get("file")
    try:
        if not isinstance(upload, UploadFile):
            raise Unprocessable("multipart upload needs the video in a field named 'file'")
        if upload.size is not None and upload.size > max_bytes:
            raise _too_large(max_bytes)
        if upload.size == 0:
            raise Unprocessable("the uploaded file is empty")
        name = safe_upload_name(upload.filename)
        destination = upload_dir / f"{uuid.uuid4().hex[:12]}_{name}"
        await asyncio.to_thread(_save, upload, destination)
        return destination
    finally:
        await form.close()


def _save(upload: UploadFile, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    upload.file.seek(0)
    partial = destination.with_name(destination.name + ".part")
    with open(partial, "wb") as out:
        shutil.copyfileobj(upload.file, out, length=1024 * 1024)
    partial.replace(destination)  # the indexer never sees a half-written file
