"""POST /v1/depth with known metres: a multipart `align_to` file (CSV or 16-bit PNG mm) or `align_points` JSON
gives what `DepthEstimator.predict(image, align_to=...)` gives; bad targets and options are one-line 422s."""

from __future__ import annotations

import http.client
import io
import json
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
from transferdepth.apps.serve.engine import TorchEngine  # noqa: E402
from transferdepth.inference.checkpoint import save_checkpoint  # noqa: E402

BOUNDARY = "----transferdepthaligntest"


def request(url: str, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body))


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """(field, filename or None for a plain field, bytes) -> a multipart/form-data body and its header."""
    body = b""
    for field, filename, data in parts:
        disp = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-align")
    ckpt = save_checkpoint(tiny_model(), tmp / "ckpt")
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) % 256], axis=2).astype(np.uint8)
    photo = tmp / "photo.jpg"
    photo.write_bytes(jpeg_bytes(rgb))
    app = create_app(TorchEngine(ckpt, device="cpu", max_pixels=1_000_000), Settings(tmp_dir=str(tmp)))
    base = DepthEstimator.from_pretrained(ckpt, device="cpu").predict(photo)  # the server's defaults
    with serve_in_thread(app) as url:
        yield url, ckpt, photo, base


def known(base: np.ndarray, factor: float, n: int = 20) -> np.ndarray:
    rng = np.random.default_rng(1)
    idx = rng.choice(base.size, n, replace=False)
    y, x = np.unravel_index(idx, base.shape)
    return np.stack([x, y, factor * base[y, x]], 1)


def test_align_to_csv_png_and_json_points_as_the_api(setup, tmp_path):
    url, ckpt, photo, base = setup
    pts = known(base, 1.8)
    csv = "x,y,metres\n" + "".join(f"{int(x)},{int(y)},{m:.9g}\n" for x, y, m in pts)
    mm = np.zeros(base.shape, np.uint16)
    mm[pts[:, 1].astype(int), pts[:, 0].astype(int)] = np.rint(pts[:, 2] * 1000)
    buf = io.BytesIO()
    Image.fromarray(mm).save(buf, format="PNG")
    (tmp_path / "known.png").write_bytes(buf.getvalue())
    est = DepthEstimator.from_pretrained(ckpt, device="cpu")
    image = ("image", "photo.jpg", photo.read_bytes())
    for target, query, ref_target in [
        (("align_to", "known.csv", csv.encode()), "", pts),
        (("align_to", "known.png", buf.getvalue()), "&align=scale-shift&align_space=depth", tmp_path / "known.png"),
        (("align_points", None, json.dumps(pts.tolist()).encode()), "&robust=true", pts),
    ]:
        body, headers = multipart([image, target])
        status, h, out = request(url, "POST", f"/v1/depth?format=npy{query}", body, headers)
        assert status == 200, out
        kwargs = {"align": "scale-shift", "align_space": "depth"} if "scale-shift" in query else {}
        ref = est.predict(photo, align_to=ref_target, robust="robust" in query, **kwargs)
        np.testing.assert_allclose(npy(out), ref, rtol=1e-6)
        assert np.allclose(npy(out), 1.8 * base, rtol=2e-3)  # PNG: millimetres
        assert "20 points" in h["x-align"]
    body, headers = multipart([image, ("align_points", None, json.dumps(pts.tolist()).encode())])
    status, _, out = request(url, "POST", "/v1/depth?format=json", body, headers)
    assert status == 200 and json.loads(out)["align"]["scale"] == pytest.approx(1.8, rel=1e-6)


@pytest.mark.parametrize("query,target,expect", [
    ("&align=scale-shift", ("align_points", None, b"[[3, 4, 2.0]]"), "scale-shift fit needs at least 2"),
    ("", ("align_to", "k.csv", b"3,4,2\n64,4,2\n"), "k.csv: point (64, 4) is outside the 64x48 image"),
    ("", ("align_points", None, b"{oops"), "align_points: not JSON"),
    ("&align=affine", None, "unknown mode 'affine'"),
    ("&align=scale", None, "align: send the known metres too"),
])
def test_bad_targets_and_options_are_one_line_422(setup, query, target, expect):
    url, _, photo, _ = setup
    parts = [("image", "p.jpg", photo.read_bytes())] + ([target] if target else [])
    body, headers = multipart(parts)
    status, _, out = request(url, "POST", f"/v1/depth?format=npy{query}", body, headers)
    detail = json.loads(out)["detail"]
    assert status == 422 and expect in detail and "\n" not in detail, detail


def test_raw_body_without_target_is_unchanged(setup):
    url, _, photo, base = setup
    status, h, out = request(url, "POST", "/v1/depth?format=npy", Path(photo).read_bytes())
    assert status == 200 and "x-align" not in h
    np.testing.assert_array_equal(npy(out), base)
