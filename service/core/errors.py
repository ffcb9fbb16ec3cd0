"""Errors the service raises on purpose, and the handlers that turn every error into `{"detail": ...}`.

Bad input must never surface as a traceback or a 5xx: the engine raises `ServiceError` subclasses with the
status code that describes the problem, validation errors keep FastAPI's 422 but get a sentence a person can
read, malformed JSON is a 400, and anything unexpected is a bare 500 with no internals in the body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("clover.service")


class ServiceError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(ServiceError):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Forbidden(ServiceError):
    status_code = 403


class Unauthorized(ServiceError):
    status_code = 401


class Conflict(ServiceError):
    """The request is valid but the loaded model or index cannot serve it (e.g. no QA head)."""

    status_code = 409


class PayloadTooLarge(ServiceError):
    status_code = 413


class RangeNotSatisfiable(ServiceError):
    status_code = 416


class NotReady(ServiceError):
    """The model or index is still loading (or failed to load); the request may succeed later."""

    status_code = 503


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("query", "k") -> "query.k"; ("body", "candidates", 2) -> "body.candidates[2]"
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def readable_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One line per problem: `query.k: Input should be greater than or equal to 1`."""
    lines = []
    for err in errors:
        where = _location(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        lines.append(f"{where}: {msg}" if where else msg)
    return "; ".join(lines) or "invalid request"


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        # The body is not JSON at all: a client bug, not a field value out of range.
        ctx = json_errors[0].get("ctx") or {}
        reason = ctx.get("error", "could not be parsed")
        return JSONResponse({"detail": f"malformed JSON body: {reason}"}, status_code=400)
    simplified = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]
    return JSONResponse(
        {"detail": readable_validation_errors(errors), "errors": simplified}, status_code=422
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


class Unprocessable(ServiceError):
    """A well-formed request whose values are out of the configured bounds (same status as validation errors)."""

    status_code = 422
