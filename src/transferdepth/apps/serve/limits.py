"""The server's limits, before any work: the API key, the body size (413 as soon as it is known) and the
queue of admitted depth requests (503 with Retry-After beyond `queue_size`)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from transferdepth.apps.serve.errors import ApiError, error_response

OPEN_PATHS = ("/healthz",)  # never need the API key


@dataclass
class Settings:
    """Server limits. api_key: required (Bearer, X-API-Key or HTTP Basic password) on all but /healthz."""

    max_body_bytes: int = 20 * 2**20
    queue_size: int = 16
    api_key: str | None = None
    tmp_dir: str | None = None  # where per-request temporary folders go (default: the system's)
    retry_after_s: int = 1
    body_timeout_s: float = 30.0  # a request body not received within this is answered 408 (slow uploads)
    keep_alive_s: float = 5.0  # uvicorn's timeout_keep_alive: an idle connection is closed after this


class BodyTooLarge(Exception):
    """Raised while a body is read, once it passes the limit (chunked bodies without Content-Length)."""


class Admission:
    """At most `settings.queue_size` depth requests admitted at once; the next gets 503 with Retry-After.

    A request is admitted once its body has arrived (a slow upload holds no slot); `check` answers 503
    before the body is read when the queue is already full."""

    def __init__(self, settings: Settings):
        self.settings, self.admitted = settings, 0

    def check(self) -> None:
        """503 with Retry-After when `queue_size` requests are admitted already."""
        s = self.settings
        if self.admitted >= s.queue_size:
            raise ApiError(503, f"server busy: {self.admitted} requests queued (limit {s.queue_size}); retry later",
                           {"Retry-After": str(s.retry_after_s)})

    @contextmanager
    def admit(self) -> Iterator[None]:
        self.check()
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1


class Guard:
    """ASGI middleware: API key (except OPEN_PATHS) and the body size limit, before any body is read."""

    def __init__(self, app: Any, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.settings.api_key
        if key and scope["path"] not in OPEN_PATHS and not authorized(headers, key):
            given = any(h in headers for h in ("authorization", "x-api-key"))
            msg = "wrong API key" if given else "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            return await error_response(401, msg, {"WWW-Authenticate": 'Basic realm="transferdepth"'})(scope, receive, send)
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await error_response(413, f"request body is {int(length):,} bytes, more than the limit of "
                                     f"{limit:,} bytes")(scope, receive, send)
        seen = 0

        async def counted() -> dict:  # chunked bodies without Content-Length: stop at the limit
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def authorized(headers: dict[str, str], key: str) -> bool:
    import base64

    given = headers.get("x-api-key", "")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    elif auth.lower().startswith("basic "):
        try:
            given = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")[2]
        except ValueError:
            given = ""
    return hmac.compare_digest(given.encode(), key.encode())
