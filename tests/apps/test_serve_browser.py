"""The page at / in a real browser: Debian's chromium (installed by .ci/run) driven by Playwright.

Upload a real 7-Scenes frame, wait for the depth view, check the cursor readout against the API, check the
WebGL point cloud is drawn (and rotates), and take a webcam snapshot with Chromium's fake camera. A
screenshot of the page is written to $TRANSFERDEPTH_TEST_OUTPUT (default .pytest_cache/test-output/).
Skips with a reason where chromium or the playwright package is missing (never downloads a browser).
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TRANSFERDEPTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(os.environ.get("TRANSFERDEPTH_TEST_OUTPUT", REPO / ".pytest_cache" / "test-output"))
FRAME = "7scenes-redkitchen/frame-000100.color.jpg"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
BACKGROUND = (17, 17, 17)  # the cloud canvas' clear colour (0.067 * 255)

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no chromium at {CHROMIUM} (CI installs Debian's chromium in .ci/run)", allow_module_level=True)

from transferdepth.apps.serve.app import Settings, create_app, serve_in_thread  # noqa: E402
from transferdepth.apps.serve.engine import TorchEngine  # noqa: E402
from transferdepth.inference.checkpoint import save_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt = save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny")
    app = create_app(TorchEngine(ckpt, device="cpu"), Settings(tmp_dir=str(tmp_path_factory.mktemp("tmp"))))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(60_000)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server)
        pg.wait_for_function("document.getElementById('model').textContent.includes('mobilenetv2')")
        yield pg
        context.close()
        assert not errors, errors


def api_depth(url: str, data: bytes) -> np.ndarray:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.request("POST", "/v1/depth?format=npy", body=data)
    r = conn.getresponse()
    assert r.status == 200
    return np.load(io.BytesIO(r.read()))


def cloud_pixels(page) -> tuple[np.ndarray, int]:
    """The 3D canvas as an RGB array and how many pixels are not background."""
    img = np.asarray(Image.open(io.BytesIO(page.locator("#cloud").screenshot())).convert("RGB")).astype(int)
    drawn = int((np.abs(img - np.array(BACKGROUND)).sum(axis=2) > 30).sum())
    return img, drawn


def at_pixel(box: dict, u: int, v: int) -> tuple[float, float]:
    """Viewport position of the centre of image pixel (u, v) of a canvas shown 1:1."""
    assert (box["width"], box["height"]) == (640, 480), box
    return box["x"] + u + 0.5, box["y"] + v + 0.5


def wait_done(page) -> None:
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)")
    assert page.evaluate("document.body.dataset.state") == "done", page.text_content("#status")


def test_upload_readout_and_point_cloud(page, server, rgbd_root):
    frame = rgbd_root / FRAME
    page.set_input_files("#file", str(frame))
    wait_done(page)
    assert page.evaluate("[document.getElementById('depth').width, document.getElementById('depth').height]") == [640, 480]
    reference = api_depth(server, frame.read_bytes())
    page.locator("#depth").scroll_into_view_if_needed()
    box = page.locator("#depth").bounding_box()
    for u, v in ((400, 300), (37, 451), (612, 20)):
        page.mouse.move(*at_pixel(box, u, v))
        shown = page.text_content("#readout")
        # the pixel the page reports under the cursor (Chromium rounds pointer positions: within one pixel)
        got_u, got_v = int(page.get_attribute("#readout", "data-u")), int(page.get_attribute("#readout", "data-v"))
        assert abs(got_u - u) <= 1 and abs(got_v - v) <= 1, (shown, u, v)
        assert shown.startswith(f"({got_u}, {got_v}): ") and shown.endswith(" m"), shown
        value = float(shown.split(": ")[1][:-2])
        assert abs(value - float(reference[got_v, got_u])) <= 1e-3, (shown, reference[got_v, got_u])
    before, drawn = cloud_pixels(page)
    assert drawn > 0.05 * before.shape[0] * before.shape[1], f"3D canvas looks blank ({drawn} pixels drawn)"
    page.locator("#cloud").scroll_into_view_if_needed()
    cloud = page.locator("#cloud").bounding_box()
    page.mouse.move(cloud["x"] + 200, cloud["y"] + 150)
    page.mouse.down()
    page.mouse.move(cloud["x"] + 300, cloud["y"] + 170, steps=5)
    page.mouse.up()
    after, _ = cloud_pixels(page)
    assert np.abs(after - before).sum() > 0, "dragging did not rotate the point cloud"
    page.locator("#depth").scroll_into_view_if_needed()
    box = page.locator("#depth").bounding_box()
    page.mouse.move(*at_pixel(box, 400, 300))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_webcam_snapshot_with_the_fake_camera(page):
    page.click("#camera")
    page.wait_for_function("!document.getElementById('snap').disabled && document.getElementById('video').videoWidth > 0")
    page.click("#snap")
    wait_done(page)
    assert page.evaluate("document.getElementById('depth').width") == page.evaluate("document.getElementById('video').videoWidth")
    img, drawn = cloud_pixels(page)
    assert drawn > 0.05 * img.shape[0] * img.shape[1]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "serve_page_webcam.png"), full_page=True)


MESH_SHOT = Path(os.environ.get("TRANSFERDEPTH_MESH_SCREENSHOT", "/tmp/mesh_view.png"))


def test_points_mesh_toggle_draws_the_triangulated_depth(page, server, rgbd_root):
    from transferdepth.geometry.mesh import DEFAULT_MAX_JUMP, depth_to_mesh

    frame = rgbd_root / FRAME
    page.click("#points")
    page.evaluate("document.getElementById('file').value = ''; document.body.dataset.state = 'idle'")
    page.set_input_files("#file", str(frame))  # after the webcam test: this frame again
    wait_done(page)
    page.locator("#cloud").scroll_into_view_if_needed()
    points, drawn_points = cloud_pixels(page)
    assert page.get_attribute("#cloud", "data-mode") == "points"
    page.click("#mesh")
    assert page.get_attribute("#cloud", "data-mode") == "mesh"
    mesh, drawn_mesh = cloud_pixels(page)
    assert drawn_mesh > 0.05 * mesh.shape[0] * mesh.shape[1], f"mesh view looks blank ({drawn_mesh} pixels)"
    assert np.abs(mesh - points).sum() > 0, "the mesh view draws the same as the points view"
    # the page's triangles are those geometry/mesh.py keeps on the same depth (its stride: <= 120,000 points)
    depth = np.asarray(page.evaluate("Array.from(state.depth)"), np.float32).reshape(480, 640)
    np.testing.assert_allclose(depth, api_depth(server, frame.read_bytes()), rtol=1e-6)
    stride = int(np.ceil(np.sqrt(depth.size / 120_000)))
    k = (1.0, 1.0, 0.0, 0.0)  # positions do not matter for which triangles are kept
    expected = len(depth_to_mesh(depth, np.zeros((*depth.shape, 3), np.uint8), k, DEFAULT_MAX_JUMP, stride).faces)
    got = int(page.get_attribute("#cloud", "data-triangles"))
    assert abs(got - expected) <= max(2, expected // 1000), (got, expected)  # float32 vs float64 at the threshold
    page.screenshot(path=str(MESH_SHOT), full_page=True)
    print(f"screenshot: {MESH_SHOT}")
    page.click("#points")
    assert page.get_attribute("#cloud", "data-mode") == "points"
    back, _ = cloud_pixels(page)
    np.testing.assert_array_equal(back, points)
