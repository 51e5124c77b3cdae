"""`transferdepth export --checkpoint DIR --format onnx|torchscript --out FILE`.

The exported graph takes (N,3,H,W) float32 RGB in [0,1] of any size and returns (N,1,H,W) depth in metres.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from transferdepth.cli import COMMANDS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=COMMANDS["export"],
                       description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), dest="fmt")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx or model.pt")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transferdepth.cli import UserError
    from transferdepth.export import export_checkpoint

    out = Path(args.out)
    if args.out.endswith(("/", os.sep)) or out.is_dir():
        raise UserError(f"--out {args.out}: is a folder; give the file to write, e.g. "
                        f"{out / ('model.onnx' if args.fmt == 'onnx' else 'model.pt')}")
    try:  # fail before the (slow) export if the output cannot be written
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    path = export_checkpoint(args.checkpoint, args.fmt, out)
    print(f"wrote {path}: input rgb float32 (N,3,H,W) RGB in [0,1] -> output depth_m float32 (N,1,H,W) metres")
    return 0
