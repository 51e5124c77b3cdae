"""Evaluation: run a model over a test set under a named protocol and return a metrics record.

Prediction (as DenseDepth's test): the image and its mirror are predicted and averaged, inverted from
DepthNorm to metres, upsampled x2 (bilinear) to the ground truth's size and clamped to [min_depth, max_depth].
`size` feeds the network a resized image (for models trained at another resolution); the prediction is
then resized to the ground truth's size.

Protocols (`transferdepth.metrics`): `densedepth` (nyu_test.zip crop, inclusive; pooled over all pixels,
no validity mask) and `eigen` (crop rows 45:471, cols 41:601 at 480x640; 1e-3 < gt < 10 m; per-image means).
`crop="full"` evaluates the whole frame (for data that is not NYU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from transferdepth.inference import infer, rgb_to_tensor
from transferdepth.metrics import PROTOCOLS, depth_metrics, median_scale
from transferdepth.models import DepthNet


@dataclass
class Predictions:
    """Everything evaluated, at the ground truth's resolution: (N,H,W) float32 metres and bool masks."""

    pred: np.ndarray
    gt: np.ndarray
    valid: np.ndarray
    names: list[str]


@torch.no_grad()
def predict_dataset(model: DepthNet, dataset: Dataset, *, flip: bool = True, min_depth: float | None = None,
                    max_depth: float | None = None, size: tuple[int, int] | None = None, batch_size: int = 4,
                    device: str | torch.device | None = None, limit: int | None = None,
                    progress: bool = False) -> Predictions:
    """Predict every sample of `dataset` (the sample contract of `transferdepth.data`) in metres."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("evaluation dataset is empty")
    first = dataset[0]
    h, w = first["depth"].shape
    pred = np.zeros((n, h, w), np.float32)
    gt = np.zeros((n, h, w), np.float32)
    valid = np.zeros((n, h, w), bool)
    names: list[str] = []
    indices = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="evaluate", unit="batch")
    for start in indices:
        samples = [first if i == 0 else dataset[i] for i in range(start, min(start + batch_size, n))]
        for j, s in enumerate(samples):
            if s["depth"].shape != (h, w):
                raise ValueError(f"sample {start + j} ({s['name']}): ground truth is {s['depth'].shape[::-1]} (WxH), "
                                 f"the first sample's is {(w, h)}; evaluate one size at a time")
            gt[start + j], valid[start + j] = s["depth"], s["valid"]
            names.append(s["name"])
        rgb = rgb_to_tensor([s["rgb"] for s in samples], device)
        out = infer(model, rgb, flip=flip, input_size=size, output_size=(h, w), min_depth=min_depth,
                    max_depth=max_depth)
        pred[start:start + len(samples)] = out[:, 0].float().cpu().numpy()
    return Predictions(pred, gt, valid, names)


def evaluate(model: DepthNet, dataset: Dataset, protocol: str = "eigen", *, crop: Any = None, flip: bool = True,
             min_depth: float | None = None, max_depth: float | None = None,
             size: tuple[int, int] | None = None, median_scaling: bool = False, batch_size: int = 4, device: str | torch.device | None = None,
             limit: int | None = None, progress: bool = False,
             predictions: Predictions | None = None) -> dict[str, Any]:
    """Metrics of `model` on `dataset` under `protocol`; the record names the protocol and its options.

    crop: None = the protocol's default (for `densedepth`, the dataset's `crop` attribute, e.g. from
    nyu_test.zip, else none), "full" = whole frame, or (top, bottom, left, right) inclusive.
    median_scaling: scale each prediction by median(gt)/median(pred) over valid pixels (for data whose
    scale the model cannot know, e.g. another scene or sensor); said in the record.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    min_depth = model.min_depth if min_depth is None else min_depth
    max_depth = model.max_depth if max_depth is None else max_depth
    p = predictions or predict_dataset(model, dataset, flip=flip, min_depth=min_depth, max_depth=max_depth,
                                       size=size, batch_size=batch_size, device=device, limit=limit,
                                       progress=progress)
    h, w = p.gt.shape[1:]
    if crop is None and protocol == "densedepth":
        crop = getattr(dataset, "crop", None)
    if isinstance(crop, str):
        if crop != "full":
            raise ValueError(f"crop must be None, 'full' or (top, bottom, left, right), got '{crop}'")
        crop = (0, h - 1, 0, w - 1)
    pred = median_scale(p.pred, p.gt, p.valid).astype(np.float32) if median_scaling else p.pred
    metrics = depth_metrics(pred, p.gt, protocol, crop=crop, max_depth=max_depth)
    metrics["crop"] = list(crop) if crop is not None else "protocol default"
    metrics["flip"] = flip
    metrics["median_scaled"] = median_scaling
    metrics["clamp_m"] = [min_depth, max_depth]
    return metrics


def describe(metrics: dict[str, Any]) -> str:
    """A short name of how the numbers were made, printed next to every table."""
    parts = [f"protocol {metrics['protocol']}", f"crop {metrics.get('crop')}"]
    if metrics.get("median_scaled"):
        parts.append("median-scaled per image")
    if metrics.get("flip") is False:
        parts.append("no flip averaging")
    return ", ".join(parts)
