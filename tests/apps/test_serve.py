"""`transferdepth serve`: the HTTP API against DepthEstimator and the predict writers, every error status,
the queue, temporary files, the ONNX engine and the command line. A real uvicorn on 127.0.0.1 per module."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi, uvicorn, python-multipart) is not installed")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from transferdepth.api.estimator import DepthEstimator  # noqa: E402
from transferdepth.apps.serve.app import Settings, create_app, serve_in_thread  # noqa: E402
from transferdepth.apps.serve.engine import Options, TorchEngine  # noqa: E402
from transferdepth.geometry.camera import default_intrinsics  # noqa: E402
from transferdepth.geometry.points import depth_to_points  # noqa: E402
from transferdepth.inference.checkpoint import save_checkpoint  # noqa: E402
from transferdepth.inference.imageio import colorize, depth_to_mm  # noqa: E402

KEY = "s3cret-key"


# --- a tiny client (http.client: full control of headers and bodies) ------------------------------

def request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def multipart(data: bytes, filename: str = "photo.jpg", field: str = "image") -> tuple[bytes, dict[str, str]]:
    boundary = "----transferdepthtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body))


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 96x128 JPEG with structure (gradients + a square), on disk."""
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 2, yy * 2, (xx + yy) % 256], axis=2).astype(np.uint8)
    rgb[30:60, 40:90] = (220, 40, 40)
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    path.write_bytes(jpeg_bytes(rgb))
    return path


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """(url, app, tmp_root_parent): the torch engine, a small pixel limit, a 2 MB body limit."""
    tmp = tmp_path_factory.mktemp("serve-tmp")
    engine = TorchEngine(checkpoint, device="cpu", max_pixels=1_000_000)
    app = create_app(engine, Settings(max_body_bytes=2 * 2**20, tmp_dir=str(tmp)))
    with serve_in_thread(app) as url:
        yield url, app, tmp


@pytest.fixture(scope="module")
def reference(checkpoint, photo) -> np.ndarray:
    """What the Python API returns for the photo, with its defaults."""
    return DepthEstimator.from_pretrained(checkpoint, device="cpu").predict(photo)


# --- results equal the API and the predict writers ------------------------------------------------

def test_default_request_returns_what_the_api_returns(server, photo, reference):
    url, _, _ = server
    data = photo.read_bytes()
    status, headers, body = request(url, "POST", "/v1/depth?format=npy", data)
    assert status == 200, body
    assert headers["x-depth-units"] == "metres"
    np.testing.assert_array_equal(npy(body), reference)  # same path, same defaults: identical
    mp_body, mp_headers = multipart(data)
    status, headers, body = request(url, "POST", "/v1/depth?format=npy", mp_body, mp_headers)
    assert status == 200, body
    assert headers["content-disposition"] == 'attachment; filename="photo_depth_m.npy"'
    np.testing.assert_array_equal(npy(body), reference)
    assert float(headers["x-depth-min-m"]) == pytest.approx(reference.min(), rel=1e-5)
    assert float(headers["x-depth-max-m"]) == pytest.approx(reference.max(), rel=1e-5)
    assert headers["x-depth-range-m"] == "0.1,10"
    assert headers["x-image-size"] == "128x96"


def test_options_flip_and_input_size_as_the_api(server, checkpoint, photo):
    url, _, _ = server
    data = photo.read_bytes()
    for query, kwargs in (("flip=false", {"flip": False}), ("input_size=64x96", {"input_size": (64, 96)}),
                          ("flip=false&input_size=64x64", {"flip": False, "input_size": (64, 64)})):
        status, _, body = request(url, "POST", f"/v1/depth?format=npy&{query}", data)
        assert status == 200, body
        ref = DepthEstimator.from_pretrained(checkpoint, device="cpu", **kwargs).predict(photo)
        np.testing.assert_array_equal(npy(body), ref)
    _, _, default = request(url, "POST", "/v1/depth?format=npy", data)
    _, _, noflip = request(url, "POST", "/v1/depth?format=npy&flip=false", data)
    assert np.abs(npy(default) - npy(noflip)).max() > 1e-3  # the option reaches the model


def test_png16_color_ply_json_match_the_writers(server, photo, reference):
    url, _, _ = server
    data = photo.read_bytes()
    status, headers, body = request(url, "POST", "/v1/depth", data)  # default format: png16
    assert status == 200 and headers["content-type"] == "image/png"
    assert headers["x-depth-units"] == "millimetres"
    png = np.asarray(Image.open(io.BytesIO(body)))
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, depth_to_mm(reference))
    assert headers["content-disposition"] == 'attachment; filename="image_depth_mm.png"'  # raw body: no name
    status, headers, body = request(url, "POST", "/v1/depth?format=color&cmap=viridis", data)
    expected, (lo, hi) = colorize(reference, "viridis")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), expected)
    assert [float(v) for v in headers["x-color-range-m"].split(",")] == pytest.approx([lo, hi], rel=1e-5)
    status, headers, body = request(url, "POST", "/v1/depth?format=ply", data)
    head, _, payload = body.partition(b"end_header\n")
    k = default_intrinsics(128, 96)  # no EXIF in the upload: square pixels, the default lens
    assert headers["x-intrinsics-source"] == k.source and k.fx == k.fy
    xyz, colors = depth_to_points(reference, np.zeros((96, 128, 3), np.uint8), k.as_tuple())
    assert f"element vertex {len(xyz)}".encode() in head and b"binary_little_endian" in head
    rec = np.frombuffer(payload, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    np.testing.assert_allclose(np.stack([rec["x"], rec["y"], rec["z"]], 1), xyz, atol=1e-6)
    status, headers, body = request(url, "POST", "/v1/depth?format=json&intrinsics=100,110,64,48", data)
    info = json.loads(body)
    assert (info["width"], info["height"], info["units"]) == (128, 96, "metres")
    assert info["min_m"] == pytest.approx(reference.min()) and info["max_m"] == pytest.approx(reference.max())
    assert info["median_m"] == pytest.approx(float(np.median(reference)))
    assert info["intrinsics"] == {"fx": 100, "fy": 110, "cx": 64, "cy": 48, "width": 128, "height": 96,
                                  "source": "explicit (--intrinsics)"}
    assert info["timing_ms"]["infer_ms"] > 0 and info["flip"] is True


def test_model_healthz_docs_and_page(server):
    url, _, _ = server
    status, _, body = request(url, "GET", "/v1/model")
    info = json.loads(body)
    assert status == 200
    assert (info["encoder"], info["decoder_width"], info["min_depth_m"], info["max_depth_m"]) == ("mobilenetv2", 0.5, 0.1, 10.0)
    assert info["input_size"] is None and info["engine"] == "torch" and info["weights"].endswith("tiny")
    assert json.loads(request(url, "GET", "/healthz")[2]) == {"status": "ok"}
    status, _, body = request(url, "GET", "/openapi.json")
    assert status == 200 and "/v1/depth" in json.loads(body)["paths"]
    assert request(url, "GET", "/docs")[0] == 200
    lut = np.array(json.loads(request(url, "GET", "/v1/colormap/viridis")[2])["lut"])
    ramp = np.linspace(2.0, 5.0, 256)  # the page's colours are format=color's: the LUT at t = 0..1
    np.testing.assert_array_equal(lut, colorize(ramp, "viridis")[0])
    assert request(url, "GET", "/v1/colormap/nope")[0] == 422
    status, headers, page = request(url, "GET", "/")
    assert status == 200 and b"<canvas" in page
    for asset in ("/static/app.js", "/static/style.css"):
        assert request(url, "GET", asset)[0] == 200
    for text in (page, request(url, "GET", "/static/app.js")[2]):  # no external network from the page
        assert b"http://" not in text and b"https://" not in text and b"//cdn" not in text


# --- errors: status, a one-line JSON message, the server survives, no temp file left ----------------

def _bomb_png(side: int = 2000) -> bytes:
    """A 1-bit PNG of side x side pixels: a few hundred bytes that decode to millions of pixels."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def _truncated(photo: Path) -> bytes:
    data = photo.read_bytes()
    return data[: len(data) // 2]


ERRORS = [  # (id, method, path, body factory, headers, status, words in the message)
    ("not-an-image", "POST", "/v1/depth", lambda p: b"hello, not an image" * 10, {}, 415, "not an image"),
    ("truncated-jpeg", "POST", "/v1/depth", _truncated, {}, 422, "truncated"),
    ("pixel-limit-bomb", "POST", "/v1/depth", lambda p: _bomb_png(), {}, 413, "more than the limit"),
    ("unknown-format", "POST", "/v1/depth?format=tiff", lambda p: p.read_bytes(), {}, 422, "format 'tiff'"),
    ("bad-input-size", "POST", "/v1/depth?input_size=big", lambda p: p.read_bytes(), {}, 422, "input_size"),
    ("bad-flip", "POST", "/v1/depth?flip=maybe", lambda p: p.read_bytes(), {}, 422, "flip"),
    ("empty-body", "POST", "/v1/depth", lambda p: b"", {}, 422, "empty"),
    ("wrong-method", "GET", "/v1/depth", lambda p: None, {}, 405, "method GET not allowed"),
    ("wrong-method-model", "POST", "/v1/model", lambda p: b"x", {}, 405, "not allowed"),
    ("body-over-limit", "POST", "/v1/depth", lambda p: b"\xff" * (2 * 2**20 + 1), {}, 413, "more than the limit"),
    ("multipart-no-file", "POST", "/v1/depth", lambda p: None, "form", 422, "no file"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c[0] for c in ERRORS])
def test_errors_are_one_line_json(server, photo, case):
    url, _, tmp = server
    _, method, path, make, headers, status, words = case
    body = make(photo)
    if headers == "form":
        body, headers = b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nhello\r\n--b--\r\n", \
            {"Content-Type": "multipart/form-data; boundary=b"}
    got, resp_headers, raw = request(url, method, path, body, headers)
    assert got == status, raw
    assert resp_headers["content-type"] == "application/json"
    detail = json.loads(raw)["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail, detail
    assert request(url, "GET", "/healthz")[0] == 200  # still up
    roots = list(tmp.iterdir())
    assert len(roots) == 1 and list(roots[0].iterdir()) == []  # no temporary file left behind


def _read_reply(s: socket.socket) -> str:
    """Read one HTTP reply: headers, then as many body bytes as its Content-Length says.

    The server may send the head and the body in separate segments, so one recv() is not enough.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data.decode("latin-1")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_body_limit_answers_before_reading_the_body(server):
    """Content-Length over the limit: 413 at once, though the body is never sent (a reading server would hang)."""
    url, _, _ = server
    u = urllib.parse.urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /v1/depth HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 1000000000\r\n\r\n" + b"\xff" * 1000)
        reply = _read_reply(s)
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "1,000,000,000 bytes, more than the limit" in reply


def test_chunked_body_over_limit_is_413(server):
    url, _, tmp = server
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    chunks = (b"\xff" * 65536 for _ in range(40))  # 2.5 MB, no Content-Length
    conn.request("POST", "/v1/depth", body=chunks, encode_chunked=True, headers={"Content-Type": "image/jpeg"})
    r = conn.getresponse()
    assert r.status == 413 and "more than the limit" in json.loads(r.read())["detail"]
    conn.close()
    assert request(url, "GET", "/healthz")[0] == 200


class _SlowEngine:
    """Blocks in predict until released; or raises, to show a failed inference does not stop the server."""

    max_pixels, min_depth, max_depth = 1_000_000, 0.1, 10.0

    def __init__(self, fail: bool = False):
        self.entered, self.release, self.fail = threading.Event(), threading.Event(), fail

    def predict_rgb(self, rgb: np.ndarray, options: Options) -> np.ndarray:
        if self.fail:
            raise RuntimeError("out of memory\nsecond line")
        self.entered.set()
        assert self.release.wait(30)
        return np.full(rgb.shape[:2], 2.0, np.float32)

    def info(self) -> dict:
        return {"engine": "slow", "flip": True}


def test_queue_full_is_503_with_retry_after(photo, tmp_path):
    engine = _SlowEngine()
    app = create_app(engine, Settings(queue_size=1, tmp_dir=str(tmp_path), retry_after_s=3))
    with serve_in_thread(app) as url:
        first: list = []
        t = threading.Thread(target=lambda: first.append(request(url, "POST", "/v1/depth?format=json", photo.read_bytes())))
        t.start()
        assert engine.entered.wait(30)
        status, headers, body = request(url, "POST", "/v1/depth", photo.read_bytes())
        assert status == 503 and headers["retry-after"] == "3"
        assert "busy" in json.loads(body)["detail"]
        engine.release.set()
        t.join(30)
        assert first[0][0] == 200 and json.loads(first[0][2])["median_m"] == 2.0
        assert request(url, "POST", "/v1/depth?format=json", photo.read_bytes())[0] == 200  # admitted again
    assert list(tmp_path.iterdir()) == []  # the server's temp root is removed at shutdown


def test_inference_failure_is_500_and_the_server_goes_on(photo, tmp_path):
    app = create_app(_SlowEngine(fail=True), Settings(tmp_dir=str(tmp_path)))
    with serve_in_thread(app) as url:
        for _ in range(2):
            status, _, body = request(url, "POST", "/v1/depth", photo.read_bytes())
            assert status == 500
            assert json.loads(body)["detail"] == "internal error: RuntimeError: out of memory"
        assert request(url, "GET", "/healthz")[0] == 200


def test_api_key_protects_all_but_healthz(checkpoint, photo, tmp_path):
    engine = TorchEngine(checkpoint, device="cpu")
    app = create_app(engine, Settings(api_key=KEY, tmp_dir=str(tmp_path)))
    with serve_in_thread(app) as url:
        assert request(url, "GET", "/healthz")[0] == 200
        for method, path, body in (("GET", "/", None), ("GET", "/v1/model", None), ("GET", "/docs", None),
                                   ("GET", "/openapi.json", None), ("GET", "/static/app.js", None),
                                   ("POST", "/v1/depth", photo.read_bytes())):
            status, headers, raw = request(url, method, path, body)
            assert status == 401, path
            assert json.loads(raw)["detail"].startswith("missing API key") and "www-authenticate" in headers
            status, _, raw = request(url, method, path, body, {"X-API-Key": "wrong"})
            assert status == 401 and json.loads(raw)["detail"] == "wrong API key"
        basic = base64.b64encode(f"user:{KEY}".encode()).decode()
        for auth in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Authorization": f"Basic {basic}"}):
            assert request(url, "GET", "/v1/model", headers=auth)[0] == 200
        status, _, _ = request(url, "POST", "/v1/depth?format=json", photo.read_bytes(), {"X-API-Key": KEY})
        assert status == 200


# --- the ONNX engine ---------------------------------------------------------------------------------

def test_onnx_engine_equals_the_torch_engine(checkpoint, photo, tmp_path):
    pytest.importorskip("onnxruntime")
    from transferdepth.apps.serve.engine import OnnxEngine
    from transferdepth.deploy.export import export_onnx

    rgb = np.asarray(Image.open(photo).convert("RGB"))
    torch_engine = TorchEngine(checkpoint, device="cpu")
    from_dir = OnnxEngine(checkpoint)
    onnx_file = export_onnx(torch_engine.estimator.model, tmp_path / "m.onnx")
    from_file = OnnxEngine(onnx_file)
    assert list(tmp_path.iterdir()) == [onnx_file]
    for flip in (None, True, False):
        ref = torch_engine.predict_rgb(rgb, Options(flip=flip))
        for eng in (from_dir, from_file):
            got = eng.predict_rgb(rgb, Options(flip=flip))
            assert got.shape == ref.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # input_size: resized twice (in the graph, then back) instead of infer's once: close, not equal
    ref = torch_engine.predict_rgb(rgb, Options(input_size=(64, 96)))
    got = from_dir.predict_rgb(rgb, Options(input_size=(64, 96)))
    assert got.shape == ref.shape and np.abs(got - ref).mean() < 0.02
    assert from_dir.info()["encoder"] == "mobilenetv2" and from_dir.info()["max_depth_m"] == 10.0


def test_onnx_engine_refuses_a_foreign_onnx_file(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper

    from transferdepth.apps.serve.engine import OnnxEngine

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="not an ONNX file written by `transferdepth export`"):
        OnnxEngine(path)


# --- the command line ---------------------------------------------------------------------------------

def _run_cli(monkeypatch, argv: list[str]) -> dict:
    import uvicorn

    from transferdepth.cli import main

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.update(app=app, host=host, port=port))
    seen["rc"] = main(argv)
    return seen


def test_cli_serve_binds_localhost_and_warns_elsewhere(monkeypatch, capsys, checkpoint):
    monkeypatch.delenv("TRANSFERDEPTH_API_KEY", raising=False)
    seen = _run_cli(monkeypatch, ["serve", "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert (seen["rc"], seen["host"], seen["port"]) == (0, "127.0.0.1", 8000)
    assert "warning" not in capsys.readouterr().err
    assert seen["app"].state.settings.api_key is None
    assert seen["app"].state.tmp_root is None  # made when the server starts, not when the app is built
    seen = _run_cli(monkeypatch, ["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0", "--port", "9001"])
    err = capsys.readouterr().err
    assert "warning: serving on 0.0.0.0" in err and "set --api-key" in err
    monkeypatch.setenv("TRANSFERDEPTH_API_KEY", KEY)
    seen = _run_cli(monkeypatch, ["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0"])
    assert seen["app"].state.settings.api_key == KEY
    assert "API key is required" in capsys.readouterr().err


def test_cli_serve_bad_arguments_are_one_line(monkeypatch, capsys, tmp_path, checkpoint):
    for argv, words in ((["--checkpoint", str(tmp_path / "nope")], "no such file or folder"),
                        (["--checkpoint", str(checkpoint), "--queue-size", "0"], "--queue-size: expected 1 to 10,000"),
                        (["--checkpoint", str(checkpoint), "--device", "tpu"], "--device")):
        seen = _run_cli(monkeypatch, ["serve", *argv])
        err = capsys.readouterr().err
        assert seen["rc"] == 2 and words in err and "Traceback" not in err and "app" not in seen


def test_serve_in_thread_stops(checkpoint, tmp_path):
    app = create_app(TorchEngine(checkpoint, device="cpu"), Settings(tmp_dir=str(tmp_path)))
    with serve_in_thread(app) as url:
        assert request(url, "GET", "/healthz")[0] == 200
    time.sleep(0.1)
    with pytest.raises(OSError):
        request(url, "GET", "/healthz", timeout=2)
