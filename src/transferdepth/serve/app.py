"""The HTTP API and page: `create_app(engine, settings)` -> a FastAPI app (run it with uvicorn).

    POST /v1/depth   image (multipart upload or raw body) -> depth: png16 (mm) | npy (m) | color | ply (m) | json
    GET  /v1/model   the engine's model: encoder, width, depth range (m), input size, weights
    GET  /healthz    liveness (never needs the API key)
    GET  /           the page (static/, no external network); /docs: OpenAPI

Every error is a JSON body `{"detail": "<one line>"}`. Inference runs on one worker thread, off the event
loop; at most `queue_size` depth requests are admitted at once, more get 503 with Retry-After. Bodies over
`max_body_bytes` get 413 as soon as that is known (from Content-Length, before reading the body). Each
request's upload lives in its own temporary folder, removed when the request ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from transferdepth.api.estimator import ImageError, load_image
from transferdepth.api.predict import SUFFIXES, OutputOptions, colorize, write_outputs
from transferdepth.geometry import camera
from transferdepth.serve.engine import Engine, Options

FORMATS = ("png16", "npy", "color", "ply", "json")
MEDIA_TYPES = {"png16": "image/png", "npy": "application/x-npy", "color": "image/png",
               "ply": "application/x-ply", "json": "application/json"}
SUFFIXES_ALL = SUFFIXES | {"json": "_depth.json"}
STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/healthz",)
RAW_BODY = "request body"  # the name an image sent as the raw body goes by in messages  # never need the API key


@dataclass
class Settings:
    """Server limits. api_key: required (Bearer, X-API-Key or HTTP Basic password) on all but /healthz."""

    max_body_bytes: int = 20 * 2**20
    queue_size: int = 16
    api_key: str | None = None
    tmp_dir: str | None = None  # where per-request temporary folders go (default: the system's)
    retry_after_s: int = 1


class ApiError(Exception):
    """An error answered as `{"detail": message}` with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _BodyTooLarge(Exception):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": " ".join(str(message).split())}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: API key (except OPEN_PATHS) and the body size limit, before any body is read."""

    def __init__(self, app: Any, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.settings.api_key
        if key and scope["path"] not in OPEN_PATHS and not _authorized(headers, key):
            given = any(h in headers for h in ("authorization", "x-api-key"))
            msg = "wrong API key" if given else "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            return await _error(401, msg, {"WWW-Authenticate": 'Basic realm="transferdepth"'})(scope, receive, send)
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _error(413, f"request body is {int(length):,} bytes, more than the limit of "
                                     f"{limit:,} bytes")(scope, receive, send)
        seen = 0

        async def counted() -> dict:  # chunked bodies without Content-Length: stop at the limit
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def _authorized(headers: dict[str, str], key: str) -> bool:
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


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'240x320' (HEIGHTxWIDTH) -> (240, 320); None -> None; ApiError 422 otherwise."""
    if text is None or text == "":
        return None
    h, _, w = text.lower().partition("x")
    if not (h.isdigit() and w.isdigit() and int(h) >= 32 and int(w) >= 32):
        raise ApiError(422, f"input_size: expected HEIGHTxWIDTH, each at least 32 pixels (e.g. 240x320), got '{text}'")
    return int(h), int(w)


def parse_intrinsics(text: str | None) -> camera.IntrinsicsSpec:
    """The `intrinsics` option: auto (default; EXIF focal length, else the default lens), exif, nyu, fov:DEG
    or FX,FY,CX,CY (see `transferdepth.geometry.camera`); 422 otherwise."""
    try:
        return camera.parse_spec(text or None)
    except camera.IntrinsicsError as e:
        raise ApiError(422, str(e).replace("--intrinsics", "intrinsics")) from None


def image_error_status(e: ImageError) -> int:
    """HTTP status for an ImageError: 413 too many pixels / bomb, 415 not an image, 422 corrupt / truncated."""
    if "more than the limit" in e.reason or "decompression-bomb" in e.reason:
        return 413
    if e.reason.startswith(("not an image", "empty file")):
        return 415
    return 422


def _decode(data: bytes, name: str, root: Path, max_pixels: int | None) -> np.ndarray:
    """Bytes of an image file -> uint8 HxWx3 RGB via `load_image`, through a temporary folder removed after."""
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        try:
            return load_image(path, max_pixels)
        except ImageError as e:
            raise ApiError(image_error_status(e), f"{name}: {e.reason}") from None


def _stem(name: str) -> str:
    """The download name's stem: the uploaded file's, or 'image' for a raw body."""
    stem = Path(name).stem if name != RAW_BODY else ""
    return "".join(c for c in stem if c.isalnum() or c in "-_.") or "image"


def encode(fmt: str, depth: np.ndarray, rgb: np.ndarray, root: Path, *, cmap: str = "plasma",
           intrinsics: camera.Intrinsics | None = None, stride: int = 1,
           extra: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """Depth (HxW metres) in one output format -> (body, extra headers).

    png16, npy, color and ply are the bytes `transferdepth predict` writes (`predict.write_outputs`, into
    a temporary folder under `root`, removed after); json is built here.
    """
    headers: dict[str, str] = {"X-Depth-Units": "millimetres" if fmt == "png16" else "metres"}
    h, w = depth.shape
    finite = depth[np.isfinite(depth)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if fmt == "png16":
        headers["X-Depth-Scale"] = "0.001 m per unit (uint16 millimetres; 0 = no depth)"
    elif fmt == "color":
        headers |= {"X-Color-Range-M": f"{lo:.6g},{hi:.6g}", "X-Colormap": cmap}
    if fmt != "json":
        opts = OutputOptions(formats=(fmt,), cmap=cmap, range_m=(lo, hi), intrinsics=intrinsics, stride=stride)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            (path,) = write_outputs(Path(tmp) / "depth", depth, rgb, opts)
            return path.read_bytes(), headers
    k = camera.resolve(intrinsics, w, h)
    body = {"width": w, "height": h, "units": "metres",
            "min_m": lo, "median_m": float(np.median(finite)) if finite.size else float("nan"), "max_m": hi,
            "intrinsics": k.to_dict()}
    body |= extra or {}
    return json.dumps(body).encode(), headers


_DEPTH_DOC = {
    "requestBody": {
        "required": True,
        "description": "an image file (JPEG, PNG, ...) as a multipart upload (any field name) or as the raw body",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {"200": {"description": "depth; headers X-Depth-Units, X-Depth-Min-M, X-Depth-Max-M, "
                                         "X-Depth-Range-M (the model's), X-Intrinsics, Server-Timing",
                          "content": {t: {} for t in set(MEDIA_TYPES.values())}},
                  "401": {"description": "missing or wrong API key"},
                  "413": {"description": "body or image (pixels) too large"},
                  "415": {"description": "not an image"},
                  "422": {"description": "bad option, or an image that cannot be decoded"},
                  "503": {"description": "queue full; retry after Retry-After seconds"}},
}


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app around `engine`; see the module docstring for the endpoints."""
    from transferdepth._version import __version__

    settings = settings or Settings()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferdepth-infer")
    admitted = 0

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
    app.add_middleware(_Guard, settings=settings)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            msg = f"method {request.method} not allowed on {request.url.path} (allowed: {allow})"
        elif exc.status_code == 404:
            msg = f"no such endpoint: {request.url.path} (see /docs)"
        return _error(exc.status_code, msg, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')} (got {first.get('input')!r})")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        line = (str(exc).splitlines() or [""])[0]
        return _error(500, f"internal error: {type(exc).__name__}: {line}")

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", summary="the model being served")
    async def model() -> dict[str, Any]:
        return engine.info() | {"max_pixels": engine.max_pixels, "max_body_bytes": settings.max_body_bytes,
                                "queue_size": settings.queue_size, "formats": list(FORMATS)}

    @app.get("/v1/colormap/{name}", summary="a colormap as 256 RGB triples (what format=color uses)")
    async def colormap(name: str) -> dict[str, Any]:
        import matplotlib

        if name not in matplotlib.colormaps:
            raise ApiError(422, f"colormap '{name}': unknown (e.g. plasma, viridis, magma, turbo)")
        lut, _ = colorize(np.linspace(0.0, 1.0, 256)[None], name, (0.0, 1.0))
        return {"name": name, "lut": lut[0].tolist()}

    @app.post("/v1/depth", summary="depth of one image", openapi_extra=_DEPTH_DOC)
    async def depth(request: Request, format: str = "png16", flip: bool | None = None,
                    input_size: str | None = None, intrinsics: str | None = None, cmap: str = "plasma",
                    stride: int = 1) -> Response:
        """format: png16 (uint16 mm), npy (float32 m), color (PNG, range in X-Color-Range-M), ply (m), json.
        flip (default true) and input_size (HEIGHTxWIDTH, default the image's own) as DepthEstimator.predict;
        intrinsics for ply/json: auto (EXIF focal length, else the default lens), exif, nyu, fov:DEG or
        FX,FY,CX,CY in pixels (transferdepth.geometry.camera); the values and their source are in X-Intrinsics(-Source)."""
        nonlocal admitted
        t0 = time.perf_counter()
        fmt = format.lower()
        if fmt not in FORMATS:
            raise ApiError(422, f"format '{format}': unknown; choose one of {', '.join(FORMATS)}")
        options = Options(flip=flip, input_size=parse_size(input_size))
        spec = parse_intrinsics(intrinsics)
        if fmt == "color":
            import matplotlib

            if cmap not in matplotlib.colormaps:
                raise ApiError(422, f"cmap '{cmap}': unknown matplotlib colormap (e.g. plasma, viridis, turbo)")
        if stride < 1:
            raise ApiError(422, f"stride: must be at least 1, got {stride}")
        if admitted >= settings.queue_size:
            raise ApiError(503, f"server busy: {admitted} requests queued (limit {settings.queue_size}); retry later",
                           {"Retry-After": str(settings.retry_after_s)})
        admitted += 1
        try:
            data, name = await _read_image(request)
            t1 = time.perf_counter()
            rgb = await run_in_threadpool(_decode, data, name, tmp_root(), engine.max_pixels)
            try:  # the camera: the request's, else the upload's EXIF focal length, else the default lens
                k = camera.resolve(spec, rgb.shape[1], rgb.shape[0], io.BytesIO(data))
            except camera.IntrinsicsError as e:
                raise ApiError(422, f"intrinsics: {e}") from None
            del data
            t2 = time.perf_counter()
            loop = asyncio.get_running_loop()
            depth_m = await loop.run_in_executor(executor, engine.predict_rgb, rgb, options)
            t3 = time.perf_counter()
            timing = {"read_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3, "infer_ms": (t3 - t2) * 1e3}
            extra = {"timing_ms": timing, "engine": engine.info()["engine"],
                     "flip": options.flip if options.flip is not None else engine.info()["flip"],
                     "input_size": list(options.input_size) if options.input_size else None}
            body, headers = await run_in_threadpool(encode, fmt, depth_m, rgb, tmp_root(), cmap=cmap, intrinsics=k,
                                                    stride=stride, extra=extra)
        finally:
            admitted -= 1
        h, w = depth_m.shape
        headers |= {
            "X-Depth-Min-M": f"{float(np.nanmin(depth_m)):.6g}", "X-Depth-Max-M": f"{float(np.nanmax(depth_m)):.6g}",
            "X-Depth-Range-M": f"{engine.min_depth:g},{engine.max_depth:g}",
            "X-Image-Size": f"{w}x{h}", "X-Intrinsics": ",".join(f"{v:.6g}" for v in k.as_tuple()),
            "X-Intrinsics-Source": k.source,
            "Server-Timing": ", ".join(f"{n[:-3]};dur={v:.1f}" for n, v in timing.items()),
            "Content-Disposition": f'attachment; filename="{_stem(name)}{SUFFIXES_ALL[fmt]}"',
            "Cache-Control": "no-store",
        }
        return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)

    async def _read_image(request: Request) -> tuple[bytes, str]:
        ctype = request.headers.get("content-type", "").lower()
        try:
            if ctype.startswith("multipart/form-data"):
                async with request.form(max_files=1, max_fields=20) as form:
                    files = [v for v in form.values() if isinstance(v, UploadFile)]
                    if not files:
                        raise ApiError(422, "multipart body has no file: upload the image as a file field (e.g. 'image')")
                    data, name = await files[0].read(), files[0].filename or "upload"
            else:
                data, name = await request.body(), RAW_BODY
        except _BodyTooLarge:
            raise ApiError(413, f"request body is more than the limit of {settings.max_body_bytes:,} bytes") from None
        if not data:
            raise ApiError(422, f"{name}: empty; send an image file as the body or as a multipart upload")
        return data, name

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

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
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
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
