"""`transferdepth evaluate-3d PRED_MESH REF_MESH`: accuracy, completeness, chamfer and F-score of one surface
against another, on points sampled from both (distances in metres; see evaluation/metrics3d.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transferdepth.cli import COMMANDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-3d", help=COMMANDS["evaluate-3d"], description=__doc__.splitlines()[0])
    p.add_argument("pred", metavar="PRED_MESH", help="the reconstruction (PLY, OBJ, STL, OFF; faces optional)")
    p.add_argument("ref", metavar="REF_MESH", help="the reference surface (same formats, same units: metres)")
    p.add_argument("--threshold", type=float, default=0.05, help="F-score threshold, metres (default 0.05)")
    p.add_argument("--points", type=int, default=200_000, help="points sampled on each surface (default 200000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics as JSON (atomically)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transferdepth.evaluation.metrics3d import format_metrics, mesh_metrics, read_mesh
    from transferdepth.utils import atomic_write, check_number

    check_number(args.threshold, "--threshold", 1e-6, 1e3, unit="metres")
    check_number(args.points, "--points", 1, 1e8, integer=True)
    check_number(args.seed, "--seed", 0, 2**32 - 1, integer=True)
    if args.json is not None and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json}: is a folder; give a file name")
    metrics = mesh_metrics(read_mesh(args.pred), read_mesh(args.ref), args.threshold, args.points, args.seed)
    metrics |= {"pred": str(args.pred), "ref": str(args.ref)}
    print(format_metrics(metrics))
    if args.json is not None:
        with atomic_write(args.json) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
