"""`transferdepth fuse SEQUENCE --checkpoint DIR --out model.ply`: fuse a posed RGB-D sequence into one mesh.

SEQUENCE is a folder in the 7-Scenes / SUN3D layout (frame-NNNNNN.color.jpg|png, .depth.png, .pose.txt
camera-to-world, camera-intrinsics.txt). Each frame's depth (the model's, `--depth gt` the sensor's, or
`--depth constant:METRES`) is aligned per `--align` and integrated into a TSDF (Open3D, extra `[3d]`);
marching cubes gives the mesh, written atomically as a binary PLY whose header says what was done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transferdepth.cli import COMMANDS, UserError, add_progress_flag, parse_size

ALIGN_CHOICES = ("none", "median-gt", "scale-gt")  # apps.fuse.ALIGNS (not imported here: --help stays light)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help=COMMANDS["fuse"], description=__doc__.splitlines()[0])
    p.add_argument("sequence", metavar="SEQUENCE", help="folder of posed RGB-D frames (7-Scenes / SUN3D layout)")
    p.add_argument("--out", required=True, help="the mesh to write (.ply)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint folder, or a training run folder holding checkpoint/ (for --depth model)")
    p.add_argument("--depth", default="model", metavar="model|gt|constant:METRES",
                   help="depth per frame: the model's (default), the sensor's (gt), or one constant (a baseline)")
    p.add_argument("--align", default="none", choices=ALIGN_CHOICES,
                   help="scale each predicted map to the frame's sensor depth: none (default), median-gt "
                        "(median ratio), scale-gt (least squares)")
    p.add_argument("--reference", default=None, metavar="MESH",
                   help="also compare the fused mesh with this one (accuracy, completeness, chamfer, F-score)")
    p.add_argument("--threshold", type=float, default=0.05, help="F-score threshold with --reference, metres "
                   "(default 0.05)")
    p.add_argument("--voxel", type=float, default=0.01, help="TSDF voxel size, metres (default 0.01)")
    p.add_argument("--trunc", type=float, default=None, help="TSDF truncation, metres (default 4 voxels)")
    p.add_argument("--max-depth", type=float, default=5.0, help="ignore depth beyond this, metres (default 5)")
    p.add_argument("--index", default=None, metavar="LO:HI", help="frame numbers LO <= n < HI (either may be empty)")
    p.add_argument("--every", type=int, default=1, help="fuse every N-th frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="fuse at most N frames")
    p.add_argument("--input-size", default=None, metavar="HEIGHTxWIDTH",
                   help="network input size (e.g. the training resolution, 96x128); default: the frame's own")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the mirrored frame's prediction (default: on)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    add_progress_flag(p)
    p.set_defaults(func=_run)


def check_args(args: argparse.Namespace) -> tuple[int | None, int | None] | None:
    """Every flag before any work (exit 2, one line); returns the parsed --index."""
    from transferdepth.utils import check_number

    for flag, value, lo in (("--voxel", args.voxel, 1e-4), ("--max-depth", args.max_depth, 1e-3),
                            ("--threshold", args.threshold, 1e-6)):
        check_number(value, flag, lo, 1e3, unit="metres")
    if args.trunc is not None:
        check_number(args.trunc, "--trunc", args.voxel, 10.0, unit="metres (at least one voxel)")
    check_number(args.every, "--every", 1, 1e6, integer=True)
    if args.max_frames is not None:
        check_number(args.max_frames, "--max-frames", 1, 1e7, integer=True)
    out = Path(args.out)
    if out.suffix.lower() != ".ply":
        raise UserError(f"--out {out}: expected a .ply file name")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; give a .ply file name")
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {out}: exists; pass --overwrite to replace it")
    if args.reference is not None and not Path(args.reference).is_file():
        raise UserError(f"--reference {args.reference}: no such mesh file")
    if args.index is None:
        return None
    lo, colon, hi = args.index.partition(":")
    try:
        if not colon:
            raise ValueError
        return int(lo) if lo.strip() else None, int(hi) if hi.strip() else None
    except ValueError:
        raise UserError(f"--index must be LO:HI with integer frame numbers (either may be empty), got "
                        f"'{args.index}'") from None


def predictor(args: argparse.Namespace):
    """The depth source of --depth: None (sensor), a ConstantDepth, or a DepthEstimator."""
    from transferdepth.apps.fuse import ConstantDepth

    if args.depth == "gt":
        if args.checkpoint is not None:
            raise UserError("--checkpoint is not used with --depth gt (the sensor's depth); leave one out")
        return None
    if args.depth.startswith("constant:"):
        try:
            return ConstantDepth(float(args.depth.partition(":")[2]))
        except ValueError:
            raise UserError(f"--depth constant:METRES needs a depth > 0 metres, got '{args.depth}'") from None
    if args.depth != "model":
        raise UserError(f"--depth: expected model, gt or constant:METRES, got '{args.depth}'")
    if args.checkpoint is None:
        raise UserError("--depth model needs --checkpoint DIR (or use --depth gt for the sensor's depth)")
    from transferdepth.api.estimator import DepthEstimator
    from transferdepth.inference.checkpoint import is_checkpoint_folder

    ckpt = Path(args.checkpoint)
    if (ckpt / "checkpoint").is_dir() and not is_checkpoint_folder(ckpt):  # a training run's folder
        ckpt = ckpt / "checkpoint"
    return DepthEstimator.from_pretrained(ckpt, device=args.device, flip=args.flip,
                                          input_size=parse_size(args.input_size, "--input-size"))


def describe_depth(args: argparse.Namespace) -> str:
    if args.depth != "model":
        return "sensor" if args.depth == "gt" else args.depth
    size = f", input {args.input_size}" if args.input_size else ""
    return f"model {args.checkpoint}{size}"


def _run(args: argparse.Namespace) -> int:
    from transferdepth.apps.fuse import FuseSettings, fuse_sequence, write_result
    from transferdepth.data.sequence import RGBDSequence

    index = check_args(args)
    settings = FuseSettings(args.voxel, args.trunc, args.max_depth, args.align)
    if args.depth == "gt" and args.align != "none":
        raise UserError(f"--align {args.align}: aligns predicted depth to the sensor's; with --depth gt use "
                        "--align none")
    seq = RGBDSequence(args.sequence, index=index, every=args.every, max_frames=args.max_frames)
    result = fuse_sequence(seq, predictor(args), settings, describe_depth(args))
    write_result(args.out, result)
    print(result.describe())
    print(f"wrote {args.out}")
    if args.reference is not None:
        from transferdepth.evaluation.metrics3d import format_metrics, mesh_metrics, read_mesh

        print(f"against {args.reference}:")
        print(format_metrics(mesh_metrics(result.mesh, read_mesh(args.reference), args.threshold)))
    return 0
