"""geometry.align: metres from a few known points. Exact recovery of a known scale (and shift) from 20 points in
the stated space, the robust fit through 30% outliers, the target formats (16-bit PNG mm, CSV, JSON, arrays) and
one-line errors for too few points or points outside the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transferdepth.geometry.align import (
    DEFAULT_SPACE,
    AlignError,
    align_depth,
    fit_alignment,
    fit_scale,
    fit_scale_shift,
    parse_csv,
    points_from_json,
    read_target,
)

H, W = 48, 64


def predicted(seed: int = 0) -> np.ndarray:
    """A smooth HxW 'prediction' in metres (1-5 m)."""
    yy, xx = np.mgrid[0:H, 0:W]
    return (1.0 + 4.0 * (0.6 * xx / W + 0.4 * yy / H) + 0.1 * np.sin(xx / 5.0 + seed)).astype(np.float32)


def sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(H * W, n, replace=False)
    return idx % W, idx // W


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_default_spaces_are_the_stated_ones():
    assert DEFAULT_SPACE == {"scale": "depth", "scale-shift": "disparity"}  # MiDaS: scale-shift in inverse depth


@pytest.mark.parametrize("mode,space", [("scale", "depth"), ("scale", "disparity"), ("scale-shift", "disparity"),
                                        ("scale-shift", "depth")])
def test_known_scale_and_shift_recovered_exactly_from_20_points(mode, space):
    pred = predicted().astype(np.float64)
    s0, t0 = 1.37, (0.0 if mode == "scale" else (0.04 if space == "disparity" else 0.25))
    # the truth is the prediction off by s0 (and t0) in the fit's space: disparity t0 in 1/m, depth t0 in m
    truth = s0 * pred + t0 if space == "depth" else 1.0 / (s0 / pred + t0) if mode == "scale-shift" else pred / s0
    x, y = sample(20)
    aligned, fit = align_depth(pred, np.stack([x, y, truth[y, x]], 1), mode, space=space)
    assert fit.space == space and fit.n_points == 20
    assert fit.scale == pytest.approx(s0, rel=1e-12)  # scale in disparity: 1/d = s0 / pred
    assert fit.shift == pytest.approx(t0, abs=1e-12)
    np.testing.assert_allclose(aligned, truth, rtol=1e-6)  # float32 output


def test_least_squares_matches_numpy_lstsq():
    rng = np.random.default_rng(3)
    p, t = rng.uniform(1, 5, 30), rng.uniform(1, 5, 30)
    (s_ref, t_ref), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t, rcond=None)
    s, sh = fit_scale_shift(p, t)
    assert (s, sh) == pytest.approx((s_ref, t_ref), rel=1e-10)
    (s_only,), *_ = np.linalg.lstsq(p[:, None], t, rcond=None)
    assert fit_scale(p, t) == pytest.approx(s_only, rel=1e-12)


def outlier_points(seed: int, n: int = 20, fraction: float = 0.3):
    """n points of the truth (0.2% noise) with `fraction` of them replaced by gross outliers (x0.4 or x2.5)."""
    pred = predicted().astype(np.float64)
    s0, t0 = 1.6, 0.05
    truth = 1.0 / (s0 / pred + t0)
    rng = np.random.default_rng(seed)
    x, y = sample(n, seed)
    known = truth[y, x] * (1 + 0.002 * rng.standard_normal(n))
    bad = rng.choice(n, round(fraction * n), replace=False)
    known[bad] *= rng.choice([0.4, 2.5], len(bad))
    return pred, truth, np.stack([x, y, known], 1), (s0, t0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_fit_recovers_scale_shift_within_1_percent_with_30_percent_outliers(seed):
    pred, truth, pts, (s0, t0) = outlier_points(seed)
    aligned, fit = align_depth(pred, pts, "scale-shift", robust=True)
    assert fit.robust and fit.n_points == 20 and fit.n_inliers == 14
    assert abs(fit.scale / s0 - 1) < 0.01
    assert np.max(np.abs(aligned / truth - 1)) < 0.01  # the metres, everywhere in the image
    again, _ = align_depth(pred, pts, "scale-shift", robust=True)
    np.testing.assert_array_equal(again, aligned)  # fixed random_state: deterministic
    _, plain = align_depth(pred, pts, "scale-shift")  # least squares is pulled off by the outliers
    assert abs(plain.scale / s0 - 1) > 0.05


def test_robust_scale_only_with_outliers():
    pred = predicted().astype(np.float64)
    x, y = sample(20, 5)
    known = 2.0 * pred[y, x]
    known[:6] *= 3.0
    aligned, fit = align_depth(pred, np.stack([x, y, known], 1), "scale", robust=True)
    assert fit.scale == pytest.approx(2.0, rel=1e-9) and fit.n_inliers == 14
    np.testing.assert_allclose(aligned, 2.0 * pred, rtol=1e-6)


def test_csv_and_png_targets(tmp_path):
    pred = predicted().astype(np.float64)
    x, y = sample(20, 7)
    truth_mm = np.rint(2.5 * pred * 1000)
    # CSV, with a header, a comment and a blank line; another without a header
    rows = "\n".join(f"{a},{b},{truth_mm[b, a] / 1000:.3f}" for a, b in zip(x, y))
    (tmp_path / "pts.csv").write_text("x,y,metres\n# measured with a tape\n\n" + rows + "\n")
    (tmp_path / "bare.csv").write_text(rows)
    for name in ("pts.csv", "bare.csv"):
        pts = read_target(tmp_path / name)
        assert len(pts) == 20 and list(pts.x) == list(x) and list(pts.y) == list(y)
        _, fit = align_depth(pred, tmp_path / name, "scale")
        assert fit.scale == pytest.approx(2.5, rel=1e-3)
    # 16-bit PNG in millimetres, 0 = unknown, at the image's size
    mm = np.zeros((H, W), np.uint16)
    mm[y, x] = truth_mm[y, x]
    Image.fromarray(mm).save(tmp_path / "sparse.png")
    pts = read_target(tmp_path / "sparse.png")
    assert len(pts) == 20 and pts.size == (H, W)
    np.testing.assert_allclose(np.sort(pts.metres), np.sort(truth_mm[y, x] / 1000))
    aligned, fit = align_depth(pred, str(tmp_path / "sparse.png"), "scale-shift", space="depth")
    assert fit.n_points == 20 and fit.scale == pytest.approx(2.5, rel=1e-3)
    # the same map as an array in metres, and the points as JSON
    _, fit_map = align_depth(pred, mm / 1000.0, "scale-shift", space="depth")
    assert fit_map == fit
    js = "[" + ",".join(f'{{"x": {a}, "y": {b}, "metres": {truth_mm[b, a] / 1000}}}' for a, b in zip(x, y)) + "]"
    assert len(points_from_json(js)) == 20


def test_too_few_points_is_one_line(tmp_path):
    pred = predicted()
    with pytest.raises(AlignError) as e:
        align_depth(pred, np.array([[3, 4, 2.0]]), "scale-shift")
    assert "1 valid point" in one_line(e) and "needs at least 2" in one_line(e)
    (tmp_path / "two.csv").write_text("x,y,metres\n1,1,2.0\n2,2,0\n3,3,2.5\n")  # metres 0 = unknown: not counted
    with pytest.raises(AlignError) as e:
        align_depth(pred, tmp_path / "two.csv", "scale-shift", robust=True)
    assert "two.csv" in one_line(e) and "2 valid points" in one_line(e) and "needs at least 4" in one_line(e)
    mm = np.zeros((H, W), np.uint16)
    Image.fromarray(mm).save(tmp_path / "empty.png")
    with pytest.raises(AlignError) as e:
        align_depth(pred, tmp_path / "empty.png", "scale")
    assert "empty.png: 0 valid points" in one_line(e)


def test_points_outside_the_image_and_wrong_map_size_are_one_line(tmp_path):
    pred = predicted()
    (tmp_path / "far.csv").write_text("10,10,2.0\n64,3,2.0\n5,5,3.0\n")
    with pytest.raises(AlignError) as e:
        align_depth(pred, tmp_path / "far.csv")
    assert "far.csv" in one_line(e) and "(64, 3) is outside the 64x48 image" in one_line(e)
    with pytest.raises(AlignError) as e:
        align_depth(pred, np.array([[1, -1, 2.0], [2, 2, 2.0]]))
    assert "outside" in one_line(e)
    Image.fromarray(np.ones((H + 1, W), np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(AlignError) as e:
        align_depth(pred, tmp_path / "big.png")
    assert "big.png: is 64x49 pixels, the image is 64x48" in one_line(e)


@pytest.mark.parametrize("content,expect", [
    (b"1,2\n", "line 1: expected three numbers"),
    (b"x,y,metres\n1,2,3\nfoo,bar,baz\n", "line 3: expected three numbers"),
    (b"\xff\xfe\x00garbage", "neither a PNG nor UTF-8 text"),
    (b"", "empty file"),
])
def test_bad_target_files_are_one_line(tmp_path, content, expect):
    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(AlignError) as e:
        read_target(tmp_path / "t.csv")
    assert expect in one_line(e)


def test_bad_png_and_json_and_missing_file(tmp_path):
    Image.fromarray(np.ones((H, W), np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(AlignError) as e:
        read_target(tmp_path / "eight.png")
    assert "mode L" in one_line(e) and "16-bit" in one_line(e)
    with pytest.raises(AlignError) as e:
        read_target(tmp_path / "nope.csv")
    assert "no such file" in one_line(e)
    with pytest.raises(AlignError) as e:
        points_from_json('[[1, 2]]')
    assert "item 0" in one_line(e)
    with pytest.raises(AlignError) as e:
        points_from_json("{not json")
    assert "not JSON" in one_line(e)
    with pytest.raises(AlignError) as e:
        fit_alignment(np.ones(5), np.ones(5), "scale-shift")  # a flat prediction cannot separate shift from scale
    assert "same value" in one_line(e)
    with pytest.raises(AlignError) as e:
        align_depth(predicted(), np.array([[1, 1, 2.0]]), "affine")
    assert "unknown mode 'affine'" in one_line(e)


def test_apply_clamps_where_the_shift_crosses_zero():
    fit = fit_alignment(np.array([1.0, 2.0]), np.array([1.0, 1.0 / (0.5 - 0.1)]), "scale-shift")
    # disparity 1/target = s / pred + t: s = 1.2, t = -0.2: pred 6 m -> disparity 0, pred 10 m -> negative
    assert (fit.scale, fit.shift) == pytest.approx((1.2, -0.2))
    out = fit.apply(np.array([1.0, 10.0, np.nan]), 0.1, 50.0)
    assert out[0] == pytest.approx(1.0) and out[1] == 50.0 and np.isnan(out[2])


def test_parse_csv_rounds_to_pixels():
    pts = parse_csv("0.4,1.6,2\n", "p.csv")
    assert (pts.x[0], pts.y[0], pts.metres[0]) == (0, 2, 2.0)
