"""Errors of the HTTP API: every one a JSON body `{"detail": "<one line>"}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("transferdepth.serve")


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
        return error_response(500, internal_message(exc))


def internal_message(exc: BaseException) -> str:
    """'internal error: <type>: <first line of the message>' (what a 500 says and the log line says)."""
    line = (str(exc).splitlines() or [""])[0]
    return f"internal error: {type(exc).__name__}: {line}"


class LogErrors:
    """ASGI middleware, outermost: an exception that escapes a request is answered 500 (one line of JSON,
    when no response has started) and logged as ONE line on `transferdepth.serve` (the traceback only at
    debug level); a client that disconnects before its request is read is one warning line, no traceback."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        where = f"{scope.get('method', '?')} {scope.get('path', '?')}"
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.warning("%s: the client disconnected before its request was read", where)
        except Exception as exc:  # noqa: BLE001 - every other failure: one line, the traceback at debug level
            log.error("%s: 500 %s", where, internal_message(exc))
            log.debug("%s: traceback", where, exc_info=True)
            if not started:
                try:
                    await error_response(500, internal_message(exc))(scope, receive, send)
                except OSError:  # the client has gone too
                    pass
