"""`transferdepth serve` as a hostile client uses it: each case a row of a table (request, expected status,
words in the one-line message), so the next round adds rows, not files. Then the cases a row cannot hold:
slow uploads (a bounded local slow client), the log (one line per failed request), the command line's
numeric flags and a port in use.

A real uvicorn on 127.0.0.1; limits: 1,000,000 pixels, 2 MiB bodies, an API key, a 1.5 s body timeout."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi, uvicorn, python-multipart) is not installed")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from test_serve import _read_reply, _run_cli, _SlowEngine, jpeg_bytes, request  # noqa: E402

from transferdepth.apps.serve.app import Settings, create_app, serve_in_thread  # noqa: E402
from transferdepth.apps.serve.engine import TorchEngine  # noqa: E402
from transferdepth.inference.checkpoint import save_checkpoint  # noqa: E402

KEY = "hostile-key"
LIMIT = 2 * 2**20  # body bytes
PIXELS = 1_000_000
BODY_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(0)
    return jpeg_bytes(rng.integers(0, 256, (48, 64, 3)).astype(np.uint8))


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    engine = TorchEngine(checkpoint, device="cpu", max_pixels=PIXELS)
    settings = Settings(max_body_bytes=LIMIT, api_key=KEY, queue_size=2, body_timeout_s=BODY_TIMEOUT_S,
                        tmp_dir=str(tmp_path_factory.mktemp("serve-tmp")))
    with serve_in_thread(create_app(engine, settings)) as url:
        yield url


AUTH = {"X-API-Key": KEY}
PHOTO = object()  # a body placeholder: the 64x48 JPEG

# (id, method, path, body, headers, status, words in the one-line detail; "" for a 2xx)
CASES = [
    # sizes: bounded by the server's pixel limit and the engine's max side (1280), 422 before any work
    ("input-size-2000", "POST", "/v1/depth?input_size=2000x2000", PHOTO, AUTH, 422, "each 32..1280 pixels"),
    ("input-size-100000", "POST", "/v1/depth?input_size=100000x100000", PHOTO, AUTH, 422, "input_size"),
    ("input-size-over-pixels", "POST", "/v1/depth?input_size=1280x1000", PHOTO, AUTH, 422,
     "1,280,000 pixels, more than the server's limit of 1,000,000"),
    ("input-size-32x32-allowed", "POST", "/v1/depth?format=json&input_size=32x32", PHOTO, AUTH, 200, ""),
    ("input-size-31", "POST", "/v1/depth?input_size=31x32", PHOTO, AUTH, 422, "input_size"),
    ("input-size-unicode-digits", "POST", "/v1/depth?input_size=%D9%A4%D9%A4x64", PHOTO, AUTH, 422, "input_size"),
    ("stride-1e30", "POST", "/v1/depth?format=ply&stride=" + "1" + "0" * 30, PHOTO, AUTH, 422, "stride: expected 1..1000"),
    ("stride-0", "POST", "/v1/depth?format=ply&stride=0", PHOTO, AUTH, 422, "stride: expected 1..1000"),
    ("stride-negative", "POST", "/v1/depth?format=ply&stride=-3", PHOTO, AUTH, 422, "stride"),
    ("stride-at-the-bound", "POST", "/v1/depth?format=ply&stride=1000", PHOTO, AUTH, 200, ""),
    ("stride-over-the-bound", "POST", "/v1/depth?format=ply&stride=1001", PHOTO, AUTH, 422, "stride"),
    # intrinsics: bounded where they are parsed (geometry.camera.parse_spec): no +-inf point can come out
    ("intrinsics-tiny-focal", "POST", "/v1/depth?format=ply&intrinsics=1e-300,1e-300,0,0", PHOTO, AUTH, 422,
     "intrinsics: fx and fy must be 1 to 1,000,000 pixels"),
    ("intrinsics-nan", "POST", "/v1/depth?format=ply&intrinsics=nan,100,0,0", PHOTO, AUTH, 422, "fx and fy"),
    ("intrinsics-huge-centre", "POST", "/v1/depth?format=json&intrinsics=100,100,1e300,0", PHOTO, AUTH, 422,
     "cx and cy"),
    # the body limit: exactly the limit is allowed (then it is not an image), one byte more is not
    ("body-exactly-the-limit", "POST", "/v1/depth", b"\x00" * LIMIT, AUTH, 415, "not an image"),
    ("body-one-over-the-limit", "POST", "/v1/depth", b"\x00" * (LIMIT + 1), AUTH, 413, "more than the limit"),
    # the key: the scheme name is case-insensitive (RFC 9110), the key is not
    ("bearer-lower-case", "GET", "/v1/model", None, {"Authorization": f"bearer {KEY}"}, 200, ""),
    ("bearer-upper-case", "GET", "/v1/model", None, {"Authorization": f"BEARER {KEY}"}, 200, ""),
    ("key-upper-case", "GET", "/v1/model", None, {"Authorization": f"Bearer {KEY.upper()}"}, 401, "wrong API key"),
    ("no-key", "POST", "/v1/depth", PHOTO, {}, 401, "missing API key"),
    # liveness: HEAD too, never behind the key
    ("head-healthz", "HEAD", "/healthz", None, {}, 200, ""),
    ("get-healthz", "GET", "/healthz", None, {}, 200, ""),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(server, photo, case):
    _, method, path, body, headers, status, words = case
    got, resp_headers, raw = request(server, method, path, photo if body is PHOTO else body, headers)
    assert got == status, raw[:300]
    if status >= 400:
        detail = json.loads(raw)["detail"]
        assert "\n" not in detail and words in detail, detail
    assert request(server, "GET", "/healthz")[0] == 200  # the server is still up


def test_onnx_flip_export_refuses_flip_false_with_422(checkpoint, photo, tmp_path):
    pytest.importorskip("onnxruntime")
    from transferdepth.apps.serve.engine import OnnxEngine
    from transferdepth.deploy.export import export_onnx
    from transferdepth.inference.checkpoint import load_checkpoint

    onnx_file = export_onnx(load_checkpoint(checkpoint), tmp_path / "flip.onnx", flip=True)
    app = create_app(OnnxEngine(onnx_file), Settings(tmp_dir=str(tmp_path)))
    with serve_in_thread(app) as url:
        status, _, raw = request(url, "POST", "/v1/depth?format=json&flip=false", photo)
        assert status == 422, raw
        assert json.loads(raw)["detail"].startswith("flip=false: this model was exported with --flip")
        assert request(url, "POST", "/v1/depth?format=json&flip=true", photo)[0] == 200


# --- slow uploads: a bounded local slow client -----------------------------------------------------

def _stall(url: str, n: int, declared: int = 100_000) -> list[socket.socket]:
    """n connections that send their headers and 3 body bytes of `declared`, then stall."""
    u = urllib.parse.urlsplit(url)
    socks = []
    for _ in range(n):
        s = socket.create_connection((u.hostname, u.port), timeout=BODY_TIMEOUT_S + 10)
        s.sendall(f"POST /v1/depth HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: image/jpeg\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + b"\xff\xd8\xff")
        socks.append(s)
    return socks


def test_slow_uploads_hold_no_slot_and_end_with_408(server, photo):
    """More stalled uploads than queue slots (2): an honest client is still served, and every stalled
    upload is answered 408 once the body timeout passes (the loop is bounded: each socket waits at most
    the timeout + 10 s)."""
    socks = _stall(server, 6)
    try:
        t0 = time.monotonic()
        for _ in range(3):
            status, _, raw = request(server, "POST", "/v1/depth?format=json", photo, AUTH)
            assert status == 200, raw  # stalled bodies hold no inference slot
        assert time.monotonic() - t0 < BODY_TIMEOUT_S + 5
        for s in socks:
            reply = _read_reply(s)
            assert reply.startswith("HTTP/1.1 408"), reply
            assert "not received within 1.5 s" in reply
        assert time.monotonic() - t0 < BODY_TIMEOUT_S + 10
    finally:
        for s in socks:
            s.close()
    assert request(server, "POST", "/v1/depth?format=json", photo, AUTH)[0] == 200


# --- the log: one line per failed request, the traceback only at debug level --------------------------

class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs():
    """Records of the server's logger and of uvicorn's (where an escaped exception's traceback goes)."""
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("transferdepth.serve", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler.records, loggers[0]
    for lg, level in zip(loggers, levels):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _tracebacks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.exc_info]


def test_a_500_is_one_log_line_and_the_traceback_only_at_debug(photo, tmp_path, logs):
    records, log = logs
    log.setLevel(logging.WARNING)
    app = create_app(_SlowEngine(fail=True), Settings(tmp_dir=str(tmp_path)))
    with serve_in_thread(app) as url:
        status, _, raw = request(url, "POST", "/v1/depth", photo)
        assert status == 500 and json.loads(raw)["detail"] == "internal error: RuntimeError: out of memory"
        time.sleep(0.2)
        shown = [r for r in records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in shown] == ["POST /v1/depth: 500 internal error: RuntimeError: out of memory"]
        assert not _tracebacks(shown)  # uvicorn's "Exception in ASGI application" would carry one
        records.clear()
        log.setLevel(logging.DEBUG)
        assert request(url, "POST", "/v1/depth", photo)[0] == 500
        time.sleep(0.2)
        assert len(_tracebacks(records)) == 1 and _tracebacks(records)[0].levelno == logging.DEBUG


def test_a_client_disconnect_is_one_log_line(photo, tmp_path, logs):
    records, log = logs
    log.setLevel(logging.WARNING)
    app = create_app(_SlowEngine(), Settings(tmp_dir=str(tmp_path)))
    with serve_in_thread(app) as url:
        (s,) = _stall(url, 1)
        time.sleep(0.3)
        s.close()  # gone before its body arrived
        deadline = time.monotonic() + 5
        while not records and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert [r.getMessage() for r in records] == [
            "POST /v1/depth: the client disconnected before its request was read"]
        assert not _tracebacks(records)
        assert request(url, "GET", "/healthz")[0] == 200


# --- the command line: every numeric flag in its documented range; a port in use ----------------------

CLI_CASES = [  # (extra arguments, words in the one-line error)
    (["--max-body-mb", "inf"], "--max-body-mb: expected more than 0 to 4,096, got inf"),
    (["--max-body-mb", "nan"], "--max-body-mb: expected more than 0 to 4,096, got nan"),
    (["--max-body-mb", "0"], "--max-body-mb"),
    (["--max-body-mb", "5000"], "--max-body-mb"),
    (["--queue-size", "0"], "--queue-size: expected 1 to 10,000"),
    (["--queue-size", "100000"], "--queue-size"),
    (["--max-pixels", "0"], "--max-pixels: expected 1 to 1,000,000,000"),
    (["--max-pixels", "10000000000"], "--max-pixels"),
    (["--port", "70000"], "--port: expected 0 to 65,535"),
    (["--port", "-1"], "--port"),
    (["--body-timeout", "0"], "--body-timeout: expected more than 0 to 3,600"),
    (["--body-timeout", "nan"], "--body-timeout"),
    (["--keep-alive", "inf"], "--keep-alive"),
]


@pytest.mark.parametrize("extra,words", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_numeric_flags_out_of_range(monkeypatch, capsys, checkpoint, extra, words):
    seen = _run_cli(monkeypatch, ["serve", "--checkpoint", str(checkpoint), *extra])
    err = capsys.readouterr().err
    assert seen["rc"] == 2 and "app" not in seen  # refused before the engine is loaded or a port bound
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_cli_port_in_use_exits_2_with_one_line(monkeypatch, capsys, checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        seen = _run_cli(monkeypatch, ["serve", "--checkpoint", str(checkpoint), "--port", str(port)])
    err = capsys.readouterr().err
    assert seen["rc"] == 2 and "app" not in seen
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1, err


def test_cli_passes_the_timeouts_to_uvicorn(monkeypatch, checkpoint):
    import uvicorn

    from transferdepth.cli import main

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--checkpoint", str(checkpoint), "--port", "0", "--body-timeout", "7",
                 "--keep-alive", "3"]) == 0
    assert seen["timeout_keep_alive"] == 3 and seen["app"].state.settings.body_timeout_s == 7
