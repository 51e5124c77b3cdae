import math

import numpy as np
import pytest
import torch

from transferdepth.evaluation.metrics import (
    METRIC_KEYS,
    PROTOCOLS,
    MetricAccumulator,
    depth_metrics,
    eigen_crop,
    median_scale,
)
from transferdepth.evaluation.report import html_table, markdown_table

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
    assert m["rmse_per_image"] == pytest.approx(m["rmse"])  # one image
    assert set(m) == {"protocol", "d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10",
                      "silog", "rmse_per_image", "n_images"}
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
    assert PROTOCOLS == ("densedepth", "eigen", "kitti")  # issue 10 added kitti
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


def test_one_table_formatter_names_the_rmse():
    gt = np.array([[[1.0, 1.0, 2.0, 4.0]]])
    rec = depth_metrics(gt * 1.1, gt, "densedepth")
    rec2 = {"encoder": "resnet18", **depth_metrics(gt * 1.1, gt, "eigen", crop=FULL_1x4)}
    table = markdown_table([rec, rec2])
    lines = table.strip().split("\n")
    assert len(lines) == 6
    assert lines[0] == ("| encoder | protocol | n_images | δ1 ↑ | δ2 ↑ | δ3 ↑ | AbsRel ↓ | SqRel ↓ | RMSE ↓ | "
                        "RMSElog ↓ | log10 ↓ | SILog ↓ | RMSE/img ↓ |")
    # rmse of 10% errors on 1, 1, 2, 4 m: sqrt((0.01 + 0.01 + 0.04 + 0.16) / 4) = 0.2345
    assert lines[2] == ("| - | densedepth | 1 | 1.000 | 1.000 | 1.000 | 0.100 | 0.020 | 0.235 | 0.095 | 0.041 | "
                        "0.000 | 0.235 |")
    assert lines[3].startswith("| resnet18 | eigen | 1 | 1.000 |")
    assert lines[5] == ("RMSE = densedepth: pooled over all pixels; eigen: mean of per-image RMSE. RMSE/img = mean "
                        "of per-image RMSE (DenseDepth before fdcef58, the paper's).")
    assert "<caption>RMSE = densedepth: pooled over all pixels; eigen" in html_table([rec, rec2])
    assert "<th>AbsRel ↓</th>" in html_table([rec], ["abs_rel"])
    with pytest.raises(ValueError):
        markdown_table([])


def test_eigen_crop_rounding_at_120x160():
    # half-open 45:471 x 41:601 scaled by 1/4: 11.25 -> 11, 117.75 -> 118 (exclusive) => rows 11..117;
    # scaling the inclusive 470 instead (117.5 -> 118) would keep row 118.
    assert eigen_crop(120, 160) == (11, 117, 10, 149)
    gt = np.ones((1, 120, 160))
    pred = np.ones((1, 120, 160))
    pred[0, [10, 118], :] = 2.0
    pred[0, :, [9, 150]] = 2.0
    assert depth_metrics(pred, gt, "eigen")["abs_rel"] == 0.0
    pred[0, 117, 149] = 2.0  # the last pixel inside
    assert depth_metrics(pred, gt, "eigen")["abs_rel"] == pytest.approx(1 / (107 * 140))


def test_eigen_mask_is_strict_at_max_depth():
    # NYU train depth reaches exactly 10.0 m: BTS's mask gt < max_depth leaves it out
    gt = np.array([[[2.0, 10.0, 4.0, 10.0]]])
    pred = np.array([[[2.0, 5.0, 4.0, 5.0]]])
    assert depth_metrics(pred, gt, "eigen", crop=FULL_1x4)["abs_rel"] == 0.0
    assert depth_metrics(pred, gt, "eigen", crop=FULL_1x4, max_depth=10.5)["abs_rel"] == pytest.approx(0.25)
    assert depth_metrics(pred, gt, "eigen", crop=FULL_1x4, min_depth=2.0)["abs_rel"] == 0.0  # 4 m only
    assert depth_metrics(pred, gt, "eigen", crop=FULL_1x4, min_depth=2.0)["n_images"] == 1


def test_rmse_pooled_and_per_image():
    # image A: errors 1 m on 4 pixels; image B: 0 and 3 m on 2 + 2 pixels (crop keeps everything)
    gt = np.array([[[2.0, 2.0, 2.0, 2.0]], [[5.0, 5.0, 5.0, 5.0]]])
    pred = np.array([[[3.0, 3.0, 3.0, 3.0]], [[5.0, 5.0, 8.0, 8.0]]])
    dd = depth_metrics(pred, gt, "densedepth")
    assert dd["rmse"] == pytest.approx(math.sqrt((4 * 1 + 2 * 9) / 8))  # pooled: sqrt(2.75)
    assert dd["rmse_per_image"] == pytest.approx((1.0 + math.sqrt(4.5)) / 2)  # the paper's
    ei = depth_metrics(pred, gt, "eigen", crop=FULL_1x4)
    assert ei["rmse"] == ei["rmse_per_image"] == pytest.approx((1.0 + math.sqrt(4.5)) / 2)
    # abs_rel divides by the ground truth (DenseDepth's swapped call divides by the prediction: 0.375 / 2...)
    assert dd["abs_rel"] == pytest.approx((4 * 0.5 + 2 * 0.6) / 8)


def test_accumulator_one_image_at_a_time_equals_all_at_once_and_hand_pooling():
    rng = np.random.default_rng(4)
    gt = rng.uniform(0.5, 9.0, (5, 12, 16))
    gt[1, :3] = 12.0  # beyond eigen's mask
    pred = gt * rng.uniform(0.7, 1.4, gt.shape)
    crop = (1, 10, 2, 13)
    for protocol in PROTOCOLS:
        acc = MetricAccumulator(protocol, crop)
        for i in range(5):
            acc.add(pred[i], gt[i])
        res, ref = acc.result(), depth_metrics(pred, gt, protocol, crop=crop)
        assert res == ref
    # densedepth pools the cropped pixels of all images: numpy by hand
    p, g = pred[:, 1:11, 2:14].ravel(), gt[:, 1:11, 2:14].ravel()
    dd = depth_metrics(pred, gt, "densedepth", crop=crop)
    assert dd["abs_rel"] == pytest.approx(np.mean(np.abs(g - p) / g), rel=1e-12)
    assert dd["rmse"] == pytest.approx(np.sqrt(np.mean((g - p) ** 2)), rel=1e-12)
    assert dd["d1"] == pytest.approx(np.mean(np.maximum(g / p, p / g) < 1.25), rel=1e-12)
    assert dd["silog"] == pytest.approx(100 * np.std(np.log(p) - np.log(g)), rel=1e-9)
    assert dd["n_images"] == 5
    assert tuple(k for k in dd if k in METRIC_KEYS) == METRIC_KEYS


def test_kitti_garg_crop_truncates_like_bts_on_a_374_row_map():
    """BTS / AdaBins: rows int(0.40810811 H):int(0.99189189 H). At H = 374 the top is 152.63: int() gives row 152
    (rounding would give 153); a pixel error on row 152 is inside the crop, one on row 151 is not."""
    from transferdepth.evaluation.metrics import depth_metrics, garg_crop

    h, w = 374, 1241
    assert garg_crop(h, w) == (int(0.40810811 * h), int(0.99189189 * h) - 1,
                               int(0.03594771 * w), int(0.96405229 * w) - 1) == (152, 369, 44, 1195)
    gt = np.full((h, w), 10.0)
    for row, inside in ((152, True), (151, False), (369, True), (370, False)):
        pred = gt.copy()
        pred[row, 600] = 20.0
        m = depth_metrics(pred, gt, "kitti")
        assert (m["abs_rel"] > 0) == inside, row
