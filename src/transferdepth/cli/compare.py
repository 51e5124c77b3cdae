"""`transferdepth compare`: the encoder study (train or load each, evaluate all, table + figures)."""

from __future__ import annotations

import argparse

from transferdepth.cli.evaluate import parse_crop
from transferdepth.cli.train import add_config_flags, config_overrides


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train/evaluate several encoders under one config; write the comparison",
                       description="Writes comparison.md/.csv/.html, loss_curves.png and predictions.png.")
    p.add_argument("--encoders", required=True,
                   help="comma list, e.g. densenet169,densenet161,resnet50,resnet101,mobilenetv2")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--test-data", required=True, help="test set spec")
    p.add_argument("--test-split", default=None)
    p.add_argument("--protocol", default="eigen", choices=("densedepth", "eigen"))
    p.add_argument("--crop", default=None, help="'full' or top,bottom,left,right (inclusive)")
    p.add_argument("--median-scale", action="store_true")
    p.add_argument("--checkpoints", default=None,
                   help="evaluate given runs instead of training: enc=DIR,enc=DIR (DIR: a run or checkpoint)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N test images only")
    p.add_argument("--overwrite", action="store_true", help="replace existing per-encoder run folders")
    add_config_flags(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transferdepth.config import load_config
    from transferdepth.report import markdown_table
    from transferdepth.study import COLUMNS, compare

    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    checkpoints = {}
    for item in filter(None, (args.checkpoints or "").split(",")):
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--checkpoints entries are ENCODER=DIR, got '{item}'")
        checkpoints[name.strip()] = path.strip()
    cfg = load_config(args.config, config_overrides(args))
    rows = compare(encoders, cfg, args.out, args.test_data, test_split=args.test_split, protocol=args.protocol,
                   crop=parse_crop(args.crop), median_scaling=args.median_scale, checkpoints=checkpoints,
                   overwrite=args.overwrite, eval_limit=args.eval_limit)
    print(rows[0]["how"] if rows else "")
    print(markdown_table(rows, COLUMNS))
    print(f"wrote {args.out}/comparison.md, .csv, .html, loss_curves.png, predictions.png")
    return 0
