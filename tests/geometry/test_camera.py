"""Camera intrinsics: square pixels by default, EXIF focal lengths, field of view, NYU, and the CLI option."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth.cli import main
from transferdepth.geometry import camera
from transferdepth.geometry.camera import IntrinsicsError, IntrinsicsSpec, parse_spec, resolve
from transferdepth.geometry.points import depth_to_points
from transferdepth.inference.checkpoint import save_checkpoint

EXIF_IFD, ORIENTATION = 0x8769, 0x0112


def jpeg(path, h, w, exif_tags=None, orientation=None):
    ex = Image.Exif()
    if orientation:
        ex[ORIENTATION] = orientation
    for tag, value in (exif_tags or {}).items():
        ex.get_ifd(EXIF_IFD)[tag] = value
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path, exif=ex)
    return path


def test_26mm_equivalent_focal_gives_the_diagonal_rule(tmp_path):
    # 4032x3024 (a 12 MP phone photo, here 1/8 size): f = 26 mm * diagonal_px / 43.27 mm (equal diagonal view)
    path = jpeg(tmp_path / "phone.jpg", 378, 504, {0xA405: 26})
    k = resolve("auto", 504, 378, path)
    expected = 26 * math.hypot(504, 378) / math.hypot(36, 24)  # 302.87 px
    assert k.fx == pytest.approx(expected) and k.fy == k.fx
    assert (k.cx, k.cy) == (251.5, 188.5)
    assert k.source.startswith("exif: 26 mm")
    assert resolve("exif", 504, 378, path) == k
    # the same photo stored rotated (EXIF orientation 6, portrait after transposition): the same focal
    rotated = jpeg(tmp_path / "portrait.jpg", 378, 504, {0xA405: 26}, orientation=6)
    kp = resolve("auto", 378, 504, rotated)
    assert kp.fx == kp.fy == pytest.approx(expected) and (kp.cx, kp.cy) == (188.5, 251.5)


def test_focal_length_with_focal_plane_resolution(tmp_path):
    # 4.25 mm lens, 1000 pixels per cm on the sensor (= 100 px/mm), photo resized to half of PixelXDimension
    tags = {0x920A: 4.25, 0xA20E: 1000.0, 0xA210: 3, 0xA002: 200, 0xA003: 150}
    k = resolve("auto", 100, 75, jpeg(tmp_path / "a.jpg", 75, 100, tags))
    assert k.fx == k.fy == pytest.approx(4.25 * 100 * 0.5)
    assert "focal-plane" in k.source


@pytest.mark.parametrize("w, h", [(3024, 4032), (4032, 3024), (1920, 1080), (640, 480)])
def test_default_is_square_pixels_at_the_centre_for_any_shape(w, h):
    k = resolve(None, w, h)
    assert k.fx == k.fy == pytest.approx(camera.DEFAULT_FOCAL_35MM * math.hypot(w, h) / 43.2666, rel=1e-4)
    assert (k.cx, k.cy) == ((w - 1) / 2, (h - 1) / 2)
    assert k.source.startswith("default 26 mm")
    # portrait and landscape of the same sensor: the same focal length in pixels
    assert resolve(None, h, w).fx == pytest.approx(k.fx)


def test_fov_explicit_and_nyu():
    k = resolve("fov:90", 640, 480)
    assert k.fx == k.fy == pytest.approx(320.0)
    assert resolve((30, 32, 17, 9), 40, 24).as_tuple() == (30, 32, 17, 9)
    assert resolve("30,32,17,9", 40, 24).source.startswith("explicit")
    n = resolve("nyu", 640, 480)
    assert n.as_tuple() == (518.8579, 519.4696, 325.5824, 253.7362)
    np.testing.assert_array_equal(n.matrix(), [[518.8579, 0, 325.5824], [0, 519.4696, 253.7362], [0, 0, 1]])


def test_no_exif(tmp_path):
    plain = jpeg(tmp_path / "plain.jpg", 48, 64)
    assert resolve("auto", 64, 48, plain).source.startswith("default")
    with pytest.raises(IntrinsicsError, match="no EXIF focal length"):
        resolve("exif", 64, 48, plain)


@pytest.mark.parametrize("text, message", [
    ("fov:0", "fov:DEG needs 0 < DEG < 180"), ("fov:abc", "fov:DEG needs"),
    ("1,2,3", "expects 4 comma-separated numbers"), ("-1,2,3,4", "fx and fy must be 1 to 1,000,000 pixels"),
    ("kinect", "expects 4 comma-separated numbers"),
    # bounded so back-projection can never give +-inf points (a PLY of inf from 1e-300,1e-300,0,0)
    ("1e-300,1e-300,0,0", "fx and fy must be 1 to 1,000,000 pixels, got 1e-300"),
    ("0.5,100,0,0", "fx and fy must be 1 to"), ("100,2e6,0,0", "fx and fy must be 1 to"),
    ("nan,100,0,0", "fx and fy"), ("inf,100,0,0", "fx and fy"),
    ("100,100,1e300,0", "cx and cy must be within"), ("100,100,0,-inf", "cx and cy"), ("100,100,nan,0", "cx and cy"),
])
def test_bad_specs(text, message):
    with pytest.raises(IntrinsicsError, match=message):
        parse_spec(text)
    with pytest.raises(IntrinsicsError, match=message.replace("expects 4 comma-separated numbers", "expects 4")):
        resolve(text, 64, 48)  # the same rule wherever the text is read
    assert parse_spec("FOV:60") == IntrinsicsSpec("fov", fov_deg=60.0)


def test_explicit_bounds_keep_every_point_finite():
    """The extremes still allowed (fx = 1 px, the centre 1e6 px away) at a depth of 1000 m give finite
    float32 points; a tuple given to `resolve` (the API's OutputOptions) obeys the same bounds."""
    k = resolve("1,1,-1000000,1000000", 640, 480)
    xyz, _ = depth_to_points(np.full((480, 640), 1000.0), np.zeros((480, 640, 3), np.uint8), k.as_tuple())
    assert np.isfinite(xyz).all() and np.abs(xyz).max() > 1e9
    with pytest.raises(IntrinsicsError, match="fx and fy must be 1 to"):
        resolve((1e-300, 1e-300, 0.0, 0.0), 64, 48)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


def _ply_header(path):
    data = path.read_bytes()
    return data[:data.index(b"end_header")].decode("ascii")


def test_cli_writes_the_intrinsics_and_source_into_the_ply(ckpt, tmp_path, capsys):
    a = jpeg(tmp_path / "a.jpg", 30, 40, {0xA405: 26})
    b = jpeg(tmp_path / "b.jpg", 30, 40)
    out = tmp_path / "out"
    assert main(["predict", str(a), str(b), "--checkpoint", str(ckpt), "--out", str(out), "--format", "ply",
                 "--device", "cpu", "--no-flip"]) == 0
    f = 26 * 50 / math.hypot(36, 24)
    assert f"intrinsics fx fy cx cy {f:.4f} {f:.4f} 19.5000 14.5000 (exif: 26 mm" in _ply_header(out / "a.ply")
    assert "(default 26 mm" in _ply_header(out / "b.ply")
    # exif mode: the photo without EXIF fails with one line, the other is done
    rc = main(["predict", str(a), str(b), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o2"),
               "--format", "ply", "--device", "cpu", "--intrinsics", "exif"])
    err = capsys.readouterr().err
    assert rc == 1 and (tmp_path / "o2" / "a.ply").exists() and not (tmp_path / "o2" / "b.ply").exists()
    assert f"{b}: no EXIF focal length" in err


def test_cli_nyu_on_a_640x480_photo_without_exif(ckpt, tmp_path):
    img = jpeg(tmp_path / "n.jpg", 480, 640)
    out = tmp_path / "out"
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(out), "--format", "ply",
                 "--device", "cpu", "--no-flip", "--stride", "64", "--intrinsics", "nyu"]) == 0
    assert "intrinsics fx fy cx cy 518.8579 519.4696 325.5824 253.7362 (nyu" in _ply_header(out / "n.ply")


def test_heic_photo_with_exif(ckpt, tmp_path):
    pytest.importorskip("pillow_heif")
    assert camera.enable_heif()
    ex = Image.Exif()
    ex.get_ifd(EXIF_IFD)[0xA405] = 26
    path = tmp_path / "IMG_0001.HEIC"
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(path, format="HEIF", exif=ex.tobytes())
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(out), "--format", "ply",
                 "--device", "cpu", "--no-flip"]) == 0  # found in the folder by its extension
    f = 26 * 50 / math.hypot(36, 24)
    assert f"intrinsics fx fy cx cy {f:.4f} {f:.4f} 19.5000 14.5000 (exif: 26 mm" in _ply_header(out / "IMG_0001.ply")


def test_rotated_photo_focal_plane_focal_uses_the_long_sides(tmp_path):
    """Stored landscape 200x150 with EXIF orientation 6 (a portrait photo): the depth map is 150x200. The
    focal-plane focal is scaled by long side over long side (200 / 400), not by width over PixelXDimension."""
    tags = {0x920A: 4.25, 0xA20E: 1000.0, 0xA210: 3, 0xA002: 400, 0xA003: 300}  # 100 px/mm on the sensor
    path = jpeg(tmp_path / "portrait.jpg", 150, 200, tags, orientation=6)
    k = resolve("auto", 150, 200, path)
    assert k.fx == k.fy == pytest.approx(4.25 * 100 * 200 / 400)
    assert (k.cx, k.cy) == (74.5, 99.5)


def test_focal_plane_resolution_without_a_unit_tag_is_in_inches(tmp_path):
    """EXIF's FocalPlaneResolutionUnit defaults to 2 (inches) when absent: 2540 px/inch = 100 px/mm."""
    tags = {0x920A: 4.25, 0xA20E: 2540.0, 0xA002: 100, 0xA003: 75}
    k = resolve("auto", 100, 75, jpeg(tmp_path / "a.jpg", 75, 100, tags))
    assert k.fx == k.fy == pytest.approx(4.25 * 100)


def test_35mm_focal_of_zero_means_unknown(tmp_path):
    """FocalLengthIn35mmFilm = 0 is EXIF's "unknown": never fx = 0. Without another focal the default lens is
    used (auto) or the photo fails (exif); with a focal length and focal-plane resolution, those are used."""
    unknown = jpeg(tmp_path / "u.jpg", 48, 64, {0xA405: 0})
    k = resolve("auto", 64, 48, unknown)
    assert k.fx == pytest.approx(camera.DEFAULT_FOCAL_35MM * 80 / math.hypot(36, 24)) and k.source.startswith("default")
    with pytest.raises(IntrinsicsError, match="no EXIF focal length"):
        resolve("exif", 64, 48, unknown)
    both = jpeg(tmp_path / "b.jpg", 48, 64, {0xA405: 0, 0x920A: 4.0, 0xA20E: 10.0, 0xA210: 4})
    assert resolve("exif", 64, 48, both).fx == pytest.approx(40.0)
