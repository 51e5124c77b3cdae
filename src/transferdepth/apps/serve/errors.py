"""Errors of the HTTP API: every one a JSON body `{"detail": "<one line>"}` with its status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error answered as `{"detail": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"detail": message}` on one line, with `status` and `headers`."""
    return JSONResponse({"detail": " ".join(str(message).split())}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """ApiError, FastAPI's own 404 / 405 / 422 and any other exception -> one-line JSON errors."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            msg = f"method {request.method} not allowed on {request.url.path} (allowed: {allow})"
        elif exc.status_code == 404:
            msg = f"no such endpoint: {request.url.path} (see /docs)"
        return error_response(exc.status_code, msg, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(422, f"{where}: {first.get('msg', 'invalid')} (got {first.get('input')!r})")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        line = (str(exc).splitlines() or [""])[0]
        return error_response(500, f"internal error: {type(exc).__name__}: {line}")
