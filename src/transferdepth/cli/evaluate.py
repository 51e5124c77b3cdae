"""`transferdepth evaluate`: a checkpoint on a test set under a named protocol -> table + metrics.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HEIGHTxWIDTH, e.g. 240x320; got '{text}'") from None
    return h, w


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint under a named protocol (densedepth | eigen)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (model.safetensors + config.json)")
    p.add_argument("--data", required=True, help="test set spec, e.g. nyu-npy:/data/nyu_test.zip")
    p.add_argument("--split", default=None, help="split of --data (e.g. test)")
    p.add_argument("--protocol", default="eigen", choices=("densedepth", "eigen"))
    p.add_argument("--crop", default=None, help="'full' or top,bottom,left,right (inclusive); default: protocol's")
    p.add_argument("--no-flip", action="store_true", help="do not average with the mirrored prediction")
    p.add_argument("--min-depth", type=float, default=0.1, help="clamp predictions below (m)")
    p.add_argument("--max-depth", type=float, default=10.0, help="clamp predictions above (m)")
    p.add_argument("--size", default=None, help="network input HEIGHTxWIDTH (default: the image's own size)")
    p.add_argument("--median-scale", action="store_true", help="scale each prediction to the GT median")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    p.add_argument("--out", default=None, help="folder for metrics.json (default: print only)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transferdepth.checkpoint import load_checkpoint
    from transferdepth.data import open_dataset
    from transferdepth.evaluate import describe, evaluate
    from transferdepth.metrics import format_metrics_table
    from transferdepth.report import write_text

    crop, size = parse_crop(args.crop), parse_size(args.size)
    model = load_checkpoint(args.checkpoint)
    dataset = open_dataset(args.data, args.split)
    metrics = evaluate(model, dataset, args.protocol, crop=crop, flip=not args.no_flip, min_depth=args.min_depth,
                       max_depth=args.max_depth, size=size, median_scaling=args.median_scale,
                       batch_size=args.batch_size, device=args.device, limit=args.limit, progress=True)
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["data"] = args.data
    print(f"{args.data}: {describe(metrics)}, {metrics['n_images']} images")
    print(format_metrics_table([metrics]))
    if args.out:
        path = write_text(Path(args.out) / "metrics.json", json.dumps(metrics, indent=2))
        print(f"wrote {path}")
    return 0
