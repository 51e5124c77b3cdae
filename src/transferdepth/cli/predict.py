"""`transferdepth predict PATH... --checkpoint CKPT --out DIR`: depth maps for image files.

Exit status: 0 all inputs done, 1 some inputs failed (listed at the end; the others were written), 2 usage,
device or checkpoint errors (nothing predicted).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from transferdepth.cli import (
    COMMANDS,
    EXIT_OK,
    EXIT_SOME_INPUTS_FAILED,
    UserError,
    add_progress_flag,
    parse_size,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help=COMMANDS["predict"],
                       description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, folders of them, or globs")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json); "
                   "with --engine onnx also a .onnx file from `transferdepth export`")
    p.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                   help="torch (PyTorch, default) or onnx (onnxruntime on CPU; a checkpoint directory is "
                        "exported at start)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--format", action="append", default=None, dest="formats", metavar="FMT",
                   help="png16 (millimetres, uint16), npy (float32 metres), color, ply; repeat or comma-separate "
                        "(default: png16)")
    p.add_argument("--recursive", action="store_true", help="also images in sub-folders (and ** in globs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (default: refuse before any work); an output "
                        "that would replace an input of the same run is refused even so")
    p.add_argument("--batch-size", type=int, default=4, help="images of the same size per forward pass")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirrored image's prediction (default: on; a --flip ONNX export "
                        "always averages inside its graph)")
    p.add_argument("--cmap", default="plasma", help="matplotlib colormap for --format color")
    p.add_argument("--range", default=None, metavar="MIN,MAX", help="fixed colour range in metres "
                   "(default: each image's own min..max)")
    p.add_argument("--colorbar", action="store_true", help="add a colour bar (metres) to colour images")
    p.add_argument("--intrinsics", default="auto", metavar="auto|exif|fov:DEG|nyu|FX,FY,CX,CY",
                   help="camera for PLY and stereo, pixels at the input's resolution: auto (default) = EXIF "
                        "focal length, else a 26 mm-equivalent lens, square pixels; see docs/3d.md")
    p.add_argument("--stereo", default="sbs", choices=("sbs", "tab", "anaglyph"),
                   help="layout for --format stereo: side by side, top and bottom, red-cyan anaglyph")
    p.add_argument("--baseline", type=float, default=0.065, help="stereo eye separation, metres (default 0.065)")
    p.add_argument("--convergence", default="auto", metavar="METRES|auto|inf",
                   help="stereo zero-parallax distance (default auto: the median depth of the image / first frames)")
    p.add_argument("--stride", type=int, default=1, help="PLY: every N-th pixel in x and y")
    p.add_argument("--ply-ascii", action="store_true", help="ASCII PLY (default: binary little-endian)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse larger images (default: 40,000,000)")
    p.add_argument("--input-size", default=None, metavar="HEIGHTxWIDTH",
                   help="network input size for every image (e.g. the training resolution, 240x320); "
                        "overrides --max-side")
    p.add_argument("--max-side", type=int, default=None, metavar="PIXELS",
                   help="the network sees each image scaled down (aspect kept) so its longer side is at most "
                        "PIXELS, and the depth map is resized back to the image's size; bounds memory "
                        "(default: 1280; 0 = each image at its own size)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: auto = cuda if available)")
    add_progress_flag(p)
    p.set_defaults(func=_run)


def _floats(text: str, n: int, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UserError(f"{option} expects {n} comma-separated numbers, got '{text}'")
    return values


def parse_options(args: argparse.Namespace):
    """Check the output options up front (exit 2 before any work)."""
    from transferdepth.api.predict import FORMATS, OutputOptions

    formats = [f.strip().lower() for spec in (args.formats or ["png16"]) for f in spec.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"--format: unknown format {bad[0] if bad else '(none)'}; choose from {', '.join(FORMATS)}")
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        raise UserError(f"--cmap: unknown matplotlib colormap '{args.cmap}' (e.g. plasma, viridis, magma, turbo)")
    range_m = None
    if args.range is not None:
        range_m = _floats(args.range, 2, "--range")
        if not 0 <= range_m[0] < range_m[1]:
            raise UserError(f"--range: need 0 <= MIN < MAX metres, got {args.range}")
    from transferdepth.geometry.camera import IntrinsicsError, parse_spec
    from transferdepth.geometry.stereo import StereoOptions

    try:
        intrinsics = parse_spec(args.intrinsics)
    except IntrinsicsError as e:
        raise UserError(str(e)) from None
    try:
        convergence = None if args.convergence == "auto" else float(args.convergence)
        stereo = StereoOptions(args.stereo, args.baseline, convergence)
    except ValueError as e:
        msg = str(e) if str(e).startswith("--") else f"--convergence: need metres, auto or inf, got {args.convergence}"
        raise UserError(msg) from None
    check_numbers(args)
    return OutputOptions(tuple(dict.fromkeys(formats)), args.cmap, range_m, args.colorbar, intrinsics,
                         args.stride, args.ply_ascii, stereo)


def check_writable(out: Path) -> None:
    """Create the output folder and prove a file can be written there (exit 2 otherwise)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        reason = "exists and is not a folder" if isinstance(e, FileExistsError) else (e.strerror or str(e))
        raise UserError(f"output folder {out}: cannot write there ({reason})") from None


def _check_outputs(files: list, videos: list, out: Path, opts, args: argparse.Namespace) -> None:
    """Exit 2 before any work: an output over an input of this run, an existing output without --overwrite,
    or a video with --format ply (no per-frame point clouds; the npz holds every frame in metres)."""
    from transferdepth.api.predict import OutputConflict, check_outputs, output_paths
    from transferdepth.apps.video import output_paths as video_paths
    from transferdepth.apps.video import video_options

    if videos and "ply" in opts.formats:
        raise UserError(f"--format ply: not written for videos ({videos[0][0]}); the video's .depth.npz holds "
                        "every frame in metres with its intrinsics (docs/3d.md); predict videos without ply")
    vopts = video_options(opts, args.batch_size, args.formats)
    planned = [p for path, stem in files for p in output_paths(out / stem, opts.formats)]
    planned += [p for path, stem in videos for p in video_paths(out / stem, vopts).values()]
    try:
        check_outputs(planned, [path for path, _ in files + videos], out, args.overwrite)
    except OutputConflict as e:
        raise UserError(str(e)) from None


# The range of every numeric flag (documented in --help and docs/using.md), checked before any work.
RANGES = {"batch_size": ("--batch-size", 1, 4096, "images"), "stride": ("--stride", 1, 65536, "pixels"),
          "max_pixels": ("--max-pixels", 1, 1_000_000_000, "pixels"), "max_side": ("--max-side", 0, 16384, "pixels")}
MAX_INPUT_SIDE = 8192  # pixels, each side of --input-size (training's limit too)


def check_numbers(args: argparse.Namespace) -> None:
    """Every numeric flag in its range (RANGES; --input-size: each side in [1, 8192] and within --max-pixels),
    the flag named, one line. Before any model loads or file is read."""
    from transferdepth.utils import check_number

    for key, (flag, lo, hi, unit) in RANGES.items():
        value = getattr(args, key, None)
        if value is not None:
            try:
                check_number(value, flag, lo, hi, integer=True, unit=unit)
            except ValueError as e:
                raise UserError(str(e)) from None
    size = parse_size(args.input_size, "--input-size")
    if size is not None:
        limit = args.max_pixels or 40_000_000
        if max(size) > MAX_INPUT_SIDE or size[0] * size[1] > limit:
            raise UserError(f"--input-size must have sides of at most {MAX_INPUT_SIDE} pixels and at most {limit:,} "
                            f"pixels in all (--max-pixels), got '{args.input_size}'")


def _run(args: argparse.Namespace) -> int:
    opts = parse_options(args)
    input_size = parse_size(args.input_size, "--input-size")
    out = Path(args.out)
    check_writable(out)

    from transferdepth.api.estimator import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DepthEstimator
    from transferdepth.api.predict import IMAGE_EXTENSIONS, find_inputs, predict_files, print_summary
    from transferdepth.utils import progress, resolve_device

    sizes = dict(max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, input_size=input_size,
                 max_side=DEFAULT_MAX_SIDE if args.max_side is None else args.max_side or None)
    if args.engine == "onnx":
        if args.device not in (None, "auto", "cpu"):
            raise UserError(f"--device {args.device}: the onnx engine runs on the CPU (use --engine torch)")
        try:
            est = DepthEstimator.from_onnx(args.checkpoint, flip=args.flip, **sizes)
        except ValueError as e:
            raise UserError(str(e)) from None
    else:
        device = resolve_device(args.device, "--device")  # before the checkpoint is read
        est = DepthEstimator.from_pretrained(args.checkpoint, device=device,
                                             flip=True if args.flip is None else args.flip, **sizes)
    from transferdepth.apps.video import VIDEO_EXTENSIONS, predict_videos, split_inputs, video_options

    files, failures = find_inputs(args.paths, args.recursive, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    files, videos, unknown = split_inputs(files)
    failures += unknown
    _check_outputs(files, videos, out, opts, args)
    for f in failures:
        print(f"transferdepth: error: {f}", file=sys.stderr)
    total = len(files) + len(videos) + len(failures)
    with progress(total=len(files), unit="img", desc="predict", mode=None if files else "none") as bar:
        def on_done(path: Path, failure) -> None:
            if failure is not None:
                bar.write(f"transferdepth: error: {failure}", file=sys.stderr)
            bar.update(1)

        failures += predict_files(est, files, out, opts, args.batch_size, on_done)
    if videos:
        with progress(unit="frame", desc="video") as bar:
            def on_video(path: Path, failure) -> None:
                if failure is not None:
                    bar.write(f"transferdepth: error: {failure}", file=sys.stderr)

            failures += predict_videos(est, videos, out, video_options(opts, args.batch_size, args.formats),
                                       on_video, bar.update)
    done = total - len(failures)
    print(f"{done} of {total} inputs done, outputs in {os.fspath(out)}")
    print_summary(failures, total)
    return EXIT_SOME_INPUTS_FAILED if failures else EXIT_OK
