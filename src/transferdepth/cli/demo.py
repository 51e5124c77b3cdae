"""`transferdepth demo`: offline end to end (weights from the registry mirror, procedural rooms, fine-tune,
evaluate, report). `--data SPEC` runs the same flow on any dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from transferdepth.cli import COMMANDS, add_progress_flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=COMMANDS["demo"],
                       description=__doc__)
    p.add_argument("--out", default="demo", help="output folder (report.html, run/, figures)")
    p.add_argument("--data", default=None, help="dataset spec instead of procedural rooms "
                   "(e.g. rgbd:7scenes-redkitchen); the last 20%% of its samples are held out")
    p.add_argument("--encoder", default="mobilenetv2")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", default="120x160", help="network input HEIGHTxWIDTH")
    p.add_argument("--n-train", type=int, default=400, help="procedural training scenes")
    p.add_argument("--seed", type=int, default=0)
    add_progress_flag(p)
    p.set_defaults(func=_run)


MAX_DEMO_STEPS = 100_000  # the demo is minutes of CPU; a larger number is a typo, not a plan


def _run(args: argparse.Namespace) -> int:
    from transferdepth.apps.demo import DemoOptions, headline, run_demo, set_threads
    from transferdepth.cli import UserError, parse_size

    if not 1 <= args.steps <= MAX_DEMO_STEPS:  # else the error would name the config key max_steps
        raise UserError(f"--steps: expected 1 to {MAX_DEMO_STEPS} fine-tuning steps, got {args.steps}")
    set_threads()
    h, w = parse_size(args.size, "--size")
    from transferdepth.utils import check_output_folder

    check_output_folder(args.out, flag="--out", what="a demo folder (report.html, run/)", reuse=True,
                        holds=lambda p: (p / "report.html").exists() or (p / "run" / "run.json").exists())
    opts = DemoOptions(out=Path(args.out), data=args.data, encoder=args.encoder, steps=args.steps,
                       batch_size=args.batch_size, height=h, width=w, n_train=args.n_train, seed=args.seed,
                       progress=args.progress)
    summary = run_demo(opts, log=lambda s: print(s, flush=True))
    print(headline(summary))
    return 0
