"""The HTTP API and page: `create_app(engine, settings)` -> a FastAPI app (run it with uvicorn).

    POST /v1/depth   image (multipart upload or raw body) -> depth: png16 (mm) | npy (m) | color | ply (m) | json
    GET  /v1/model   the engine's model: encoder, width, depth range (m), input size, weights
    GET  /healthz    liveness (never needs the API key)
    GET  /           the page (static/, no external network); /docs: OpenAPI

Every error is a JSON body `{"detail": "<one line>"}`, and each failed request one log line (the traceback
at debug level). Inference runs on one worker thread, off the event loop; at most `queue_size` depth
requests are admitted at once (once their body has arrived: a slow upload holds no slot, and a body not
received within `body_timeout_s` gets 408), more get 503 with Retry-After. Bodies over `max_body_bytes` get
413 as soon as that is known (from Content-Length, before reading the body). Each
request's upload lives in its own temporary folder, removed when the request ends, whatever happens.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from transferdepth._version import __version__
from transferdepth.apps.serve.engine import Engine
from transferdepth.apps.serve.errors import LogErrors, add_error_handlers
from transferdepth.apps.serve.limits import Admission, Guard, Settings
from transferdepth.apps.serve.routes import STATIC, Runtime, add_routes

__all__ = ["Settings", "create_app", "serve_in_thread"]


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app around `engine`; see the module docstring for the endpoints."""
    settings = settings or Settings()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferdepth-infer")

    def tmp_root() -> Path:
        """The server's temporary folder (per-request folders go inside): made at start, removed at shutdown."""
        if app.state.tmp_root is None:
            app.state.tmp_root = Path(tempfile.mkdtemp(prefix="transferdepth-serve-", dir=settings.tmp_dir))
        return app.state.tmp_root

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        tmp_root()
        yield
        executor.shutdown(wait=True, cancel_futures=True)
        if app.state.tmp_root is not None:
            shutil.rmtree(app.state.tmp_root, ignore_errors=True)
            app.state.tmp_root = None

    app = FastAPI(title="transferdepth", version=__version__, lifespan=lifespan,
                  description="Monocular depth in metres. POST an image to /v1/depth.")
    app.state.engine, app.state.settings, app.state.tmp_root = engine, settings, None
    app.add_middleware(Guard, settings=settings)
    app.add_middleware(LogErrors)  # added last: outermost, so it sees every exception a request raises
    add_error_handlers(app)
    add_routes(app, Runtime(engine, settings, executor, tmp_root, Admission(settings)))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    timeout_s: float = 30.0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread (tests, notebooks); yields its base URL, stops after."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    settings: Settings = app.state.settings
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=settings.keep_alive_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
