"""Depth evaluation metrics (metres) under the two named protocols of the literature, computed one image
at a time (`MetricAccumulator`) so that memory does not grow with the test set.

``crop`` is always ``(top, bottom, left, right)`` INCLUSIVE, like ``eigen_test_crop.npy`` of
DenseDepth's nyu_test.zip: it keeps rows ``top..bottom`` and columns ``left..right``.

* ``densedepth`` (DenseDepth's ``compute_errors``): optional crop, no validity mask, every metric
  POOLED over all pixels of all images (the accumulator keeps pixel sums). gt must be > 0 everywhere
  (else ValueError).
* ``eigen`` (BTS / AdaBins / ZoeDepth): crop rows 45:471, cols 41:601 of a 480x640 image, i.e.
  inclusive ``(45, 470, 41, 600)``; for an HxW image the half-open bounds 45:471, 41:601 are scaled
  by H/480 and W/640 and rounded half up (240x320 -> rows 23:236, cols 21:301; 120x160 -> rows 11:118,
  cols 10:150); ``crop`` overrides it. Valid pixels: ``min_depth < gt < max_depth`` (strict, as BTS:
  a gt of exactly max_depth is not counted). The protocol fixes the lower bound (EIGEN_MIN_GT_M = 1e-3,
  "gt is a measurement"); the upper bound follows the model's range (`evaluate` passes the model's
  ``max_depth``: 10 m for NYU models). As in those repositories, pred is clipped to [min_depth, max_depth].
  Metrics per image, then averaged over the images that have at least one valid pixel.
* ``kitti`` (BTS ``bts_eval.py`` / AdaBins ``evaluate.py`` with ``--garg_crop``): the Garg crop in
  FRACTIONS of each ground truth's own size, rows ``int(0.40810811 H):int(0.99189189 H)``, cols
  ``int(0.03594771 W):int(0.96405229 W)`` (``GARG_CROP_FRACTIONS``; int() truncates, as there), so the
  varying sizes of KITTI drives (375x1242, 370x1224, ...) each get their own box (375x1242 -> rows
  153:371, cols 44:1197). Valid: ``1e-3 < gt < 80`` m (``KITTI_MAX_GT_M``, the cap; strict), pred clipped to
  [1e-3, cap]; metrics per image, averaged as for ``eigen``. When the sample was cut out of a larger frame
  (``frame=(top, left, full_h, full_w)``, e.g. the kitti source's ``kb_crop``), the box is computed on the
  full frame and shifted into the cut: the pixels BTS scores after pasting its 352x1216 prediction back.
  ``crop`` overrides the box ("full" = the whole image). Every result names the fractions and the cap.

Definitions (gt first): thresh = max(gt/pred, pred/gt), d_k = mean(thresh < 1.25**k),
abs_rel = mean(|gt-pred|/gt), sq_rel = mean((gt-pred)^2/gt), rmse = sqrt(mean((gt-pred)^2)),
rmse_log = sqrt(mean((ln gt - ln pred)^2)), log10 = mean(|log10 gt - log10 pred|),
silog = 100 * sqrt(mean(e^2) - mean(e)^2) with e = ln pred - ln gt (BTS reports it times 100).
pred <= 0 is clamped to PRED_EPS_M = 1e-6 m (only matters for ``densedepth``; ``eigen`` clips
to min_depth). Non-finite pred raises ValueError.

Two differences from DenseDepth's code, on purpose:

* DenseDepth calls ``compute_errors(predictions, testSetDepths)`` on a function declared
  ``compute_errors(gt, pred)``: its arguments are swapped, so its abs_rel divides by the PREDICTION
  (0.1274 instead of 0.1234 for the released nyu.h5). Here abs_rel (and sq_rel) divide by the ground truth,
  as the metric is defined; the other metrics are symmetric and unaffected.
* DenseDepth's RMSE was a mean of per-image RMSEs until August 2019 (commit fdcef58, the paper's 0.465) and
  is pooled since (0.549 for the same model). ``rmse`` is the protocol's own (pooled for ``densedepth``,
  per image for ``eigen``); ``rmse_per_image`` (mean over images of each image's RMSE) is the paper's
  variant, in every record. ``RMSE_POOLING`` names which one ``rmse`` is; every table says it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROTOCOLS = ("densedepth", "eigen", "kitti")
# The one list of metric names (tables, records, the comparison study).
METRIC_KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "rmse_per_image")
# What `rmse` averages under each protocol (named in every table).
RMSE_POOLING = {"densedepth": "pooled over all pixels", "eigen": "mean of per-image RMSE",
                "kitti": "mean of per-image RMSE"}
EIGEN_CROP_480x640 = (45, 470, 41, 600)  # inclusive; = rows 45:471, cols 41:601
EIGEN_MIN_GT_M = 1e-3  # BTS's min_depth_eval: the protocol's lower bound of valid ground truth
PRED_EPS_M = 1e-6
# Garg et al. (ECCV 2016) crop as BTS / AdaBins write it: (top, bottom, left, right) fractions of the gt size.
GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
KITTI_MAX_GT_M = 80.0  # the kitti protocol's cap (BTS max_depth_eval for KITTI)

Crop = tuple[int, int, int, int]


def _to_numpy(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (N,H,W) or (H,W) depth in metres, got shape {a.shape}")
    return a


def _check_pair(pred_m: Any, gt_m: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _to_numpy(pred_m, "pred_m"), _to_numpy(gt_m, "gt_m")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_m shape {pred.shape} does not match gt_m shape {gt.shape}")
    return pred, gt


def eigen_crop(height: int, width: int) -> Crop:
    """Inclusive Eigen crop for an image of ``height x width`` (scaled from 480x640)."""
    top, bottom, left, right = EIGEN_CROP_480x640
    sy, sx = height / 480.0, width / 640.0

    def scale(v: float) -> int:  # round half up (Python's round() would round 22.5 to 22)
        return int(np.floor(v + 0.5))

    return scale(top * sy), scale((bottom + 1) * sy) - 1, scale(left * sx), scale((right + 1) * sx) - 1


def garg_crop(height: int, width: int, frame: Any = None) -> Crop:
    """Inclusive Garg crop of an image ``height x width``; ``frame=(top, left, full_h, full_w)`` places the
    image inside a larger frame: the box is computed on the frame and shifted into (and clipped to) the image."""
    top0, left0, fh, fw = (0, 0, height, width) if frame is None else (int(v) for v in frame)
    t, b, lf, r = GARG_CROP_FRACTIONS
    top, bottom = max(int(t * fh) - top0, 0), min(int(b * fh) - top0, height)  # half-open
    left, right = max(int(lf * fw) - left0, 0), min(int(r * fw) - left0, width)
    if top >= bottom or left >= right:
        raise ValueError(f"the Garg crop of the {fw}x{fh} frame misses the {width}x{height} image at "
                         f"(top {top0}, left {left0})")
    return top, bottom - 1, left, right - 1


def apply_crop(a: np.ndarray, crop: Crop | Any) -> np.ndarray:
    """Crop (..., H, W) with inclusive ``(top, bottom, left, right)``."""
    top, bottom, left, right = (int(v) for v in np.asarray(crop).reshape(-1))
    h, w = a.shape[-2:]
    if not (0 <= top <= bottom < h and 0 <= left <= right < w):
        raise ValueError(f"crop (top, bottom, left, right) = {(top, bottom, left, right)} is not an inclusive "
                         f"box inside an image of {h}x{w}")
    return a[..., top: bottom + 1, left: right + 1]


_SUM_KEYS = ("n", "d1", "d2", "d3", "abs_rel", "sq_rel", "sq_err", "log_sq", "log", "log10")


def _sums(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pixel sums of two flat float64 arrays of positive depths (metres); `n` is the pixel count."""
    thresh = np.maximum(gt / pred, pred / gt)
    err_log = np.log(pred) - np.log(gt)
    diff = gt - pred
    out = {"n": float(gt.size)}
    out.update({f"d{k}": float(np.count_nonzero(thresh < 1.25**k)) for k in (1, 2, 3)})
    out["abs_rel"] = float(np.sum(np.abs(diff) / gt))
    out["sq_rel"] = float(np.sum(diff**2 / gt))
    out["sq_err"] = float(np.sum(diff**2))
    out["log_sq"] = float(np.sum(err_log**2))
    out["log"] = float(np.sum(err_log))
    out["log10"] = float(np.sum(np.abs(np.log10(gt) - np.log10(pred))))
    return out


def _from_sums(s: dict[str, float]) -> dict[str, float]:
    n = s["n"]
    out = {f"d{k}": s[f"d{k}"] / n for k in (1, 2, 3)}
    out["abs_rel"] = s["abs_rel"] / n
    out["sq_rel"] = s["sq_rel"] / n
    out["rmse"] = float(np.sqrt(s["sq_err"] / n))
    out["rmse_log"] = float(np.sqrt(s["log_sq"] / n))
    out["log10"] = s["log10"] / n
    out["silog"] = float(np.sqrt(max(s["log_sq"] / n - (s["log"] / n) ** 2, 0.0)) * 100.0)
    return out


def compute_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All metrics over two flat arrays of positive depths (metres), pooled. Ground truth is the divisor."""
    return _from_sums(_sums(np.asarray(pred, np.float64).ravel(), np.asarray(gt, np.float64).ravel()))


class MetricAccumulator:
    """Metrics of a test set fed one image (or a few) at a time; memory does not grow with the set.

    ``add(pred_m, gt_m)`` takes (H,W) or (N,H,W) metres (numpy or torch); ``result()`` returns the record
    that `depth_metrics` returns for all the images at once (same definitions, see the module docstring).
    ``densedepth`` keeps float64 pixel sums (pooled) and one RMSE per image; ``eigen`` keeps one metric
    row per image.
    """

    def __init__(self, protocol: str, crop: Crop | Any | None = None, min_depth: float = EIGEN_MIN_GT_M,
                 max_depth: float | None = None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; known protocols: {', '.join(PROTOCOLS)}")
        if max_depth is None:  # the protocol's own cap: 80 m for kitti, NYU's 10 m otherwise
            max_depth = KITTI_MAX_GT_M if protocol == "kitti" else 10.0
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"metric depth range needs 0 <= min_depth < max_depth (metres), got "
                             f"{min_depth} and {max_depth}")
        self.protocol, self.crop = protocol, crop
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.n_seen = 0
        self._sums = dict.fromkeys(_SUM_KEYS, 0.0)
        self._rows: list[dict[str, float]] = []  # eigen: metrics per image
        self._rmse_img: list[float] = []  # densedepth: RMSE per image
        self._frame: Any = None

    def add(self, pred_m: Any, gt_m: Any, frame: Any = None) -> None:
        """Add (H,W) or (N,H,W) predictions and ground truth in metres.

        ``frame``: ``(top, left, full_h, full_w)`` of these images inside a larger frame (``kitti`` only)."""
        pred, gt = _check_pair(pred_m, gt_m)
        self._frame = frame
        if not np.all(np.isfinite(pred)):
            raise ValueError(f"pred_m contains {int(np.sum(~np.isfinite(pred)))} non-finite values "
                             f"(image {self.n_seen} onwards)")
        for p, g in zip(pred, gt):
            self._add_one(p, g)
            self.n_seen += 1

    def _add_one(self, p: np.ndarray, g: np.ndarray) -> None:
        if self.protocol == "densedepth":
            if self.crop is not None:
                p, g = apply_crop(p, self.crop), apply_crop(g, self.crop)
            if not np.all(g > 0):
                raise ValueError(f"protocol 'densedepth' has no validity mask but gt_m of image {self.n_seen} "
                                 f"has {int(np.sum(~(g > 0)))} pixels that are not > 0; use protocol 'eigen'")
            s = _sums(np.maximum(p, PRED_EPS_M).ravel(), g.ravel())
            for k, v in s.items():
                self._sums[k] += v
            self._rmse_img.append(float(np.sqrt(s["sq_err"] / s["n"])))
            return
        if self.protocol == "kitti":
            box = garg_crop(*g.shape, self._frame) if self.crop is None else self.crop
            if isinstance(box, str):  # "full"
                box = (0, g.shape[0] - 1, 0, g.shape[1] - 1)
        else:
            box = eigen_crop(*g.shape) if self.crop is None else self.crop
        p, g = apply_crop(p, box), apply_crop(g, box)
        valid = (g > self.min_depth) & (g < self.max_depth)
        if valid.any():
            self._rows.append(compute_errors(np.clip(p[valid], self.min_depth, self.max_depth), g[valid]))

    def result(self) -> dict[str, Any]:
        """``protocol``, the METRIC_KEYS as floats and ``n_images`` (JSON-serialisable)."""
        if self.protocol == "densedepth":
            if self.n_seen == 0:
                raise ValueError("protocol 'densedepth': no image was evaluated")
            errors = _from_sums(self._sums)
            errors["rmse_per_image"] = float(np.mean(self._rmse_img))
            return {"protocol": self.protocol, **{k: errors[k] for k in METRIC_KEYS}, "n_images": self.n_seen}
        if not self._rows:
            raise ValueError(f"protocol '{self.protocol}': no image has a gt pixel in ({self.min_depth}, {self.max_depth}) m")
        means = {k: float(np.mean([r[k] for r in self._rows])) for k in METRIC_KEYS if k != "rmse_per_image"}
        means["rmse_per_image"] = means["rmse"]  # eigen's rmse is already per image
        out = {"protocol": self.protocol, **{k: means[k] for k in METRIC_KEYS}, "n_images": len(self._rows)}
        if self.protocol == "kitti":
            out["crop_fractions"] = list(GARG_CROP_FRACTIONS) if self.crop is None else None
            out["cap_m"] = self.max_depth
        return out


def depth_metrics(
    pred_m: Any,
    gt_m: Any,
    protocol: str,
    crop: Crop | Any | None = None,
    min_depth: float = EIGEN_MIN_GT_M,
    max_depth: float | None = None,
) -> dict[str, Any]:
    """Metrics of predictions vs ground truth, (N,H,W) metres (numpy or torch), under ``protocol``.

    ``min_depth``/``max_depth``: the eigen/kitti mask and clip (see the module docstring; max_depth None:
    80 m for kitti, 10 m otherwise). Returns a
    JSON-serialisable dict: ``protocol``, the METRIC_KEYS as floats and ``n_images``.
    """
    acc = MetricAccumulator(protocol, crop, min_depth, max_depth)
    acc.add(pred_m, gt_m)
    return acc.result()


def median_scale(pred_m: Any, gt_m: Any, valid: Any) -> np.ndarray:
    """(N,H,W) pred scaled per image by median(gt)/median(pred) over that image's valid pixels.

    Images without a valid pixel are returned unscaled. Returns a float64 numpy array (metres).
    """
    pred, gt = _check_pair(pred_m, gt_m)
    mask = _to_numpy(valid, "valid").astype(bool)
    if mask.shape != gt.shape:
        raise ValueError(f"valid shape {mask.shape} does not match gt_m shape {gt.shape}")
    out = pred.copy()
    for i in range(pred.shape[0]):
        if mask[i].any():
            med_pred = np.median(pred[i][mask[i]])
            if med_pred <= 0:
                raise ValueError(f"median_scale: image {i} has median prediction {med_pred} <= 0 m")
            out[i] *= np.median(gt[i][mask[i]]) / med_pred
    return out
