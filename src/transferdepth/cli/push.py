"""`transferdepth push CHECKPOINT ORG/NAME [--private]`: share a checkpoint on the Hugging Face Hub.

Uploads model.safetensors, config.json and a model card (README.md) written from the checkpoint's own
metadata (training run or DenseDepth import, evaluation table). The checkpoint is loaded first: nothing is
uploaded from one that does not load. Needs `transferdepth[hub]` and a token (`hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

import argparse

from transferdepth.cli import COMMANDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help=COMMANDS["push"], description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder, or a training run folder")
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--license", default=None, help="the card's license id (default: mit for a model trained "
                   "with transferdepth, other for an imported one)")
    p.add_argument("--metrics", action="append", default=[], metavar="FILE",
                   help="metrics.json of `transferdepth evaluate --out` to add to the card's table (repeatable)")
    p.add_argument("--card-only", action="store_true",
                   help="print the model card and upload nothing")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transferdepth.api.hub import model_card, push_checkpoint

    if args.card_only:
        print(model_card(args.checkpoint, args.repo_id, license=args.license, evaluations=args.metrics))
        return 0
    url = push_checkpoint(args.checkpoint, args.repo_id, private=args.private, license=args.license,
                          evaluations=args.metrics, commit_message=args.message)
    print(f"pushed {args.checkpoint} to {url}")
    return 0
