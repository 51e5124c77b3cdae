"""Metres from known points in the API (`predict(image, align_to=...)`) and `transferdepth predict --align-to`:
the fit made on the map at the image's size (after the network's resize), files written aligned, and one-line
errors before any prediction."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.cli import main
from transferdepth.geometry.align import AlignError
from transferdepth.inference.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    h, w = 40, 56
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 4, yy * 5, (xx * yy) % 256], axis=2).astype(np.uint8)
    path = tmp_path_factory.mktemp("img") / "room.png"
    Image.fromarray(rgb).save(path)
    return path


def points_csv(path, depth, factor, n=20, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(depth.size, n, replace=False)
    y, x = np.unravel_index(idx, depth.shape)
    path.write_text("x,y,metres\n" + "".join(f"{a},{b},{factor * depth[b, a]:.9g}\n" for a, b in zip(x, y)))
    return path


def test_predict_align_to_recovers_a_known_scale_at_the_image_size(ckpt, photo, tmp_path):
    # max_side 32: the network sees 23x32 and its output is resized to 40x56 before the fit
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False, max_side=32)
    base = est.predict(photo)
    assert base.shape == (40, 56)
    csv = points_csv(tmp_path / "known.csv", base, 2.0)
    aligned = est.predict(photo, align_to=csv)
    np.testing.assert_allclose(aligned, 2.0 * base, rtol=1e-6)
    out, fit = est.predict_aligned(photo, csv, "scale-shift", align_space="depth")
    assert fit.mode == "scale-shift" and fit.space == "depth" and fit.n_points == 20
    assert fit.scale == pytest.approx(2.0, rel=1e-6) and fit.shift == pytest.approx(0.0, abs=1e-5)
    pts = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_allclose(est.predict(photo, align_to=pts, align="scale"), 2.0 * base, rtol=1e-6)


def test_bad_target_fails_before_the_network_runs(ckpt, photo, tmp_path, monkeypatch):
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False)
    monkeypatch.setattr(est, "predict_rgb", lambda rgbs: pytest.fail("the network ran"))
    (tmp_path / "one.csv").write_text("3,4,2.0\n")
    with pytest.raises(AlignError, match=r"one.csv: 1 valid point .* scale-shift fit needs at least 2"):
        est.predict(photo, align_to=tmp_path / "one.csv", align="scale-shift")
    (tmp_path / "out.csv").write_text("3,4,2.0\n56,0,2.0\n")
    with pytest.raises(AlignError, match=r"out.csv: point \(56, 0\) is outside the 56x40 image"):
        est.predict(photo, align_to=tmp_path / "out.csv")


def test_cli_align_to_writes_aligned_metres(ckpt, photo, tmp_path, capsys):
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False)
    base = est.predict(photo)
    csv = points_csv(tmp_path / "known.csv", base, 1.5)
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--no-flip",
               "--device", "cpu", "--format", "npy", "--align-to", str(csv), "--robust"])
    assert rc == 0, capsys.readouterr().err
    assert "aligned to" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "out" / "room_depth_m.npy"), 1.5 * base, rtol=1e-5)


@pytest.mark.parametrize("content,extra,expect", [
    ("3,4,2.0\n", ["--align", "scale-shift"], "1 valid point (known metres > 0), the scale-shift fit needs at least 2"),
    ("3,4,2.0\n9,9,1\n", ["--robust"], "the robust scale fit needs at least 3"),
    ("3,4,2.0\n99,4,2.0\n", [], "point (99, 4) is outside the 56x40 image"),
    ("3,4,x\n", [], "line 1: expected three numbers"),
])
def test_cli_align_to_bad_input_is_one_line_exit_2(ckpt, photo, tmp_path, capsys, content, extra, expect):
    (tmp_path / "t.csv").write_text(content)
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--device", "cpu",
               "--align-to", str(tmp_path / "t.csv"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and expect in err and "t.csv" in err and len(err.splitlines()) == 1, err


def test_cli_align_to_needs_one_image_and_align_needs_align_to(ckpt, photo, tmp_path, capsys):
    (tmp_path / "t.csv").write_text("3,4,2.0\n5,6,2.5\n")
    Image.open(photo).save(tmp_path / "other.png")
    rc = main(["predict", str(photo), str(tmp_path / "other.png"), "--checkpoint", str(ckpt), "--out",
               str(tmp_path / "out"), "--device", "cpu", "--align-to", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "give exactly one image" in err[-1]
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out2"), "--robust"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.endswith("--robust: give --align-to FILE (the known metres) too")
