"""`transferdepth predict PATH... --checkpoint CKPT --out DIR`: depth maps for image files.

Exit status: 0 all inputs done, 1 some inputs failed (listed at the end; the others were written), 2 usage,
device or checkpoint errors (nothing predicted). Under `torchrun --nproc_per_node N -m transferdepth
predict ...` each process takes every N-th input (`inference.distributed.shard`) and one summary covers all.
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
                   "with --engine onnx also a .onnx file from `transferdepth export`, with --engine openvino "
                   "a .onnx or an IR .xml")
    from transferdepth.deploy.engines import CHOICES  # imports no torch

    p.add_argument("--engine", choices=CHOICES, default="torch",
                   help="torch (PyTorch, default); compile (torch.compile, CPU; compiles on the first image of each "
                        "size); onnx (onnxruntime, CPU); openvino (OpenVINO, CPU); openvino-bf16 (bfloat16, CPUs "
                        "with AVX-512 BF16 or AMX; not the same metres); auto (the fastest here, measured once per "
                        "model and machine and cached; docs/using.md \"Engines\"). A checkpoint directory is "
                        "exported at start for onnx and openvino")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--format", action="append", default=None, dest="formats", metavar="FMT",
                   help="png16 (millimetres, uint16), npy (float32 metres), color, ply (point cloud), stereo, "
                        "meshes glb (textured, glTF y-up), obj, mesh.ply; repeat or comma-separate (default: png16)")
    p.add_argument("--recursive", action="store_true", help="also images in sub-folders (and ** in globs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist already (default: refuse before any work); an output "
                        "that would replace an input of the same run is refused even so")
    p.add_argument("--resume", action="store_true",
                   help="skip inputs whose outputs (every --format) exist already, redo the others (after a "
                        "killed or failed run; any number of processes, see docs/using.md)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images (or video frames) of the same size per forward pass (default: 4 on a GPU, 1 on "
                        "the CPU, where larger batches ran up to 2.8x slower per image: docs/using.md, 'Batch size on the CPU')")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average with the mirrored image's prediction (default: on; a --flip ONNX export "
                        "always averages inside its graph)")
    p.add_argument("--cmap", default="plasma", help="matplotlib colormap for --format color")
    p.add_argument("--range", default=None, metavar="MIN,MAX", help="fixed colour range in metres "
                   "(default: each image's own min..max)")
    p.add_argument("--colorbar", action="store_true", help="add a colour bar (metres) to colour images")
    p.add_argument("--intrinsics", default="auto", metavar="auto|exif|fov:DEG|nyu|FX,FY,CX,CY",
                   help="camera for PLY, meshes and stereo, pixels at the input's resolution: auto (default) = EXIF "
                        "focal length, else a 26 mm-equivalent lens, square pixels; see docs/3d.md")
    p.add_argument("--stereo", default="sbs", choices=("sbs", "tab", "anaglyph"),
                   help="layout for --format stereo: side by side, top and bottom, red-cyan anaglyph")
    p.add_argument("--baseline", type=float, default=0.065, help="stereo eye separation, metres (default 0.065)")
    p.add_argument("--convergence", default="auto", metavar="METRES|auto|inf",
                   help="stereo zero-parallax distance (default auto: the median depth of the image / first frames)")
    p.add_argument("--stride", type=int, default=1, help="PLY and meshes: every N-th pixel in x and y")
    p.add_argument("--mesh-max-jump", type=float, default=0.05, metavar="FRACTION",
                   help="meshes: drop a triangle whose farthest corner is more than FRACTION farther than its "
                        "nearest, a depth discontinuity (default 0.05 = 5 %%; docs/3d.md)")
    p.add_argument("--ply-ascii", action="store_true",
                   help="ASCII PLY, point cloud and mesh.ply (default: binary little-endian)")
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
    p.add_argument("--temporal", action="store_true",
                   help="videos: steadier depth over time (each frame's scale aligned to a running reference on "
                        "the pixels that stay consistent; docs/3d.md 'Steady video')")
    p.add_argument("--temporal-strength", type=float, default=None, metavar="S",
                   help="videos: how strongly --temporal holds the scale, 0 (off) to 0.95 (default 0.7; "
                        "implies --temporal)")
    p.add_argument("--align-to", default=None, metavar="FILE",
                   help="known metres for ONE input image: a 16-bit PNG in mm at its size (0 = unknown) or a CSV "
                        "of x,y,metres (pixels of the image as displayed); the depth is fitted to them (docs/3d.md)")
    p.add_argument("--align", default=None, choices=("scale", "scale-shift"),
                   help="the --align-to fit: scale (least squares in depth; default) or scale-shift (in "
                        "disparity = 1/m, as MiDaS; see --align-space)")
    p.add_argument("--align-space", default=None, choices=("depth", "disparity"),
                   help="the space of the --align fit (default: depth for scale, disparity for scale-shift)")
    p.add_argument("--robust", action="store_true",
                   help="--align-to: fit by RANSAC, ignoring known points off by more than ~10%% (scikit-learn)")
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
    mesh_max_jump = _check_mesh(formats, args)
    return OutputOptions(tuple(dict.fromkeys(formats)), args.cmap, range_m, args.colorbar, intrinsics,
                         args.stride, args.ply_ascii, stereo, mesh_max_jump=mesh_max_jump)


def _check_mesh(formats: list[str], args: argparse.Namespace) -> float:
    """--mesh-max-jump in range, and trimesh installed when a mesh format is asked for (exit 2 before work)."""
    from transferdepth.geometry.mesh import MESH_FORMATS, MeshError, check_max_jump

    try:
        value = check_max_jump(args.mesh_max_jump)
        if any(f in MESH_FORMATS for f in formats):
            import importlib.util

            if importlib.util.find_spec("trimesh") is None:
                raise MeshError("--format glb, obj, mesh.ply need trimesh: pip install 'transferdepth[3d]'")
    except MeshError as e:
        raise UserError(str(e)) from None
    return value


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
    or a video with --format ply or a mesh format (no per-frame point clouds or meshes; the npz holds every
    frame in metres)."""
    from transferdepth.api.predict import OutputConflict, check_outputs, output_paths
    from transferdepth.apps.video import output_paths as video_paths
    from transferdepth.apps.video import video_options
    from transferdepth.geometry.mesh import MESH_FORMATS

    if videos and "ply" in opts.formats:
        raise UserError(f"--format ply: not written for videos ({videos[0][0]}); the video's .depth.npz holds "
                        "every frame in metres with its intrinsics (docs/3d.md); predict videos without ply")
    mesh = [f for f in opts.formats if f in MESH_FORMATS]
    if videos and mesh:
        raise UserError(f"--format {mesh[0]}: meshes are not written for videos ({videos[0][0]}); the video's "
                        ".depth.npz holds every frame in metres with its intrinsics (docs/3d.md); predict videos "
                        "without glb, obj, mesh.ply")
    vopts = video_options(opts, args.batch_size, args.formats)
    planned = [p for path, stem in files for p in output_paths(out / stem, opts.formats)]
    planned += [p for path, stem in videos for p in video_paths(out / stem, vopts).values()]
    error = None
    try:  # with --resume the outputs there are kept (complete) or written again (unfinished)
        check_outputs(planned, [path for path, _ in files + videos], out, args.overwrite or args.resume)
    except OutputConflict as e:
        error = str(e)
    from transferdepth.inference.distributed import gather

    errors = [e for e in gather(error) if e]  # under torchrun no process starts before every check has passed
    if errors:
        raise UserError(errors[0])


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


# How long a process waits for the slowest one (the summary at the end); torch's default is 30 minutes
RANK_TIMEOUT_S = 7 * 24 * 3600


def _run(args: argparse.Namespace) -> int:
    """Under torchrun: join the process group (gloo: only small results are exchanged) and predict this
    process's share; without it, one process predicts everything."""
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite: choose one (--resume keeps the complete outputs there, "
                        "--overwrite replaces every output)")
    from datetime import timedelta

    from transferdepth.inference.distributed import dist_setup, dist_teardown

    rank, world, local_rank, owned = dist_setup("cpu", timedelta(seconds=RANK_TIMEOUT_S))
    try:
        return _predict(args, rank, world, local_rank)
    finally:
        dist_teardown(owned)


def _rank_device(name: str | None, local_rank: int, world: int):
    """This process's device: cuda:LOCAL_RANK for cuda or auto on a CUDA machine (as training); on the CPU
    under torchrun, torch gets the cores / processes on this machine threads (torchrun's default is 1)."""
    import torch

    from transferdepth.inference.distributed import cpu_threads, rank_device

    device = rank_device(name, local_rank)
    if world > 1 and device.type == "cpu":
        torch.set_num_threads(cpu_threads())
    return device


def _share(files: list, videos: list, failures: list, out: Path, opts, args: argparse.Namespace, rank: int,
           world: int) -> tuple[list, list, list, int]:
    """This process's share: every world-th image, video and input failure from `rank` on (all of them
    without torchrun); with --resume less the inputs whose outputs all exist. (files, videos, failures,
    skipped)."""
    from transferdepth.api.predict import output_paths, unfinished
    from transferdepth.apps.video import output_paths as video_paths
    from transferdepth.apps.video import video_options
    from transferdepth.inference.distributed import shard

    files, videos, failures = (shard(items, rank, world) for items in (files, videos, failures))
    if not args.resume:
        return files, videos, failures, 0
    vopts = video_options(opts, args.batch_size, args.formats)
    todo = unfinished(files, out, lambda base: output_paths(base, opts.formats))
    vtodo = unfinished(videos, out, lambda base: video_paths(base, vopts).values())
    return todo, vtodo, failures, len(files) - len(todo) + len(videos) - len(vtodo)


def _summary(out: Path, total: int, skipped: int, failures: list, resume: bool, rank: int, world: int) -> int:
    """Every process's counts and failures gathered, one summary printed by process 0; every process
    returns the same exit status (1 when an input failed in any of them)."""
    from transferdepth.api.predict import print_summary
    from transferdepth.inference.distributed import gather

    parts = gather((total, skipped, failures))
    total, skipped = sum(p[0] for p in parts), sum(p[1] for p in parts)
    failures = [f for p in parts for f in p[2]]
    if rank == 0:
        done = total - skipped - len(failures)
        counts = (f", {skipped} skipped (outputs there already)" if resume else "") + (
            f", {world} processes" if world > 1 else "")
        print(f"{done} of {total} inputs done{counts}, outputs in {os.fspath(out)}")
        print_summary(failures, total)
    return EXIT_SOME_INPUTS_FAILED if failures else EXIT_OK


def temporal_strength(args: argparse.Namespace) -> float | None:
    """--temporal / --temporal-strength -> the video stabiliser's strength, or None (off); exit 2 out of range."""
    from transferdepth.apps.temporal import DEFAULT_STRENGTH, check_strength

    if args.temporal_strength is None:
        return DEFAULT_STRENGTH if args.temporal else None
    try:
        return check_strength(args.temporal_strength, "--temporal-strength")
    except ValueError as e:
        raise UserError(str(e)) from None


def read_align_target(args: argparse.Namespace):
    """--align-to's known points (KnownPoints), read and counted before any model loads; None without it.
    --align / --align-space / --robust without --align-to, a bad file or too few points: exit 2, one line."""
    if args.align_to is None:
        used = [f for f, v in (("--align", args.align), ("--align-space", args.align_space),
                               ("--robust", args.robust)) if v]
        if used:
            raise UserError(f"{used[0]}: give --align-to FILE (the known metres) too")
        return None
    from transferdepth.geometry.align import AlignError, check_count, check_mode, read_target

    mode = args.align or "scale"
    try:
        check_mode(mode, args.align_space)
        return check_count(read_target(args.align_to), mode, args.robust)
    except AlignError as e:
        raise UserError(f"--align-to {e}") from None


def align_options(args: argparse.Namespace, points, files: list, videos: list, max_pixels: int | None):
    """AlignOptions for the one input image, its points checked inside it (exit 2, one line); None without
    --align-to. One --align-to file is the known points of one image: more inputs, or a video, are refused."""
    if points is None:
        return None
    if len(files) != 1 or videos:
        raise UserError(f"--align-to {args.align_to}: its points are pixels of one image; give exactly one image "
                        f"to predict (got {len(files)} images and {len(videos)} videos)")
    from transferdepth.api.predict import AlignOptions
    from transferdepth.geometry.align import AlignError, check_inside
    from transferdepth.inference.imageio import ImageError, load_image

    path = files[0][0]
    try:
        check_inside(points, load_image(path, max_pixels).shape[:2])
    except ImageError as e:
        raise UserError(str(e)) from None
    except AlignError as e:
        raise UserError(f"--align-to {e} ({path})") from None
    return AlignOptions({path: points}, args.align or "scale", args.robust, args.align_space)


def _predict(args: argparse.Namespace, rank: int, world: int, local_rank: int) -> int:
    opts = parse_options(args)
    target = read_align_target(args)
    temporal = temporal_strength(args)
    input_size = parse_size(args.input_size, "--input-size")
    out = Path(args.out)
    check_writable(out)

    from transferdepth.api.estimator import (
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_SIDE,
        DepthEstimator,
        default_batch_size,
    )
    from transferdepth.api.predict import IMAGE_EXTENSIONS, find_inputs, predict_files
    from transferdepth.inference.distributed import cpu_threads
    from transferdepth.utils import progress

    sizes = dict(max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, input_size=input_size,
                 max_side=DEFAULT_MAX_SIDE if args.max_side is None else args.max_side or None)
    if args.engine != "torch":
        if args.device not in (None, "auto", "cpu") and args.engine != "auto":
            raise UserError(f"--device {args.device}: the {args.engine} engine runs on the CPU (use --engine torch)")
        device = _rank_device(args.device, local_rank, world) if args.engine == "auto" else None
        try:
            est = DepthEstimator.from_engine(args.engine, args.checkpoint, device=device, flip=args.flip,
                                             threads=cpu_threads() if world > 1 else None, **sizes)
        except ValueError as e:
            raise UserError(str(e)) from None
    else:
        device = _rank_device(args.device, local_rank, world)  # before the checkpoint is read
        est = DepthEstimator.from_pretrained(args.checkpoint, device=device,
                                             flip=True if args.flip is None else args.flip, **sizes)
    args.batch_size = args.batch_size or default_batch_size(est.device)  # None: by device
    from transferdepth.apps.video import VIDEO_EXTENSIONS, predict_videos, split_inputs, video_options

    files, failures = find_inputs(args.paths, args.recursive, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    files, videos, unknown = split_inputs(files)
    failures += unknown
    _check_outputs(files, videos, out, opts, args)
    align = align_options(args, target, files, videos, est.max_pixels)
    files, videos, failures, skipped = _share(files, videos, failures, out, opts, args, rank, world)
    for f in failures:
        print(f"transferdepth: error: {f}", file=sys.stderr)
    total = len(files) + len(videos) + len(failures) + skipped
    with progress(total=len(files), unit="img", desc="predict", mode=None if files and not rank else "none") as bar:
        def on_done(path: Path, failure) -> None:
            if failure is not None:
                bar.write(f"transferdepth: error: {failure}", file=sys.stderr)
            bar.update(1)

        failures += predict_files(est, files, out, opts, args.batch_size, on_done, align=align)
        for path, fit in (align.fits.items() if align else ()):
            bar.write(f"{path}: aligned to {args.align_to}: {fit.describe()}")
    if videos:
        with progress(unit="frame", desc="video", mode=None if not rank else "none") as bar:
            def on_video(path: Path, failure) -> None:
                if failure is not None:
                    bar.write(f"transferdepth: error: {failure}", file=sys.stderr)

            failures += predict_videos(est, videos, out,
                                       video_options(opts, args.batch_size, args.formats, temporal),
                                       on_video, bar.update)
    return _summary(out, total, skipped, failures, args.resume, rank, world)
