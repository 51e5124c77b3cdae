"""Depth evaluation metrics (metres) under the two named protocols of the literature.

``crop`` is always ``(top, bottom, left, right)`` INCLUSIVE, like ``eigen_test_crop.npy`` of
DenseDepth's nyu_test.zip: it keeps rows ``top..bottom`` and columns ``left..right``.

* ``densedepth`` (DenseDepth's ``compute_errors``): optional crop, no validity mask, every metric
  POOLED over all pixels of all images. gt must be > 0 everywhere (else ValueError).
* ``eigen`` (BTS / AdaBins / ZoeDepth): crop rows 45:471, cols 41:601 of a 480x640 image, i.e.
  inclusive ``(45, 470, 41, 600)``; for an HxW image the half-open bounds 45:471, 41:601 are scaled
  by H/480 and W/640 and rounded half up (240x320 -> rows 23:236, cols 21:301); ``crop`` overrides it. Valid pixels: ``min_depth < gt < max_depth``. As in those
  repositories, pred is clipped to [min_depth, max_depth]. Metrics per image, then averaged over
  the images that have at least one valid pixel.

Definitions (gt first): thresh = max(gt/pred, pred/gt), d_k = mean(thresh < 1.25**k),
abs_rel = mean(|gt-pred|/gt), sq_rel = mean((gt-pred)^2/gt), rmse = sqrt(mean((gt-pred)^2)),
rmse_log = sqrt(mean((ln gt - ln pred)^2)), log10 = mean(|log10 gt - log10 pred|),
silog = 100 * sqrt(mean(e^2) - mean(e)^2) with e = ln pred - ln gt (BTS reports it times 100).
pred <= 0 is clamped to PRED_EPS_M = 1e-6 m (only matters for ``densedepth``; ``eigen`` clips
to min_depth). Non-finite pred raises ValueError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROTOCOLS = ("densedepth", "eigen")
METRIC_KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
EIGEN_CROP_480x640 = (45, 470, 41, 600)  # inclusive; = rows 45:471, cols 41:601
PRED_EPS_M = 1e-6

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


def apply_crop(a: np.ndarray, crop: Crop | Any) -> np.ndarray:
    """Crop (..., H, W) with inclusive ``(top, bottom, left, right)``."""
    top, bottom, left, right = (int(v) for v in np.asarray(crop).reshape(-1))
    h, w = a.shape[-2:]
    if not (0 <= top <= bottom < h and 0 <= left <= right < w):
        raise ValueError(f"crop (top, bottom, left, right) = {(top, bottom, left, right)} is not an inclusive "
                         f"box inside an image of {h}x{w}")
    return a[..., top: bottom + 1, left: right + 1]


def compute_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All metrics over two flat arrays of positive depths (metres), pooled."""
    thresh = np.maximum(gt / pred, pred / gt)
    err_log = np.log(pred) - np.log(gt)
    out = {f"d{k}": float(np.mean(thresh < 1.25**k)) for k in (1, 2, 3)}
    out["abs_rel"] = float(np.mean(np.abs(gt - pred) / gt))
    out["sq_rel"] = float(np.mean((gt - pred) ** 2 / gt))
    out["rmse"] = float(np.sqrt(np.mean((gt - pred) ** 2)))
    out["rmse_log"] = float(np.sqrt(np.mean(err_log**2)))
    out["log10"] = float(np.mean(np.abs(np.log10(gt) - np.log10(pred))))
    out["silog"] = float(np.sqrt(max(np.mean(err_log**2) - np.mean(err_log) ** 2, 0.0)) * 100.0)
    return out


def depth_metrics(
    pred_m: Any,
    gt_m: Any,
    protocol: str,
    crop: Crop | Any | None = None,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
) -> dict[str, Any]:
    """Metrics of predictions vs ground truth, (N,H,W) metres (numpy or torch), under ``protocol``.

    Returns a JSON-serialisable dict: ``protocol``, the METRIC_KEYS as floats and ``n_images``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known protocols: {', '.join(PROTOCOLS)}")
    pred, gt = _check_pair(pred_m, gt_m)
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"pred_m contains {int(np.sum(~np.isfinite(pred)))} non-finite values")
    if protocol == "densedepth":
        if crop is not None:
            pred, gt = apply_crop(pred, crop), apply_crop(gt, crop)
        if not np.all(gt > 0):
            raise ValueError(f"protocol 'densedepth' has no validity mask but gt_m has "
                             f"{int(np.sum(~(gt > 0)))} pixels that are not > 0; use protocol 'eigen'")
        errors = compute_errors(np.maximum(pred, PRED_EPS_M).ravel(), gt.ravel())
        return {"protocol": protocol, **errors, "n_images": int(gt.shape[0])}
    box = eigen_crop(*gt.shape[-2:]) if crop is None else crop
    pred, gt = apply_crop(pred, box), apply_crop(gt, box)
    pred = np.clip(pred, min_depth, max_depth)
    per_image = []
    for p, g in zip(pred, gt):
        valid = (g > min_depth) & (g < max_depth)
        if valid.any():
            per_image.append(compute_errors(p[valid], g[valid]))
    if not per_image:
        raise ValueError(f"protocol 'eigen': no image has a gt pixel in ({min_depth}, {max_depth}) m")
    means = {k: float(np.mean([r[k] for r in per_image])) for k in METRIC_KEYS}
    return {"protocol": protocol, **means, "n_images": len(per_image)}


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


_HEADERS = {"d1": "δ1 ↑", "d2": "δ2 ↑", "d3": "δ3 ↑", "abs_rel": "AbsRel ↓", "sq_rel": "SqRel ↓",
            "rmse": "RMSE ↓", "rmse_log": "RMSElog ↓", "log10": "log10 ↓", "silog": "SILog ↓"}


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_metrics_table(records: list[dict[str, Any]]) -> str:
    """Markdown table of metric records: extra keys first (e.g. encoder), then protocol, n_images, metrics."""
    if not records:
        raise ValueError("format_metrics_table: no records given")
    fixed = ("protocol", "n_images", *METRIC_KEYS)
    extra = [k for k in dict.fromkeys(k for r in records for k in r) if k not in fixed]
    cols = [*extra, *fixed]
    lines = ["| " + " | ".join(_HEADERS.get(c, c) for c in cols) + " |",
             "|" + "|".join("---" if c in extra or c == "protocol" else "---:" for c in cols) + "|"]
    for r in records:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"
