"""`transferdepth train`: YAML config + command-line overrides (one flag per config key)."""

from __future__ import annotations

import argparse

from transferdepth.training.config import FIELDS, _base_type


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """--config FILE and one --key flag per TrainConfig field (value parsed and checked by load_config)."""
    p.add_argument("--config", default=None, help="YAML file of config keys (command-line flags override it)")
    g = p.add_argument_group("config keys (override the YAML file)")
    for name, f in FIELDS.items():
        typ, _ = _base_type(name)
        default = f.default
        g.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", default=None,
                       metavar=typ.__name__.upper(), help=f"{f.metadata.get('help', '')} (default: {default})")


def config_overrides(args: argparse.Namespace) -> dict[str, str]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a depth network (single process or under torchrun)",
                       description="Train a DenseDepth-style network. Under `torchrun --nproc_per_node N -m "
                                   "transferdepth train ...` the same command runs DDP.")
    p.add_argument("--out", required=True, help="run folder (run.json, checkpoint/, tb/, history.jsonl)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (kept aside until the new run's first checkpoint is written)")
    add_config_flags(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    from transferdepth.training import train
    from transferdepth.training.config import load_config

    cfg = _resolved(args)
    if args.resume and args.config is None:
        # continue with the saved configuration; flags on the command line still override it
        from pathlib import Path

        saved = Path(args.out) / "config.yaml"
        if saved.exists():
            cfg = load_config(saved, config_overrides(args))
    result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s ({result.skipped_steps} skipped); "
          f"checkpoint: {result.out_dir / 'checkpoint'}")
    if result.metrics:
        m = result.metrics
        print(f"validation ({m['protocol']}): d1 {m['d1']:.3f}  abs_rel {m['abs_rel']:.3f}  rmse {m['rmse']:.3f} m")
    return 0


def _resolved(args: argparse.Namespace):
    from transferdepth.training.config import load_config

    return load_config(args.config, config_overrides(args))
