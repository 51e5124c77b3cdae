"""Validation during training: metrics through `inference.infer` (the one inference path), logged to
metrics.json and TensorBoard with an image grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from transferdepth.evaluation.metrics import depth_metrics
from transferdepth.inference.core import infer
from transferdepth.models import DepthNet
from transferdepth.utils import atomic_write


@torch.no_grad()
def validate(model: DepthNet, loader: DataLoader, device: torch.device,
             amp: torch.dtype | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metrics at the target's (half) resolution: eigen masking (1e-3 < gt < model.max_depth m), no crop, per image.

    Returns (metrics, first batch {image, depth, pred} for image grids).
    """
    was_training = model.training
    model.eval()
    preds, gts, first = [], [], {}
    for batch in loader:
        x = batch["image"].to(device)
        out_size = tuple(batch["depth"].shape[-2:])
        pred = infer(model, x, flip=False, normalized=True, output_size=out_size, amp=amp).cpu()
        gt = torch.where(batch["valid"], batch["depth"], torch.zeros_like(batch["depth"]))
        preds.append(pred[:, 0].numpy())
        gts.append(gt[:, 0].numpy())
        if not first:
            first = {"image": batch["image"], "depth": gt, "pred": pred}
    if was_training:
        model.train()
    pred_all, gt_all = np.concatenate(preds), np.concatenate(gts)
    h, w = gt_all.shape[1:]
    metrics = depth_metrics(pred_all, gt_all, "eigen", crop=(0, h - 1, 0, w - 1), max_depth=model.max_depth)
    metrics["protocol"] = "val: eigen masking, no crop, half resolution"
    return metrics, first


def validate_and_log(model: DepthNet, loader: DataLoader, device: torch.device, amp: torch.dtype | None,
                     writer: Any, step: int, out: Path) -> dict[str, Any]:
    """Validate, write out/metrics.json (atomically) and, with a writer, TensorBoard scalars and a grid."""
    metrics, first = validate(model, loader, device, amp)
    metrics["step"] = step
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    if writer is not None:
        for k in ("d1", "d2", "d3", "abs_rel", "rmse", "log10"):
            writer.add_scalar(f"val/{k}", metrics[k], step)
        writer.add_image("val/rgb|gt|pred", _grid(first, model), step)
    return metrics


def _grid(first: dict[str, torch.Tensor], model: DepthNet, n: int = 4) -> torch.Tensor:
    """(3, H', W') image: rows = images; columns = RGB | ground truth | prediction (plasma, shared range)."""
    import matplotlib

    cmap = matplotlib.colormaps["plasma"]
    img = first["image"][:n] * model.std.cpu().view(1, 3, 1, 1) + model.mean.cpu().view(1, 3, 1, 1)
    img = torch.nn.functional.interpolate(img.clamp(0, 1), scale_factor=0.5, mode="bilinear", align_corners=False)
    gt, pred = first["depth"][:n, 0], first["pred"][:n, 0]
    hi = float(torch.quantile(gt[gt > 0], 0.99)) if (gt > 0).any() else 10.0

    def colour(d: torch.Tensor) -> torch.Tensor:
        rgb = torch.from_numpy(cmap((d / hi).clamp(0, 1).numpy())[..., :3]).permute(0, 3, 1, 2).float()
        return torch.where(d[:, None] > 0, rgb, torch.zeros_like(rgb))

    rows = torch.cat([img, colour(gt), colour(pred)], dim=3)  # side by side
    return torch.cat(list(rows), dim=1)
