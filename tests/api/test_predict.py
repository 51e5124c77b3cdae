"""`transferdepth predict`: inputs (files, folders, globs), output formats and units, bad inputs, exit codes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.api.predict import colorize, depth_to_mm
from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.recipe import nyu_intrinsics


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def read_ply(path):
    """(format, header comments, structured vertices) of a PLY written by `write_ply`."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    fmt = header[1].split()[1]
    n = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")]
    if fmt == "binary_little_endian":
        verts = np.frombuffer(data[end:], dtype=dtype)
    else:
        rows = np.loadtxt(data[end:].decode().splitlines(), ndmin=2)
        verts = np.zeros(len(rows), dtype=dtype)
        for i, name in enumerate(("x", "y", "z", "r", "g", "b")):
            verts[name] = rows[:, i]
    assert len(verts) == n
    return fmt, header, verts


def test_all_formats_units_and_names(ckpt, tmp_path, capsys):
    rgb = rgb_image(24, 40)
    img = save(tmp_path / "in" / "room.png", rgb)
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
               "--format", "png16,npy", "--format", "color", "--format", "ply", "--no-flip", "--device", "cpu",
               "--intrinsics", "30,32,17,9"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "room.ply", "room_depth_color.png", "room_depth_m.npy", "room_depth_mm.png"]
    depth = np.load(tmp_path / "out" / "room_depth_m.npy")
    assert depth.dtype == np.float32 and depth.shape == (24, 40)
    np.testing.assert_array_equal(depth, DepthEstimator.from_pretrained(ckpt, "cpu", flip=False).predict(img))
    with Image.open(tmp_path / "out" / "room_depth_mm.png") as im:
        mm = np.asarray(im)
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, np.rint(depth.astype(np.float64) * 1000).astype(np.uint16))
    with Image.open(tmp_path / "out" / "room_depth_color.png") as im:
        assert (im.mode, im.size) == ("RGB", (40, 24))
    fmt, header, verts = read_ply(tmp_path / "out" / "room.ply")
    assert fmt == "binary_little_endian" and len(verts) == 24 * 40
    # pixel (u, v) = (column, row) is vertex v * W + u; the principal point (17, 9) lies on the optical axis
    p = verts[9 * 40 + 17]
    assert (p["x"], p["y"], p["z"]) == (0.0, 0.0, depth[9, 17])
    q = verts[2 * 40 + 5]  # x = (u - cx) d / fx, y = (v - cy) d / fy
    np.testing.assert_allclose([q["x"], q["y"], q["z"]],
                               [(5 - 17) * depth[2, 5] / 30, (2 - 9) * depth[2, 5] / 32, depth[2, 5]], rtol=1e-6)
    assert (q["r"], q["g"], q["b"]) == tuple(rgb[2, 5])


def test_ply_ascii_stride_and_nyu_intrinsics(ckpt, tmp_path):
    img = save(tmp_path / "k.png", rgb_image(24, 32))
    out = tmp_path / "out"
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(out), "--format", "ply,npy",
                 "--ply-ascii", "--stride", "3", "--intrinsics", "nyu"]) == 0
    depth = np.load(out / "k_depth_m.npy")
    fmt, header, verts = read_ply(out / "k.ply")
    assert fmt == "ascii" and len(verts) == 8 * 11  # rows 0,3,..,21 x columns 0,3,..,30
    k = nyu_intrinsics(24, 32)  # NYU's Kinect scaled 1/20 both ways, pixel centres at integers
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    assert (fx, cx) == pytest.approx((518.8579 / 20, (325.5824 + 0.5) / 20 - 0.5))
    v = verts[1 * 11 + 2]  # row 3, column 6
    np.testing.assert_allclose([v["x"], v["y"], v["z"]],
                               [(6 - cx) * depth[3, 6] / fx, (3 - cy) * depth[3, 6] / fy, depth[3, 6]], rtol=1e-5)
    assert any(line.startswith("comment intrinsics fx fy cx cy") for line in header)


def test_png16_is_millimetres_never_zero_and_clipped():
    d = np.array([[0.1, 1.2344, 1.2346], [65.6, np.nan, 0.0001]], np.float32)
    np.testing.assert_array_equal(depth_to_mm(d), [[100, 1234, 1235], [65535, 0, 1]])


def test_colorize_fixed_and_per_image_range():
    import matplotlib

    lut = (matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    img, rng = colorize(np.array([[1.0, 3.0, 5.0, 9.0]]), "viridis", (1.0, 5.0))
    assert rng == (1.0, 5.0)
    np.testing.assert_array_equal(img[0], lut[[0, 128, 255, 255]])  # 3 m: 0.5 * 255 = 127.5 -> 128
    img, rng = colorize(np.array([[2.0, 4.0]]), "viridis")
    assert rng == (2.0, 4.0)
    np.testing.assert_array_equal(img[0], lut[[0, 255]])


def test_colorbar_adds_a_margin(ckpt, tmp_path):
    img = save(tmp_path / "c.png", rgb_image(64, 80))
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                 "--format", "color", "--colorbar", "--range", "0.5,6", "--cmap", "magma"]) == 0
    with Image.open(tmp_path / "o" / "c_depth_color.png") as im:
        assert im.size[1] == 64 and im.size[0] > 80


def test_folders_recursion_globs_and_name_clashes(ckpt, tmp_path):
    src = tmp_path / "src"
    for rel in ("a.png", "b.jpg", "sub/c.png", "clash.png", "clash.jpg"):
        save(src / rel, rgb_image(16, 16))
    (src / "readme.txt").write_text("skipped: not an image extension")
    out = tmp_path / "flat"
    assert main(["predict", str(src), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_depth_mm.png", "b_depth_mm.png", "clash_jpg_depth_mm.png", "clash_png_depth_mm.png"]
    out = tmp_path / "rec"
    assert main(["predict", str(src), "--recursive", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert (out / "sub" / "c_depth_mm.png").is_file()
    out = tmp_path / "glob"
    assert main(["predict", str(src / "*.png"), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_depth_mm.png", "clash_depth_mm.png"]


def test_batches_of_same_size_images_match_single_predictions(ckpt, tmp_path):
    paths = [save(tmp_path / f"{i}.png", rgb_image(32, 48 if i < 3 else 40, i)) for i in range(4)]
    assert main(["predict", *map(str, paths), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                 "--format", "npy", "--batch-size", "2", "--device", "cpu"]) == 0
    est = DepthEstimator.from_pretrained(ckpt, device="cpu")
    for p in paths:
        np.testing.assert_allclose(np.load(tmp_path / "o" / f"{p.stem}_depth_m.npy"), est.predict(p), atol=1e-5)


def test_the_default_batch_is_one_image_on_the_cpu_and_four_on_a_gpu(ckpt, tmp_path, monkeypatch):
    import torch

    import transferdepth.api.predict as api_predict
    from transferdepth.api.estimator import default_batch_size

    seen = []
    real = api_predict.predict_files
    monkeypatch.setattr(api_predict, "predict_files", lambda est, files, out, opts, batch, *a, **k:
                        seen.append(batch) or real(est, files, out, opts, batch, *a, **k))
    paths = [save(tmp_path / f"{i}.png", rgb_image(32, 48, i)) for i in range(3)]
    for extra, want in (([], 1), (["--batch-size", "3"], 3)):
        assert main(["predict", *map(str, paths), "--checkpoint", str(ckpt), "--out", str(tmp_path / f"o{want}"),
                     "--format", "npy", "--device", "cpu", *extra]) == 0
        assert seen.pop() == want
    assert default_batch_size(torch.device("cuda")) == 4 and default_batch_size(torch.device("cpu")) == 1


def test_other_image_modes_are_accepted(ckpt, tmp_path):
    rgb = rgb_image(20, 24)
    save(tmp_path / "in" / "grey.png", rgb[..., 0])
    save(tmp_path / "in" / "rgba.png", np.dstack([rgb, rgb[..., :1]]))
    Image.fromarray(rgb).convert("P").save(tmp_path / "in" / "pal.png")
    save(tmp_path / "in" / "deep.png", rgb[..., 0].astype(np.uint16) * 200)
    assert main(["predict", str(tmp_path / "in"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                 "--format", "npy"]) == 0
    assert all(np.load(tmp_path / "o" / f"{s}_depth_m.npy").shape == (20, 24) for s in ("grey", "rgba", "pal", "deep"))


def test_bad_inputs_fail_alone_with_a_summary_and_status_1(ckpt, tmp_path, capsys, monkeypatch):
    good = save(tmp_path / "good.png", rgb_image(16, 16))
    (tmp_path / "text.jpg").write_text("this is not a JPEG")
    (tmp_path / "empty.png").write_bytes(b"")
    save(tmp_path / "whole.png", rgb_image(30, 30))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    save(tmp_path / "big.png", rgb_image(30, 40))  # 1200 pixels > --max-pixels 1000
    bad = ["text.jpg", "empty.png", "cut.png", "big.png", "missing.png"]
    rc = main(["predict", str(good), *(str(tmp_path / b) for b in bad), "--checkpoint", str(ckpt),
               "--out", str(tmp_path / "out"), "--max-pixels", "1000"])
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_depth_mm.png"]
    assert "5 of 6 inputs failed:" in err
    summary = err[err.index("5 of 6 inputs failed:"):].splitlines()[1:]
    reasons = {line.strip().split(": ", 1)[0].rsplit("/", 1)[-1]: line.split(": ", 1)[1] for line in summary}
    assert reasons == {
        "text.jpg": "not an image (unknown format or not an image file)",
        "empty.png": "empty file (0 bytes)",
        "cut.png": reasons["cut.png"],
        "big.png": "image is 40x30 = 1,200 pixels, more than the limit of 1,000 (raise max_pixels / "
                   "--max-pixels to allow it)",
        "missing.png": "no such file or folder",
    }
    assert reasons["cut.png"].startswith("cannot decode image (truncated or corrupt?)")
    assert "Traceback" not in err


def test_pil_decompression_bomb_becomes_our_error(ckpt, tmp_path, capsys, monkeypatch):
    img = save(tmp_path / "bomb.png", rgb_image(20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses > 200 pixels; ours allows 10**9
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
               "--max-pixels", str(10**9)])
    err = capsys.readouterr().err
    assert rc == 1
    assert re.search(r"bomb\.png: image too large for PIL's decompression-bomb limit \(200 pixels\)", err)


def test_unwritable_output_folder_is_a_usage_error(ckpt, tmp_path, capsys):
    img = save(tmp_path / "a.png", rgb_image(16, 16))
    (tmp_path / "taken").write_text("a file where the output folder should go")
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "taken")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"transferdepth: error: output folder {tmp_path / 'taken'}: cannot write there " \
                  "(exists and is not a folder)"


def test_checkpoint_of_another_architecture_is_a_usage_error(ckpt, tmp_path, capsys):
    img = save(tmp_path / "a.png", rgb_image(16, 16))
    wrong = save_checkpoint(tiny_model(), tmp_path / "wrong")
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(cfg | {"encoder": "resnet50"}))
    rc = main(["predict", str(img), "--checkpoint", str(wrong), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"transferdepth: error: {wrong / 'model.safetensors'} does not fit a resnet50 model")
    assert not (tmp_path / "o" / "a_depth_mm.png").exists()


@pytest.mark.parametrize("option, message", [
    (["--format", "png16,jpeg"], "--format: unknown format jpeg; choose from png16, npy, color, ply"),
    (["--range", "5,1"], "--range: need 0 <= MIN < MAX metres, got 5,1"),
    (["--intrinsics", "500,500,320"], "--intrinsics expects 4 comma-separated numbers, got '500,500,320'"),
    (["--cmap", "rainbowz"], "--cmap: unknown matplotlib colormap 'rainbowz'"),
    (["--stride", "0"], "--stride must be an integer in [1, 65536] pixels, got 0"),
])
def test_bad_options_are_usage_errors(ckpt, tmp_path, capsys, option, message):
    img = save(tmp_path / "a.png", rgb_image(16, 16))
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), *option])
    assert rc == 2
    assert capsys.readouterr().err.startswith(f"transferdepth: error: {message}")
