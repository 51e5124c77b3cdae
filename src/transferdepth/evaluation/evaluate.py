"""Evaluation: run a model over a test set under a named protocol and return a metrics record.

Prediction is `transferdepth.inference.core.infer` (the one inference path): the image and its mirror are
predicted and averaged in metres, resized (bilinear) to the ground truth's size and clamped to the model's
range (or [min_depth, max_depth]). `size` feeds the network a resized image (for models trained at another
resolution).

Evaluation STREAMS: each batch is predicted, its images are added to a `metrics.MetricAccumulator` (pooled
pixel sums for `densedepth`, one row per image for `eigen`) and dropped, so memory does not grow with the
test set (`benchmarks/evaluation/eval_memory.py`). `predict_dataset` (all predictions in RAM, for figures) and
`evaluate(..., predictions=)` give the same numbers.

Protocols (`transferdepth.evaluation.metrics`): `densedepth` (the dataset's crop, e.g. nyu_test.zip's, inclusive; pooled
over all pixels, no validity mask) and `eigen` (crop rows 45:471, cols 41:601 at 480x640; 1e-3 < gt <
max_depth, the model's; per-image means) and `kitti` (Garg crop in fractions of each gt size, 1e-3 < gt <
80 m unless max_depth is given; per-image means; sizes may vary between images). `crop="full"` evaluates
the whole frame (for data that is not NYU).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from transferdepth.evaluation.metrics import (
    EIGEN_MIN_GT_M,
    GARG_CROP_FRACTIONS,
    KITTI_MAX_GT_M,
    PROTOCOLS,
    RMSE_POOLING,
    MetricAccumulator,
    median_scale,
)
from transferdepth.geometry.align import ALIGN_MODES, AlignError, check_mode, fit_alignment, needed_points
from transferdepth.inference.core import infer, rgb_to_tensor
from transferdepth.models import DepthNet
from transferdepth.recipe import check_depth_range
from transferdepth.utils import progress as progress_bar
from transferdepth.utils import resolve_device


@dataclass
class Predictions:
    """Everything evaluated, at the ground truth's resolution: (N,H,W) float32 metres and bool masks."""

    pred: np.ndarray
    gt: np.ndarray
    valid: np.ndarray
    names: list[str]


def _check_options(batch_size: int, limit: int | None) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be None or an integer >= 1 (images), got {limit!r}")


@torch.no_grad()
def iter_predictions(model: DepthNet, dataset: Dataset, *, flip: bool = True, min_depth: float | None = None,
                     max_depth: float | None = None, size: tuple[int, int] | None = None, batch_size: int = 4,
                     device: str | torch.device | None = None, limit: int | None = None,
                     progress: bool = False) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Yield ``(pred, sample)`` per image: pred (H,W) float32 metres at the sample's depth resolution.

    Only one batch is held at a time. Sizes may differ between samples (each run of equal sizes inside a
    batch is one forward pass).
    """
    _check_options(batch_size, limit)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model = model.to(device).eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("evaluation dataset is empty")
    starts: Any = range(0, n, batch_size)
    if progress:  # a bar on a terminal, plain lines in a log (utils.progress; a command's --progress)
        starts = progress_bar(starts, desc="evaluate", unit="batch")
    for start in starts:
        samples = [dataset[i] for i in range(start, min(start + batch_size, n))]
        # sizes may vary (KITTI drives: 375x1242, 370x1224, ...): one forward pass per run of equal sizes
        j = 0
        while j < len(samples):
            h, w = samples[j]["depth"].shape
            k = j + 1
            while k < len(samples) and samples[k]["depth"].shape == (h, w):
                k += 1
            rgb = rgb_to_tensor([s["rgb"] for s in samples[j:k]], device)
            out = infer(model, rgb, flip=flip, input_size=size, output_size=(h, w), min_depth=min_depth,
                        max_depth=max_depth)[:, 0].float().cpu().numpy()
            del rgb
            for i, s in enumerate(samples[j:k]):
                yield out[i], s
            j = k


def predict_dataset(model: DepthNet, dataset: Dataset, *, flip: bool = True, min_depth: float | None = None,
                    max_depth: float | None = None, size: tuple[int, int] | None = None, batch_size: int = 4,
                    device: str | torch.device | None = None, limit: int | None = None,
                    progress: bool = False) -> Predictions:
    """Predict every sample of `dataset` (the sample contract of `transferdepth.data`) in metres, all in RAM
    (for figures; `evaluate` streams instead)."""
    preds, gts, valids, names = [], [], [], []
    for pred, s in iter_predictions(model, dataset, flip=flip, min_depth=min_depth, max_depth=max_depth,
                                    size=size, batch_size=batch_size, device=device, limit=limit,
                                    progress=progress):
        preds.append(pred)
        gts.append(np.asarray(s["depth"], np.float32))
        valids.append(np.asarray(s["valid"], bool))
        names.append(s["name"])
        if pred.shape != preds[0].shape:
            raise ValueError(f"predict_dataset: sample {len(preds) - 1} ({s['name']}) is {pred.shape[::-1]} (WxH), "
                             f"the first is {preds[0].shape[::-1]}; predictions are stacked, so keep one size "
                             "(e.g. the kitti source's kb_crop=1) or use evaluate, which streams")
    return Predictions(np.stack(preds), np.stack(gts), np.stack(valids), names)


def _resolve_crop(crop: Any, protocol: str, dataset: Any, h: int, w: int) -> Any:
    if crop is None and protocol == "densedepth":
        crop = getattr(dataset, "crop", None)
    if isinstance(crop, str):
        if crop != "full":
            raise ValueError(f"crop must be None, 'full' or (top, bottom, left, right), got '{crop}'")
        if protocol == "kitti":  # sizes vary per image: the accumulator takes each image whole
            return crop
        crop = (0, h - 1, 0, w - 1)
    return crop


EVAL_ALIGN_MODES = ("median", *ALIGN_MODES)  # evaluate's --align: per image, to the ground truth


def _check_align(align: str | None, space: str | None, median_scaling: bool) -> tuple[str | None, str | None]:
    """(mode, space) of the per-image alignment; ValueError (one line) for unknown names or a conflict."""
    if median_scaling:
        if align not in (None, "median"):
            raise ValueError(f"median_scaling=True and align='{align}': choose one (median_scaling is align='median')")
        align = "median"
    if align is None:
        return None, None
    if align not in EVAL_ALIGN_MODES:
        raise ValueError(f"align: unknown mode '{align}'; choose one of {', '.join(EVAL_ALIGN_MODES)}")
    if align == "median":
        if space not in (None, "depth"):
            raise ValueError("align_space: median scaling is a ratio of medians of depth (metres); got "
                             f"'{space}'")
        return align, "depth"
    try:
        return align, check_mode(align, space, "align")
    except AlignError as e:
        raise ValueError(str(e)) from None


def align_prediction(pred: np.ndarray, gt: np.ndarray, valid: Any, mode: str, space: str | None = None,
                     clamp_m: tuple[float, float] | None = None, name: str | None = None) -> np.ndarray:
    """One (H,W) prediction (metres) aligned to its ground truth over the valid pixels (gt > 0, finite).

    median: pred * median(gt) / median(pred) (`metrics.median_scale`; a scale, in depth), not clamped (as it
    always was). scale / scale-shift: least squares (`geometry.align.fit_alignment`) in `space` (default:
    scale in depth, scale-shift in disparity = 1 / metres, the MiDaS zero-shot protocol), then back to metres
    clamped to `clamp_m` (MiDaS clamps to its depth cap). An image with fewer valid pixels than the fit needs
    is returned unaligned (as median scaling does with none).
    """
    valid = np.asarray(valid, bool)
    if mode == "median":
        return median_scale(pred[None], gt[None], valid[None])[0]
    mask = valid & np.isfinite(gt) & (gt > 0)
    if mask.sum() < needed_points(mode):
        return pred
    try:
        fit = fit_alignment(pred[mask], gt[mask], mode, space=space, name=name or "image")
    except AlignError as e:
        raise ValueError(f"evaluate --align {mode}: {e}") from None
    return fit.apply(pred, *clamp_m) if clamp_m is not None else fit.apply(pred)


def evaluate(model: DepthNet, dataset: Dataset, protocol: str = "eigen", *, crop: Any = None, flip: bool = True,
             min_depth: float | None = None, max_depth: float | None = None,
             size: tuple[int, int] | None = None, median_scaling: bool = False, batch_size: int = 4,
             device: str | torch.device | None = None, limit: int | None = None, progress: bool = False,
             predictions: Predictions | None = None, align: str | None = None,
             align_space: str | None = None) -> dict[str, Any]:
    """Metrics of `model` on `dataset` under `protocol`; the record names the protocol and its options.

    Streams (memory does not grow with the test set) unless `predictions` (from `predict_dataset`) is given,
    which is evaluated image by image without predicting again.
    crop: None = the protocol's default (for `densedepth`, the dataset's `crop` attribute, e.g. from
    nyu_test.zip, else none), "full" = whole frame, or (top, bottom, left, right) inclusive.
    min_depth, max_depth: clamp range in metres (default: the model's). The eigen mask is
    EIGEN_MIN_GT_M < gt < max_depth (the protocol fixes the lower bound; the upper follows the model).
    align: None, or per image to its ground truth (for data whose scale the model cannot know, e.g. another
    scene or sensor; `align_prediction`): median | scale | scale-shift, in `align_space` (default: depth for
    median and scale, disparity for scale-shift, MiDaS's protocol); said in the record (`align`,
    `align_space`). median_scaling=True is align="median".
    device: 'auto'/None, 'cpu', 'cuda:N' (`utils.resolve_device`) or a torch.device.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    # kitti: the protocol fixes the gt cap (80 m) unless max_depth is given; other protocols cap at max_depth
    cap = KITTI_MAX_GT_M if protocol == "kitti" and max_depth is None else max_depth
    min_depth = model.min_depth if min_depth is None else min_depth
    max_depth = model.max_depth if max_depth is None else max_depth
    min_depth, max_depth = check_depth_range(min_depth, max_depth, "evaluate: depth range")
    cap = max_depth if cap is None else cap
    _check_options(batch_size, limit)
    align, align_space = _check_align(align, align_space, median_scaling)
    if predictions is not None:
        p = predictions
        pairs: Any = ((p.pred[i], {"depth": p.gt[i], "valid": p.valid[i]}) for i in range(len(p.pred)))
    else:
        pairs = iter_predictions(model, dataset, flip=flip, min_depth=min_depth, max_depth=max_depth, size=size,
                                 batch_size=batch_size, device=device, limit=limit, progress=progress)
    acc, used_crop = None, None
    for pred, s in pairs:
        gt = np.asarray(s["depth"], np.float32)
        if acc is None:
            used_crop = _resolve_crop(crop, protocol, dataset, *gt.shape)
            acc = MetricAccumulator(protocol, used_crop, EIGEN_MIN_GT_M, cap)
        if align is not None:
            pred = align_prediction(pred, gt, s["valid"], align, align_space, (min_depth, max_depth), s.get("name"))
        acc.add(pred, gt, frame=s.get("frame"))
    if acc is None:
        raise ValueError("evaluation dataset is empty")
    metrics = acc.result()
    metrics["rmse_pooling"] = RMSE_POOLING[protocol]
    if protocol == "kitti" and used_crop is None:
        metrics["crop"] = "garg (fractions of each gt size: rows {:g}-{:g}, cols {:g}-{:g})".format(
            *GARG_CROP_FRACTIONS)
    else:
        metrics["crop"] = (used_crop if isinstance(used_crop, str) else list(used_crop) if used_crop is not None
                           else "protocol default")
    metrics["mask_m"] = [EIGEN_MIN_GT_M, cap] if protocol in ("eigen", "kitti") else None
    metrics["flip"] = flip
    metrics["median_scaled"] = align == "median"
    metrics["align"], metrics["align_space"] = align, align_space
    metrics["clamp_m"] = [min_depth, max_depth]
    return metrics


def describe(metrics: dict[str, Any]) -> str:
    """A short name of how the numbers were made, printed next to every table."""
    parts = [f"protocol {metrics['protocol']}", f"crop {metrics.get('crop')}"]
    if metrics.get("mask_m"):
        parts.append(f"mask {metrics['mask_m'][0]:g} < gt < {metrics['mask_m'][1]:g} m")
    if metrics.get("rmse_pooling"):
        parts.append(f"RMSE {metrics['rmse_pooling']}")
    if metrics.get("median_scaled"):
        parts.append("median-scaled per image")
    elif metrics.get("align"):
        parts.append(f"{metrics['align']} fitted per image in {metrics.get('align_space')} (least squares)")
    if metrics.get("flip") is False:
        parts.append("no flip averaging")
    return ", ".join(parts)
