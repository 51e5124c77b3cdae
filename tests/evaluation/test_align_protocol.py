"""evaluate --align median|scale|scale-shift: the per-image zero-shot protocols (MiDaS-style), each fit in its
stated space, against an independent numpy reference; the CLI flags and their one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_model

from transferdepth import cli
from transferdepth.data import open_dataset
from transferdepth.evaluation.evaluate import Predictions, align_prediction, describe, evaluate
from transferdepth.evaluation.metrics import depth_metrics, median_scale
from transferdepth.inference.checkpoint import save_checkpoint


class _Range:
    """Only the depth range: evaluate(predictions=...) never runs the model."""

    min_depth, max_depth = 0.1, 10.0


def _predictions(seed: int = 0) -> Predictions:
    """Two 32x40 images: gt 1-6 m with holes; pred affine in DISPARITY to gt (1/pred = a/gt + b) plus a
    little noise, so scale-shift in disparity fits almost exactly and the other fits do not."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:40]
    gts, preds, valids = [], [], []
    for i, (a, b) in enumerate([(0.7, 0.12), (1.3, -0.05)]):
        gt = (1.0 + 5.0 * (xx / 40 * 0.7 + yy / 32 * 0.3) + 0.2 * i).astype(np.float32)
        valid = rng.random(gt.shape) > 0.1
        gt[~valid] = 0.0
        disp = a / np.where(valid, gt, 3.0) + b
        preds.append((1.0 / disp * (1 + 0.001 * rng.standard_normal(gt.shape))).astype(np.float32))
        gts.append(gt)
        valids.append(valid)
    return Predictions(np.stack(preds), np.stack(gts), np.stack(valids), ["a", "b"])


def _reference(p: Predictions, space: str, shift: bool) -> np.ndarray:
    """Per image: np.linalg.lstsq of gt on pred in `space` over valid pixels, back to metres, clamped to 0.1-10."""
    out = []
    for pred, gt, valid in zip(p.pred.astype(np.float64), p.gt.astype(np.float64), p.valid):
        f = (lambda v: 1.0 / v) if space == "disparity" else (lambda v: v)
        a = f(pred[valid])[:, None]
        design = np.hstack([a, np.ones_like(a)]) if shift else a
        coef, *_ = np.linalg.lstsq(design, f(gt[valid]), rcond=None)
        fitted = coef[0] * f(pred) + (coef[1] if shift else 0.0)
        out.append(np.clip(f(fitted), 0.1, 10.0))
    return np.stack(out)


@pytest.mark.parametrize("mode,space,shift", [("scale", "depth", False), ("scale-shift", "disparity", True),
                                              ("scale-shift", "depth", True), ("scale", "disparity", False)])
def test_each_fit_matches_an_independent_least_squares(mode, space, shift):
    p = _predictions()
    rec = evaluate(_Range(), None, "eigen", crop="full", predictions=p, align=mode,
                   align_space=None if space == ("depth" if mode == "scale" else "disparity") else space)
    ref = depth_metrics(_reference(p, space, shift), p.gt, "eigen", crop=(0, 31, 0, 39))
    for k in ("abs_rel", "rmse", "d1", "log10"):
        assert rec[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
    assert rec["align"] == mode and rec["align_space"] == space and rec["median_scaled"] is False
    assert f"{mode} fitted per image in {space}" in describe(rec)


def test_scale_shift_in_disparity_is_the_default_and_undoes_an_affine_disparity_error():
    p = _predictions()
    ssi = evaluate(_Range(), None, "eigen", crop="full", predictions=p, align="scale-shift")
    depth_fit = evaluate(_Range(), None, "eigen", crop="full", predictions=p, align="scale-shift", align_space="depth")
    assert ssi["align_space"] == "disparity"
    assert ssi["abs_rel"] < 0.002 < depth_fit["abs_rel"]  # the error was affine in inverse depth
    raw = evaluate(_Range(), None, "eigen", crop="full", predictions=p)
    assert raw["align"] is None and raw["abs_rel"] > 0.05


def test_median_is_one_of_the_modes_and_median_scaling_its_old_name():
    p = _predictions()
    med = evaluate(_Range(), None, "eigen", crop="full", predictions=p, align="median")
    old = evaluate(_Range(), None, "eigen", crop="full", predictions=p, median_scaling=True)
    ref = depth_metrics(median_scale(p.pred, p.gt, p.valid), p.gt, "eigen", crop=(0, 31, 0, 39))
    for rec in (med, old):
        assert rec["abs_rel"] == pytest.approx(ref["abs_rel"], rel=1e-6)
        assert rec["median_scaled"] is True and rec["align"] == "median" and rec["align_space"] == "depth"
        assert "median-scaled per image" in describe(rec)
    with pytest.raises(ValueError, match="choose one"):
        evaluate(_Range(), None, "eigen", predictions=p, median_scaling=True, align="scale")
    with pytest.raises(ValueError, match="unknown mode 'affine'"):
        evaluate(_Range(), None, "eigen", predictions=p, align="affine")
    with pytest.raises(ValueError, match="unknown space"):
        evaluate(_Range(), None, "eigen", predictions=p, align="scale", align_space="log")


def test_an_image_with_too_few_valid_pixels_is_left_unaligned():
    pred = np.full((4, 5), 2.0, np.float32)
    valid = np.zeros((4, 5), bool)
    valid[0, 0] = True  # one pixel: scale fits, scale-shift needs two
    gt = np.where(valid, 4.0, 0.0).astype(np.float32)
    assert np.allclose(align_prediction(pred, gt, valid, "scale"), 4.0)
    np.testing.assert_array_equal(align_prediction(pred, gt, valid, "scale-shift"), pred)


def test_cli_align_flags(tmp_path, capsys):
    ckpt = save_checkpoint(tiny_model(), tmp_path / "ckpt")
    data = "procedural:n=2&seed=5&height=64&width=64"
    code = cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--crop", "full", "--align", "scale-shift",
                     "--device", "cpu", "--out", str(tmp_path / "ev")])
    assert code == 0
    assert "scale-shift fitted per image in disparity" in capsys.readouterr().out
    rec = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    from transferdepth.inference.checkpoint import load_checkpoint

    api = evaluate(load_checkpoint(ckpt), open_dataset(data), "eigen", crop="full", align="scale-shift", device="cpu")
    assert rec["align"] == "scale-shift" and rec["align_space"] == "disparity"
    assert rec["abs_rel"] == pytest.approx(api["abs_rel"], rel=1e-6)
    for flags, expect in [(["--align", "scale", "--median-scale"], "--median-scale is --align median"),
                          (["--align-space", "depth"], "--align-space: give --align"),
                          (["--align", "median", "--align-space", "disparity"], "ratio of medians")]:
        capsys.readouterr()
        assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", data, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert expect in err and len(err.splitlines()) == 1
