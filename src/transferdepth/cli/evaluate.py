"""`transferdepth evaluate`: a checkpoint on a test set under a named protocol -> table + metrics.json."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from transferdepth.cli import add_progress_flag
from transferdepth.evaluation.metrics import METRIC_KEYS, PROTOCOLS


def parse_crop(text: str | None):
    """None, 'full', or 'top,bottom,left,right' (inclusive pixel rows/cols)."""
    if text is None or text == "full":
        return text
    try:
        crop = tuple(int(v) for v in text.split(","))
    except ValueError:
        crop = ()
    if len(crop) != 4:
        raise ValueError(f"--crop must be 'full' or four integers top,bottom,left,right; got '{text}'")
    return crop


MAX_SIZE_SIDE = 8192  # pixels, each side of --size
MAX_BATCH_SIZE = 1024


def parse_size(text: str | None) -> tuple[int, int] | None:
    """--size 'HEIGHTxWIDTH' (each side 1-8192 pixels) -> (H, W); None stays None."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HEIGHTxWIDTH, e.g. 240x320; got '{text}'") from None
    if not (1 <= h <= MAX_SIZE_SIDE and 1 <= w <= MAX_SIZE_SIDE):
        raise ValueError(f"--size must be HEIGHTxWIDTH with each side in [1, {MAX_SIZE_SIDE}] pixels; got '{text}'")
    return h, w


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint under a named protocol (densedepth | eigen | kitti)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (model.safetensors + config.json)")
    p.add_argument("--data", required=True, help="test set spec, e.g. nyu-npy:/data/nyu_test.zip")
    p.add_argument("--split", default=None, help="split of --data (e.g. test)")
    p.add_argument("--protocol", default="eigen", choices=PROTOCOLS,
                   help="eigen: NYU crop, 1e-3 < gt < max depth; kitti: Garg crop, 1e-3 < gt < 80 m; densedepth")
    p.add_argument("--crop", default=None, help="'full' or top,bottom,left,right (inclusive); default: protocol's")
    p.add_argument("--no-flip", action="store_true", help="do not average with the mirrored prediction")
    p.add_argument("--min-depth", type=float, default=None,
                   help="clamp predictions below (m; default: the model's min_depth)")
    p.add_argument("--max-depth", type=float, default=None,
                   help="clamp predictions above and, for eigen/kitti, mask gt at or above (m; default: the "
                        "model's; kitti masks at 80 m unless given)")
    p.add_argument("--size", default=None,
                   help="network input HEIGHTxWIDTH, each side 1-8192 (default: the image's own size)")
    p.add_argument("--align", default=None, choices=("median", "scale", "scale-shift"),
                   help="fit each prediction to its ground truth before scoring (zero-shot protocols): median "
                        "(ratio of medians), scale or scale-shift (least squares; scale in depth, scale-shift in "
                        "disparity = 1/m as MiDaS, unless --align-space); default: none (metric)")
    p.add_argument("--align-space", default=None, choices=("depth", "disparity"),
                   help="the space of the --align fit (default: depth for median and scale, disparity for "
                        "scale-shift)")
    p.add_argument("--median-scale", action="store_true", help="the same as --align median")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (1-1024; default 4)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only (>= 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--out", default=None, help="folder for metrics.json (default: print only)")
    add_progress_flag(p)
    p.set_defaults(func=_run)


def check_out_dir(text: str | None) -> Path | None:
    """--out as a folder we can write metrics.json into (checked before evaluating); None when not given."""
    if text is None:
        return None
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {text}: exists and is not a folder")
    probe = out
    while not probe.exists():  # the nearest existing parent must be a writable folder
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {text}: cannot write there ({probe} is not a writable folder)")
    return out


def check_args(args: argparse.Namespace) -> None:
    """Usage errors found before loading anything (one line each, exit status 2)."""
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size must be in [1, {MAX_BATCH_SIZE}] (images), got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (images), got {args.limit}")
    for flag, v in (("--min-depth", args.min_depth), ("--max-depth", args.max_depth)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{flag} must be a finite depth > 0 in metres, got {v}")
    if args.median_scale and args.align not in (None, "median"):
        raise ValueError(f"--median-scale is --align median; it cannot go with --align {args.align}")
    if args.align_space is not None and args.align is None and not args.median_scale:
        raise ValueError("--align-space: give --align median|scale|scale-shift too")
    if args.align_space == "disparity" and (args.align == "median" or args.median_scale):
        raise ValueError("--align-space disparity: median scaling is a ratio of medians of depth; use it with "
                         "--align scale or scale-shift")
    if args.min_depth is not None and args.max_depth is not None and args.min_depth >= args.max_depth:
        raise ValueError(f"--min-depth {args.min_depth} must be below --max-depth {args.max_depth} (metres)")


def _run(args: argparse.Namespace) -> int:
    from transferdepth.data import open_dataset
    from transferdepth.evaluation.evaluate import describe, evaluate
    from transferdepth.evaluation.report import markdown_table, write_text
    from transferdepth.inference.checkpoint import load_checkpoint
    from transferdepth.recipe import check_depth_range
    from transferdepth.utils import resolve_device

    check_args(args)  # every numeric flag, before anything is loaded
    crop, size = parse_crop(args.crop), parse_size(args.size)
    out = check_out_dir(args.out)
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint)
    min_depth = model.min_depth if args.min_depth is None else args.min_depth
    max_depth = model.max_depth if args.max_depth is None else args.max_depth
    check_depth_range(min_depth, max_depth, "--min-depth/--max-depth (with the model's range)")
    dataset = open_dataset(args.data, args.split)
    metrics = evaluate(model, dataset, args.protocol, crop=crop, flip=not args.no_flip, min_depth=min_depth,
                       max_depth=args.max_depth, size=size, median_scaling=args.median_scale,
                       align=args.align, align_space=args.align_space,
                       batch_size=args.batch_size, device=device, limit=args.limit, progress=True)
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["data"] = args.data
    print(f"{args.data}: {describe(metrics)}, {metrics['n_images']} images")
    print(markdown_table([{k: v for k, v in metrics.items() if k in ("protocol", "n_images")
                           or k in METRIC_KEYS}]))
    if out is not None:
        path = write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        print(f"wrote {path}")
    return 0
