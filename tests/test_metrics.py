import math

import numpy as np
import pytest
import torch

from transferdepth.metrics import (
    PROTOCOLS,
    depth_metrics,
    eigen_crop,
    format_metrics_table,
    median_scale,
)

FULL_1x4 = (0, 0, 0, 3)  # inclusive crop keeping all of a 1x4 image


def test_pred_twice_gt_every_metric():
    gt = np.array([[[1.0, 2.0, 4.0, 5.0]]])
    m = depth_metrics(2 * gt, gt, "densedepth")
    # thresh = 2 everywhere: not < 1.25, 1.5625 or 1.953125
    assert (m["d1"], m["d2"], m["d3"]) == (0.0, 0.0, 0.0)
    assert m["abs_rel"] == pytest.approx(1.0)
    assert m["sq_rel"] == pytest.approx((1 + 2 + 4 + 5) / 4)  # (gt-2gt)^2/gt = gt
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 4 + 16 + 25) / 4))
    assert m["rmse_log"] == pytest.approx(math.log(2))
    assert m["log10"] == pytest.approx(math.log10(2))
    assert m["silog"] == pytest.approx(0.0, abs=1e-6)  # a global scale is invariant
    assert m["protocol"] == "densedepth" and m["n_images"] == 1
    assert set(m) == {"protocol", "d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10",
                      "silog", "n_images"}
    # the same numbers under eigen (all gt within (1e-3, 10), one image, no crop effect)
    e = depth_metrics(2 * gt, gt, "eigen", crop=FULL_1x4)
    assert all(e[k] == pytest.approx(m[k], abs=1e-12) for k in ("d1", "abs_rel", "rmse", "log10"))


def test_mixed_case_every_metric():
    gt = np.array([[[1.0, 1.0, 2.0, 4.0]]])
    pred = np.array([[[1.0, 1.2, 3.0, 2.0]]])
    m = depth_metrics(pred, gt, "densedepth")
    # thresh = [1, 1.2, 1.5, 2]
    assert m["d1"] == 0.5 and m["d2"] == 0.75 and m["d3"] == 0.75
    assert m["abs_rel"] == pytest.approx((0 + 0.2 + 0.5 + 0.5) / 4)
    assert m["sq_rel"] == pytest.approx((0 + 0.04 + 0.5 + 1.0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 0.04 + 1 + 4) / 4))
    e = [0.0, math.log(1.2), math.log(1.5), -math.log(2)]  # ln pred - ln gt
    mean_sq, mean = sum(v * v for v in e) / 4, sum(e) / 4
    assert m["rmse_log"] == pytest.approx(math.sqrt(mean_sq))
    assert m["log10"] == pytest.approx(sum(abs(v) for v in e) / 4 / math.log(10))
    assert m["silog"] == pytest.approx(100 * math.sqrt(mean_sq - mean**2))
    # gt first in the ratio: swapping pred and gt changes abs_rel (the public port's bug)
    swapped = depth_metrics(gt, pred, "densedepth")
    assert swapped["abs_rel"] == pytest.approx((0 + 0.2 / 1.2 + 1 / 3 + 1.0) / 4)


def test_protocols_differ_pooling_and_masking():
    gt = np.array([[[1.0, 1.0, 1.0, 1.0]], [[1.0, 20.0, 20.0, 20.0]]])
    pred = np.array([[[2.0, 2.0, 2.0, 2.0]], [[1.0, 10.0, 10.0, 10.0]]])
    dd = depth_metrics(pred, gt, "densedepth")
    # pooled over 8 pixels, 20 m pixels count: abs_rel (4*1 + 0 + 3*0.5)/8, d1 1/8, rmse sqrt((4+300)/8)
    assert dd["abs_rel"] == pytest.approx(5.5 / 8)
    assert dd["d1"] == pytest.approx(1 / 8)
    assert dd["rmse"] == pytest.approx(math.sqrt(38.0))
    assert dd["n_images"] == 2
    ei = depth_metrics(pred, gt, "eigen", crop=FULL_1x4)
    # per image: A abs_rel 1, d1 0, rmse 1; B only its 1 m pixel is valid (< 10 m): 0, 1, 0. Then mean.
    assert ei["abs_rel"] == pytest.approx(0.5)
    assert ei["d1"] == pytest.approx(0.5)
    assert ei["rmse"] == pytest.approx(0.5)
    assert ei["n_images"] == 2 and ei["protocol"] == "eigen"


def test_eigen_masks_zero_gt_densedepth_refuses_it():
    gt = np.array([[[0.0, 2.0, 2.0, 0.0]]])
    pred = np.array([[[5.0, 2.0, 3.0, 5.0]]])
    assert depth_metrics(pred, gt, "eigen", crop=FULL_1x4)["abs_rel"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no validity mask"):
        depth_metrics(pred, gt, "densedepth")
    with pytest.raises(ValueError, match="no image has a gt pixel"):
        depth_metrics(pred, np.zeros_like(gt), "eigen", crop=FULL_1x4)


def test_densedepth_crop_is_inclusive():
    gt = np.ones((1, 3, 3))
    pred = np.ones((1, 3, 3))
    pred[0, 2, :] = 3.0  # error only in the bottom row
    assert depth_metrics(pred, gt, "densedepth", crop=np.array([1, 2, 0, 2]))["abs_rel"] == pytest.approx(1.0)
    assert depth_metrics(pred, gt, "densedepth", crop=[0, 1, 0, 2])["abs_rel"] == 0.0
    assert depth_metrics(pred, gt, "densedepth")["abs_rel"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="inclusive box"):
        depth_metrics(pred, gt, "densedepth", crop=[1, 3, 0, 2])


def test_eigen_default_crop_480x640():
    assert eigen_crop(480, 640) == (45, 470, 41, 600)
    assert eigen_crop(240, 320) == (23, 235, 21, 300)
    gt = np.ones((1, 480, 640))
    pred = np.ones((1, 480, 640))
    pred[0, [44, 471], :] = 2.0  # just outside rows 45:471
    pred[0, :, [40, 601]] = 2.0  # just outside cols 41:601
    assert depth_metrics(pred, gt, "eigen")["abs_rel"] == 0.0
    pred[0, 470, 600] = 2.0  # last included pixel
    assert depth_metrics(pred, gt, "eigen")["abs_rel"] == pytest.approx(1 / (426 * 560))


def test_pred_guards():
    gt = np.ones((1, 1, 2))
    dd = depth_metrics(np.array([[[0.0, -1.0]]]), gt, "densedepth")  # clamped to 1e-6 m
    assert dd["abs_rel"] == pytest.approx(1 - 1e-6) and dd["d3"] == 0.0
    ei = depth_metrics(np.array([[[0.0, 50.0]]]), gt, "eigen", crop=(0, 0, 0, 1))  # clipped to [1e-3, 10]
    assert ei["abs_rel"] == pytest.approx(((1 - 1e-3) + 9) / 2)
    with pytest.raises(ValueError, match="non-finite"):
        depth_metrics(np.array([[[np.nan, 1.0]]]), gt, "densedepth")


def test_errors_and_torch_input():
    gt = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(2, 3, 4\)"):
        depth_metrics(np.ones((2, 3, 5)), gt, "densedepth")
    with pytest.raises(ValueError, match="densedepth, eigen"):
        depth_metrics(gt, gt, "nyu")
    assert PROTOCOLS == ("densedepth", "eigen")
    pred = np.linspace(0.5, 3, 24).reshape(2, 3, 4)
    assert depth_metrics(torch.from_numpy(pred).float(), torch.ones(2, 3, 4), "densedepth")["rmse"] == \
        pytest.approx(depth_metrics(pred, gt, "densedepth")["rmse"], rel=1e-6)


def test_median_scale_per_image():
    gt = np.array([[[1.0, 2.0, 3.0, 9.0]], [[2.0, 2.0, 2.0, 2.0]]])
    pred = np.array([[[2.0, 4.0, 6.0, 100.0]], [[1.0, 1.0, 1.0, 1.0]]])
    valid = np.array([[[True, True, True, False]], [[True, True, True, True]]])
    out = median_scale(pred, gt, valid)
    np.testing.assert_allclose(out[0], [[1.0, 2.0, 3.0, 50.0]])  # scale 2/4
    np.testing.assert_allclose(out[1], [[2.0, 2.0, 2.0, 2.0]])  # scale 2/1
    untouched = median_scale(pred, gt, np.zeros_like(valid))
    np.testing.assert_array_equal(untouched, pred)


def test_format_metrics_table():
    gt = np.array([[[1.0, 1.0, 2.0, 4.0]]])
    rec = depth_metrics(gt * 1.1, gt, "densedepth")
    rec2 = {"encoder": "resnet18", **depth_metrics(gt * 1.1, gt, "eigen", crop=FULL_1x4)}
    table = format_metrics_table([rec, rec2])
    lines = table.strip().split("\n")
    assert len(lines) == 4
    assert lines[0].startswith("| encoder | protocol | n_images | δ1 ↑ |")
    assert lines[2].startswith("| - | densedepth | 1 | 1.000 | 1.000 | 1.000 | 0.100 |")
    assert lines[3].startswith("| resnet18 | eigen | 1 |")
    with pytest.raises(ValueError):
        format_metrics_table([])
