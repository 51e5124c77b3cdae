"""The routes of the HTTP API: what each endpoint reads, checks and answers (see `app` for the list)."""

from __future__ import annotations

import asyncio
import io
import json
import math
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from transferdepth.api.predict import SUFFIXES, OutputOptions, write_outputs
from transferdepth.apps.serve.engine import Engine, Options, OptionsError
from transferdepth.apps.serve.errors import ApiError
from transferdepth.apps.serve.limits import Admission, BodyTooLarge, Settings
from transferdepth.geometry import camera
from transferdepth.geometry.align import (
    AlignError,
    Alignment,
    KnownPoints,
    align_depth,
    check_mode,
    parse_target,
    points_from_json,
    prepare_target,
)
from transferdepth.inference.imageio import ImageError, colorize, load_image

FORMATS = ("png16", "npy", "color", "ply", "json")
MEDIA_TYPES = {"png16": "image/png", "npy": "application/x-npy", "color": "image/png",
               "ply": "application/x-ply", "json": "application/json"}
SUFFIXES_ALL = SUFFIXES | {"json": "_depth.json"}
STATIC = Path(__file__).with_name("static")
RAW_BODY = "request body"  # the name an image sent as the raw body goes by in messages


@dataclass
class Runtime:
    """What the routes share: the engine, the limits, the one inference thread, the temp folder, the queue."""

    engine: Engine
    settings: Settings
    executor: ThreadPoolExecutor
    tmp_root: Callable[[], Path]
    admission: Admission


def parse_size(text: str | None, max_pixels: int | None = None, max_side: int | None = None
               ) -> tuple[int, int] | None:
    """'240x320' (HEIGHTxWIDTH) -> (240, 320); None -> None; ApiError 422 otherwise. Each side 32..max_side
    (the engine's: what the network sees by default at most) and H x W within the server's pixel limit."""
    if text is None or text == "":
        return None
    h, _, w = text.lower().partition("x")
    top = f"..{max_side}" if max_side else " or more"
    if not (h.isascii() and h.isdigit() and w.isascii() and w.isdigit() and len(h) <= 9 and len(w) <= 9
            and 32 <= int(h) <= (max_side or 10**9) and 32 <= int(w) <= (max_side or 10**9)):
        raise ApiError(422, f"input_size: expected HEIGHTxWIDTH, each 32{top} pixels (e.g. 240x320), got '{text[:40]}'")
    if max_pixels is not None and int(h) * int(w) > max_pixels:
        raise ApiError(422, f"input_size: {h}x{w} = {int(h) * int(w):,} pixels, more than the server's limit "
                            f"of {max_pixels:,}")
    return int(h), int(w)


def check_stride(stride: int, max_pixels: int | None) -> int:
    """The PLY `stride` (every N-th pixel): 1..sqrt(max_pixels), the longest side an admitted square image
    can have (so the point count stays within the pixel limit); ApiError 422 otherwise."""
    top = math.isqrt(max_pixels) if max_pixels else 65_535
    if not 1 <= stride <= top:
        shown = str(stride) if abs(stride) < 10**12 else f"a {len(str(abs(stride)))}-digit number"
        raise ApiError(422, f"stride: expected 1..{top} pixels (every N-th pixel in the PLY), got {shown}")
    return stride


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
                "image": {"type": "string", "format": "binary"},
                "align_to": {"type": "string", "format": "binary",
                             "description": "known metres: 16-bit PNG mm (0 = unknown) or CSV x,y,metres"},
                "align_points": {"type": "string", "description": "known metres: JSON [[x, y, metres], ...]"}}}},
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
                  "408": {"description": "body not received within the body timeout"},
                  "415": {"description": "not an image"},
                  "422": {"description": "bad option, or an image that cannot be decoded"},
                  "503": {"description": "queue full; retry after Retry-After seconds"}},
}


def add_routes(app: FastAPI, rt: Runtime) -> None:
    """/healthz, /v1/model, /v1/colormap/{name}, /v1/depth and the page at /."""
    _add_info_routes(app, rt)
    _add_depth_route(app, rt)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


def _add_info_routes(app: FastAPI, rt: Runtime) -> None:
    """/healthz (GET and HEAD), /v1/model and /v1/colormap/{name}."""
    engine, settings = rt.engine, rt.settings

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)  # load balancers' probes

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


def _add_depth_route(app: FastAPI, rt: Runtime) -> None:
    """POST /v1/depth: options checked, body read (no slot held), decoded, predicted, encoded."""
    engine, settings = rt.engine, rt.settings

    @app.post("/v1/depth", summary="depth of one image", openapi_extra=_DEPTH_DOC)
    async def depth(request: Request, format: str = "png16", flip: bool | None = None,
                    input_size: str | None = None, intrinsics: str | None = None, cmap: str = "plasma",
                    stride: int = 1, align: str | None = None, robust: bool = False,
                    align_space: str | None = None) -> Response:
        """format: png16 (uint16 mm), npy (float32 m), color (PNG, range in X-Color-Range-M), ply (m), json.
        flip (default true) and input_size (HEIGHTxWIDTH, default the image's own) as DepthEstimator.predict;
        intrinsics for ply/json: auto (EXIF focal length, else the default lens), exif, nyu, fov:DEG or
        FX,FY,CX,CY in pixels (transferdepth.geometry.camera); the values and their source are in X-Intrinsics(-Source).
        Known metres (docs/3d.md): a multipart file field `align_to` (16-bit PNG mm at the image's size, 0 =
        unknown, or CSV x,y,metres) or a form field `align_points` (JSON [[x, y, metres], ...]), pixels of the
        image as displayed; align scale (default) | scale-shift, robust (RANSAC), align_space depth |
        disparity; the fit is in X-Align (and `align` in json)."""
        t0 = time.perf_counter()
        fmt = format.lower()
        if fmt not in FORMATS:
            raise ApiError(422, f"format '{format}': unknown; choose one of {', '.join(FORMATS)}")
        options = _options(engine, flip, input_size, fmt, cmap, stride)
        spec = parse_intrinsics(intrinsics)
        areq = _align_request(align, robust, align_space)
        rt.admission.check()  # a full queue: 503 before the body is read
        data, name, target = await _read_image(request, settings)  # no slot held while a (slow) body arrives
        if target is None and areq.explicit:
            raise ApiError(422, "align: send the known metres too, as a multipart file field 'align_to' (16-bit "
                                "PNG mm or CSV x,y,metres) or a field 'align_points' (JSON [[x, y, metres], ...])")
        with rt.admission.admit():
            t1 = time.perf_counter()
            rgb = await run_in_threadpool(_decode, data, name, rt.tmp_root(), engine.max_pixels)
            points = None if target is None else await run_in_threadpool(_target_points, target, rgb.shape[:2], areq)
            try:  # the camera: the request's, else the upload's EXIF focal length, else the default lens
                k = camera.resolve(spec, rgb.shape[1], rgb.shape[0], io.BytesIO(data))
            except camera.IntrinsicsError as e:
                raise ApiError(422, f"intrinsics: {e}") from None
            del data
            t2 = time.perf_counter()
            loop = asyncio.get_running_loop()
            depth_m = await loop.run_in_executor(rt.executor, engine.predict_rgb, rgb, options)
            fit = None if points is None else await run_in_threadpool(_align, depth_m, points, areq)
            if fit is not None:
                depth_m, fit = fit
            t3 = time.perf_counter()
            timing = {"read_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3, "infer_ms": (t3 - t2) * 1e3}
            extra = {"timing_ms": timing, "engine": engine.info()["engine"],
                     "flip": options.flip if options.flip is not None else engine.info()["flip"],
                     "input_size": list(options.input_size) if options.input_size else None,
                     "align": fit.to_dict() if fit is not None else None}
            body, headers = await run_in_threadpool(encode, fmt, depth_m, rgb, rt.tmp_root(), cmap=cmap, intrinsics=k,
                                                    stride=stride, extra=extra)
        headers |= _depth_headers(engine, depth_m, k, timing, name, fmt)
        if fit is not None:
            headers["X-Align"] = fit.describe()
        return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


def _depth_headers(engine: Engine, depth_m: np.ndarray, k: camera.Intrinsics, timing: dict[str, float], name: str,
                   fmt: str) -> dict[str, str]:
    """The response headers of /v1/depth: range seen and the model's (metres), size, camera, timing, file name."""
    h, w = depth_m.shape
    return {
        "X-Depth-Min-M": f"{float(np.nanmin(depth_m)):.6g}", "X-Depth-Max-M": f"{float(np.nanmax(depth_m)):.6g}",
        "X-Depth-Range-M": f"{engine.min_depth:g},{engine.max_depth:g}",
        "X-Image-Size": f"{w}x{h}", "X-Intrinsics": ",".join(f"{v:.6g}" for v in k.as_tuple()),
        "X-Intrinsics-Source": k.source,
        "Server-Timing": ", ".join(f"{n[:-3]};dur={v:.1f}" for n, v in timing.items()),
        "Content-Disposition": f'attachment; filename="{_stem(name)}{SUFFIXES_ALL[fmt]}"',
        "Cache-Control": "no-store",
    }


def _options(engine: Engine, flip: bool | None, input_size: str | None, fmt: str, cmap: str, stride: int) -> Options:
    """The request's inference options, every value checked before the body is read (422, one line)."""
    options = Options(flip=flip, input_size=parse_size(input_size, engine.max_pixels, getattr(engine, "max_side", None)))
    if fmt == "color":
        import matplotlib

        if cmap not in matplotlib.colormaps:
            raise ApiError(422, f"cmap '{cmap}': unknown matplotlib colormap (e.g. plasma, viridis, turbo)")
    check_stride(stride, engine.max_pixels)
    check_options = getattr(engine, "check_options", None)  # engines may refuse options (a --flip ONNX export)
    if check_options is not None:
        try:
            check_options(options)
        except OptionsError as e:
            raise ApiError(422, str(e)) from None
    return options


@dataclass(frozen=True)
class AlignRequest:
    """The request's fit options (`geometry.align`); explicit: one of them was given."""

    mode: str = "scale"
    robust: bool = False
    space: str | None = None
    explicit: bool = False


@dataclass(frozen=True)
class Target:
    """Known metres as uploaded: a file's bytes (`align_to`: PNG16 mm or CSV) or JSON text (`align_points`)."""

    data: bytes | str
    name: str
    is_json: bool


def _align_request(align: str | None, robust: bool, space: str | None) -> AlignRequest:
    """align / robust / align_space checked before the body is read (422, one line)."""
    try:
        check_mode(align or "scale", space or None)
    except AlignError as e:
        raise ApiError(422, str(e).replace("align space:", "align_space:")) from None
    return AlignRequest(align or "scale", robust, space or None, bool(align or robust or space))


def _target_points(target: Target, size: tuple[int, int], areq: AlignRequest) -> KnownPoints:
    """The uploaded known points, checked against the image's (H, W) and the fit (422, one line)."""
    try:
        points = (points_from_json(target.data, target.name) if target.is_json
                  else parse_target(target.data, target.name, size))  # type: ignore[arg-type]
        return prepare_target(points, size, areq.mode, robust=areq.robust, space=areq.space)
    except AlignError as e:
        raise ApiError(422, str(e)) from None


def _align(depth_m: np.ndarray, points: KnownPoints, areq: AlignRequest) -> tuple[np.ndarray, Alignment]:
    try:
        return align_depth(depth_m, points, areq.mode, robust=areq.robust, space=areq.space)
    except AlignError as e:
        raise ApiError(422, str(e)) from None


def _form_parts(form: Any) -> tuple[UploadFile | None, Target | None]:
    """The image (the first file field not named align_to) and the known metres (align_to or align_points)."""
    image = next((v for k, v in form.multi_items() if isinstance(v, UploadFile) and k != "align_to"), None)
    upload, text = form.get("align_to"), form.get("align_points")
    if upload is not None and text is not None:
        raise ApiError(422, "align_to and align_points: send one of them")
    if isinstance(text, str):
        return image, Target(text, "align_points", True)
    if upload is not None and not isinstance(upload, UploadFile):
        raise ApiError(422, "align_to: expected a file (16-bit PNG mm or CSV x,y,metres); for JSON points use the "
                            "field align_points")
    return image, None if upload is None else Target(b"", upload.filename or "align_to", False)


async def _read_image(request: Request, settings: Settings) -> tuple[bytes, str, Target | None]:
    """The uploaded image's bytes and name (multipart file field or raw body) and the known metres, if sent
    (multipart `align_to` file or `align_points` field); 413 past the limit, 422 empty."""
    ctype = request.headers.get("content-type", "").lower()
    try:
        async with asyncio.timeout(settings.body_timeout_s):  # a stalled upload ends, it does not wait forever
            if ctype.startswith("multipart/form-data"):
                async with request.form(max_files=2, max_fields=20) as form:
                    image, target = _form_parts(form)
                    if image is None:
                        raise ApiError(422, "multipart body has no file: upload the image as a file field (e.g. 'image')")
                    data, name = await image.read(), image.filename or "upload"
                    if target is not None and not target.is_json:
                        target = Target(await form["align_to"].read(), target.name, False)
            else:
                data, name, target = await request.body(), RAW_BODY, None
    except BodyTooLarge:
        raise ApiError(413, f"request body is more than the limit of {settings.max_body_bytes:,} bytes") from None
    except TimeoutError:
        raise ApiError(408, f"request body not received within {settings.body_timeout_s:g} s (the server's "
                            "body timeout, serve --body-timeout)", {"Connection": "close"}) from None
    if not data:
        raise ApiError(422, f"{name}: empty; send an image file as the body or as a multipart upload")
    return data, name, target
