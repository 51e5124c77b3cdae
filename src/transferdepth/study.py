"""The encoder comparison study: train (or load) one model per encoder under one config, evaluate all on
one test set under one protocol, and write the table and figures.

Outputs in `out_dir`: `comparison.md`, `comparison.csv`, `comparison.html` (metrics, parameters, GFLOPs at
the training resolution, training time, inference latency), `loss_curves.png` (loss per step, each
encoder), `predictions.png` (rows = test images; columns = RGB, ground truth, each encoder), and one run
folder per trained encoder (`<out_dir>/<encoder>/`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferdepth import report
from transferdepth.checkpoint import load_checkpoint
from transferdepth.config import TrainConfig
from transferdepth.data import open_dataset
from transferdepth.evaluate import describe, evaluate, predict_dataset
from transferdepth.models import DepthNet
from transferdepth.train import train

COLUMNS = ("encoder", "d1", "d2", "d3", "abs_rel", "rmse", "log10", "sq_rel", "rmse_log", "silog", "params_M",
           "gflops", "train_min", "latency_ms")


def model_gflops(model: DepthNet, height: int, width: int) -> float:
    """GFLOPs of one forward pass of a 1x3xHxW input (torch.utils.flop_counter; multiply-add = 2)."""
    counter = FlopCounterMode(display=False)
    model = model.eval()
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, height, width, device=next(model.parameters()).device))
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def forward_latency_ms(model: DepthNet, height: int, width: int, repeats: int = 5) -> float:
    """Median wall time of a batch-1 forward pass after one warm-up, on the model's device."""
    device = next(model.parameters()).device
    x = torch.randn(1, 3, height, width, device=device)
    model.eval()
    model(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_folder_name(encoder: str) -> str:
    """A safe single folder name for an encoder's run: letters, digits, '-', '_' and '.' only, never '.' or '..'
    (e.g. 'timm:x/../../victim' -> 'timm_x_.._.._victim' is one name inside the study folder)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder).strip(".") or "_"
    return name


def compare(encoders: list[str], base: TrainConfig, out_dir: str | Path, test_data: str, *,
            test_split: str | None = None, protocol: str = "eigen", crop: Any = None,
            median_scaling: bool = False, checkpoints: dict[str, str] | None = None, overwrite: bool = False,
            eval_limit: int | None = None, n_images: int = 4, latency_repeats: int = 5) -> list[dict[str, Any]]:
    """Train/evaluate each encoder and write the comparison (see module docstring). Returns the rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = checkpoints or {}
    unknown = set(checkpoints) - set(encoders)
    if unknown:
        raise ValueError(f"--checkpoints names encoders not in --encoders: {', '.join(sorted(unknown))}")
    folders = {name: out / run_folder_name(name) for name in encoders if name not in checkpoints}
    clash = len(set(folders.values())) < len(folders)
    if clash or any(f.resolve().parent != out.resolve() for f in folders.values()):
        raise ValueError(f"--encoders {', '.join(encoders)}: the run folders must be distinct names inside {out}")
    test = open_dataset(test_data, test_split)
    size = (base.height, base.width)
    rows, histories, grid_preds = [], {}, {}
    shown = None
    for name in encoders:
        if name in checkpoints:
            run_dir = Path(checkpoints[name])
            run_dir = run_dir.parent if run_dir.name == "checkpoint" else run_dir
            model = load_checkpoint(run_dir / "checkpoint" if (run_dir / "checkpoint").is_dir() else run_dir)
            hist = _history(run_dir)
            seconds = hist[-1]["time_s"] if hist else float("nan")
        else:
            run_dir = folders[name]
            cfg = dataclasses.replace(base, encoder=name)
            result = train(cfg, run_dir, overwrite=overwrite)
            model = load_checkpoint(run_dir / "checkpoint")
            seconds, hist = result.seconds, _history(run_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model.to(device)
        preds = predict_dataset(model, test, size=size, device=device, limit=eval_limit)
        metrics = evaluate(model, test, protocol, crop=crop, median_scaling=median_scaling, predictions=preds)
        rows.append({"encoder": name, **{k: metrics[k] for k in report.METRIC_COLUMNS},
                     "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                     "gflops": model_gflops(model, *size), "train_min": seconds / 60,
                     "latency_ms": forward_latency_ms(model, *size, repeats=latency_repeats),
                     "n_images": metrics["n_images"], "how": describe(metrics), "device": device})
        histories[name] = hist
        k = min(n_images, len(preds.pred))
        grid_preds[name] = list(preds.pred[:k])
        if shown is None:
            shown = ([test[i]["rgb"] for i in range(k)], list(preds.gt[:k]), list(preds.valid[:k]))
        del model
    _write(out, rows, histories, grid_preds, shown, base)
    return rows


def _write(out: Path, rows, histories, grid_preds, shown, base: TrainConfig) -> None:
    how = rows[0]["how"] if rows else ""
    note = (f"Evaluation: {how}; {rows[0]['n_images'] if rows else 0} images. Training: {base.train_data}, "
            f"{base.height}x{base.width}, batch {base.batch_size}, "
            f"{base.max_steps or str(base.epochs) + ' epochs'} steps, lr {base.lr}. GFLOPs and latency: batch 1 "
            f"at {base.height}x{base.width} on {rows[0]['device'] if rows else '-'}, latency median of repeats.")
    report.write_text(out / "comparison.md",
                      "# Encoder comparison\n\n" + note + "\n\n" + report.markdown_table(rows, COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "n_images", "how", "device"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    report.write_text(out / "comparison.csv", buf.getvalue())
    report.plot_loss_curves(histories, out / "loss_curves.png")
    if shown is not None:
        rgbs, gts, valids = shown
        report.plot_prediction_grid(rgbs, gts, grid_preds, out / "predictions.png", valids=valids)
    page = report.html_page("Encoder comparison", [
        ("Results", f"<p>{note}</p>" + report.html_table(rows, COLUMNS)),
        ("Loss curves", "<img src='loss_curves.png'>"),
        ("Predictions", "<img src='predictions.png'>"),
    ])
    report.write_text(out / "comparison.html", page)
