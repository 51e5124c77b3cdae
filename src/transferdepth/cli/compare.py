"""`transferdepth compare`: the encoder study (train or load each variant per seed, evaluate all, table +
figures)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from transferdepth.cli.evaluate import parse_crop
from transferdepth.cli.train import add_config_flags, config_overrides
from transferdepth.training.config import MAX_SEED

# keys of a compare YAML that are the study's, not the training config's (decoders, losses: axes of the grid;
# vary: {training key: [values, ...]}, more axes)
STUDY_KEYS = ("seeds", "baseline", "decoders", "losses", "vary")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train/evaluate several encoders under one config; write the comparison",
                       description="Writes comparison.md/.csv/.html, loss_curves.png and predictions.png "
                                   "(and runs.csv with several --seeds).")
    p.add_argument("--encoders", required=True,
                   help="comma list, e.g. densenet169,resnet50,mobilenetv2; ENCODER:scratch / ENCODER:pretrained "
                        "force ImageNet weights off/on for that row (mobilenetv2,mobilenetv2:scratch); ENCODER@RECIPE "
                        "trains that row with another preset (mobilenetv2@finetune)")
    p.add_argument("--decoders", default=None,
                   help="comma list crossed with the encoders, e.g. densedepth,unet,bts (also `decoders:` in --config)")
    p.add_argument("--losses", default=None,
                   help="comma list crossed with the other axes, e.g. densedepth,silog (also `losses:` in --config)")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                   help="any training key as one more axis, e.g. --vary batch_size=4,16 (repeatable; also "
                        "`vary: {batch_size: [4, 16]}` in --config). Each cell x seed is one run; a cell's name "
                        "is ENCODER|key=value for every axis with more than one value")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--test-data", required=True, help="test set spec")
    p.add_argument("--test-split", default=None)
    p.add_argument("--protocol", default="eigen", choices=("densedepth", "eigen"))
    p.add_argument("--crop", default=None, help="'full' or top,bottom,left,right (inclusive)")
    p.add_argument("--median-scale", action="store_true")
    p.add_argument("--seeds", default=None,
                   help="comma list, e.g. 0,1,2: every encoder trains once per seed; the table gives mean, sd and "
                        "95%% interval over seeds (also `seeds: [0, 1, 2]` in --config). Finished runs in --out "
                        "are reused, so adding seeds trains only the new ones")
    p.add_argument("--baseline", default=None,
                   help="encoder the others are compared with, paired by seed (default: the first; also "
                        "`baseline:` in --config)")
    p.add_argument("--checkpoints", default=None,
                   help="evaluate given runs instead of training: enc=DIR,enc=DIR (DIR: a run or checkpoint)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N test images only (>= 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing per-encoder run folders")
    add_config_flags(p)
    p.set_defaults(func=_run)


def parse_seeds(value: Any, source: str) -> list[int] | None:
    """'0,1,2' or [0, 1, 2] -> [0, 1, 2]; None -> None; anything else: one clear error."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        seeds = [int(str(s).strip()) for s in items if str(s).strip()]
    except ValueError:
        raise ValueError(f"{source}: seeds must be integers >= 0 like 0,1,2; got {value!r}") from None
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{source}: seeds must be distinct integers in [0, {MAX_SEED}] like 0,1,2; got {value!r}")
    return seeds


def _load(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The training config (recipe, YAML, flags) and the study keys of the YAML (seeds, baseline)."""
    from transferdepth.training.config import ConfigError, coerce, load_config, read_yaml_file

    study: dict[str, Any] = {}
    if args.config is None:
        return load_config(None, config_overrides(args)), study
    path = Path(args.config)
    data = read_yaml_file(path) or {}  # a FIFO, a device, a huge or too deeply nested file: one line
    if not isinstance(data, dict) or not any(k in data for k in STUDY_KEYS):
        return load_config(path, config_overrides(args)), study
    study = {k: data.pop(k) for k in STUDY_KEYS if k in data}
    if "baseline" in study and not isinstance(study["baseline"], str):
        raise ConfigError(f"{path}: 'baseline' must be an encoder name, got {study['baseline']!r}")
    from_file = {k: coerce(k, v, str(path)) for k, v in data.items()}
    return load_config(None, {**from_file, **config_overrides(args)}), study


def _run(args: argparse.Namespace) -> int:
    from transferdepth.evaluation.report import markdown_table
    from transferdepth.study.compare import COLUMNS, check_study_out, compare, grid_axes
    from transferdepth.utils import check_number

    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    checkpoints = {}
    for item in filter(None, (args.checkpoints or "").split(",")):
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--checkpoints entries are ENCODER=DIR, got '{item}'")
        checkpoints[name.strip()] = path.strip()
    if args.eval_limit is not None:
        check_number(args.eval_limit, "--eval-limit", 1, integer=True, unit="images")
    cfg, study = _load(args)
    seeds = parse_seeds(args.seeds, "--seeds") if args.seeds is not None else parse_seeds(
        study.get("seeds"), f"{args.config}: seeds")
    baseline = args.baseline if args.baseline is not None else study.get("baseline")
    axes = grid_axes(args.decoders, args.losses, args.vary, study, source=str(args.config))
    check_study_out(args.out)  # before any training: a folder of other files is never written into
    rows = compare(encoders, cfg, args.out, args.test_data, test_split=args.test_split, protocol=args.protocol,
                   crop=parse_crop(args.crop), median_scaling=args.median_scale, checkpoints=checkpoints,
                   overwrite=args.overwrite, eval_limit=args.eval_limit, seeds=seeds, baseline=baseline,
                   axes=axes, log=print)
    print(rows[0]["how"] if rows else "")
    if seeds is not None and len(seeds) > 1:
        print(Path(args.out, "comparison.md").read_text())
    else:
        print(markdown_table(rows, COLUMNS))
    print(f"wrote {args.out}/comparison.md, .csv, .html, loss_curves.png, predictions.png")
    return 0

