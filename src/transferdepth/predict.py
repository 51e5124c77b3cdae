"""Batch prediction over image files and the output writers (16-bit PNG mm, .npy metres, colour, PLY).

Output names, for an input `<stem>.<ext>` (in a sub-folder of `out` mirroring the input's folder with
`--recursive`): `<stem>_depth_mm.png`, `<stem>_depth_m.npy`, `<stem>_depth_color.png`, `<stem>.ply`.
Every file is written atomically. One bad input never stops the others: failures are collected.
"""

from __future__ import annotations

import glob
import io
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from transferdepth.api import DepthEstimator, ImageError, load_image
from transferdepth.camera import IntrinsicsError, IntrinsicsSpec, enable_heif
from transferdepth.camera import resolve as resolve_intrinsics
from transferdepth.stereo import StereoOptions, write_stereo
from transferdepth.utils import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                    ".pgm", ".ppm", ".pnm", ".pbm", ".heic", ".heif")
FORMATS = ("png16", "npy", "color", "ply", "stereo")
SUFFIXES = {"png16": "_depth_mm.png", "npy": "_depth_m.npy", "color": "_depth_color.png", "ply": ".ply",
            "stereo": "_stereo.png"}
# NYU Depth V2 Kinect colour camera, pixels at 640x480 (Silberman et al. 2012 toolbox)
NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)
NYU_SIZE = (640, 480)  # (W, H)


@dataclass
class OutputOptions:
    """What to write per image. range_m: fixed (min, max) metres for colour, None = each image's own."""

    formats: tuple[str, ...] = ("png16",)
    cmap: str = "plasma"
    range_m: tuple[float, float] | None = None
    colorbar: bool = False
    # camera.resolve: None = auto (EXIF focal, else the default lens), or fx, fy, cx, cy at the input's size
    intrinsics: IntrinsicsSpec | tuple[float, float, float, float] | None = None
    stride: int = 1
    ply_ascii: bool = False
    stereo: StereoOptions | None = None  # for the "stereo" format (None: StereoOptions())


@dataclass
class Failure:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass
class Job:
    """One input file and the output path stem (`out/<sub>/<stem>`) its outputs are named after."""

    path: Path
    base: Path


# --- inputs -------------------------------------------------------------------------------------


def find_inputs(paths: Iterable[str], recursive: bool = False, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
                ) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """PATHs (files, folders, globs) -> [(file, relative output stem)], [failures for PATHs that found nothing].

    A file named explicitly is taken whatever its extension; folders give the image files inside
    (sub-folders too with `recursive`, mirrored in the output stem); globs may use `**` with `recursive`.
    """
    found: list[tuple[Path, Path]] = []
    failures: list[Failure] = []
    for spec in paths:
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in (p.rglob("*") if recursive else p.iterdir())
                           if f.is_file() and f.suffix.lower() in extensions and not f.name.startswith("."))
            if not files:
                failures.append(Failure(spec, f"no image files in folder ({', '.join(extensions)})"
                                        + ("" if recursive else "; use --recursive for sub-folders")))
            found += [(f, f.relative_to(p).with_suffix("")) for f in files]
        elif p.exists() or os.path.islink(p):
            found.append((p, Path(p.stem)))
        elif glob.has_magic(spec):
            files = sorted(Path(f) for f in glob.glob(spec, recursive=recursive) if Path(f).is_file())
            if not files:
                failures.append(Failure(spec, "no files match this pattern"))
            found += [(f, Path(f.stem)) for f in files]
        else:
            failures.append(Failure(spec, "no such file or folder"))
    return _unique_names(found, failures), failures


def _unique_names(found: list[tuple[Path, Path]], failures: list[Failure]) -> list[tuple[Path, Path]]:
    """Drop repeated files; where two inputs share a stem (a.jpg, a.png) name both `<stem>_<ext>`."""
    seen: set[Path] = set()
    unique = []
    for f, stem in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, stem))
    counts: dict[Path, int] = {}
    for _, stem in unique:
        counts[stem] = counts.get(stem, 0) + 1
    result, taken = [], set()
    for f, stem in unique:
        if counts[stem] > 1:
            stem = stem.with_name(f"{stem.name}_{f.suffix.lstrip('.').lower()}")
        if stem in taken:
            failures.append(Failure(str(f), f"its output name '{stem}' is already used by another input"))
            continue
        taken.add(stem)
        result.append((f, stem))
    return result


# --- writers -----------------------------------------------------------------------------------

def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres, round(d * 1000) clipped to [1, 65535]; 0 only where depth is not finite."""
    d = np.asarray(depth_m, dtype=np.float64)
    finite = np.isfinite(d)
    mm = np.clip(np.rint(np.where(finite, d, 0.0) * 1000.0), 1, 65535).astype(np.uint16)
    mm[~finite] = 0
    return mm


def write_png16(path: Path, depth_m: np.ndarray) -> None:
    """16-bit greyscale PNG of depth in millimetres (see `depth_to_mm`)."""
    with atomic_write(path) as tmp:
        Image.fromarray(depth_to_mm(depth_m)).save(tmp, format="PNG")


def write_npy(path: Path, depth_m: np.ndarray) -> None:
    """float32 HxW metres as .npy."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would append .npy
        np.save(f, np.asarray(depth_m, dtype=np.float32))


def colorize(depth_m: np.ndarray, cmap: str = "plasma",
             range_m: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Depth (metres) -> uint8 HxWx3 through a matplotlib colormap; returns the image and the range used."""
    import matplotlib

    d = np.asarray(depth_m, dtype=np.float64)
    if range_m is None:
        finite = d[np.isfinite(d)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        lo, hi = range_m
    t = np.clip((np.nan_to_num(d, nan=lo) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)
    return lut[np.rint(t * 255).astype(np.int64)], (lo, hi)


def write_color(path: Path, depth_m: np.ndarray, cmap: str = "plasma",
                range_m: tuple[float, float] | None = None, colorbar: bool = False) -> None:
    """Colourised depth PNG, HxW pixels; with `colorbar`, a figure with a labelled bar (metres) beside it."""
    rgb, (lo, hi) = colorize(depth_m, cmap, range_m)
    with atomic_write(path) as tmp:
        if not colorbar:
            Image.fromarray(rgb).save(tmp, format="PNG")
            return
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure

        h, w = rgb.shape[:2]
        dpi, margin = 100, 110  # the image keeps its pixels; the bar and its labels go in a right margin
        total_w = w + margin
        fig = Figure(figsize=(total_w / dpi, h / dpi), dpi=dpi)
        ax = fig.add_axes((0.0, 0.0, w / total_w, 1.0))
        ax.imshow(rgb, aspect="auto", interpolation="nearest")
        ax.set_axis_off()
        cax = fig.add_axes(((w + 8) / total_w, 0.05, 14 / total_w, 0.9))
        bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap), cax=cax)
        bar.set_label("depth (m)")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        tmp.write_bytes(buf.getvalue())


def scaled_intrinsics(size_wh: tuple[int, int],
                      intrinsics: tuple[float, float, float, float] | None = None) -> tuple[float, ...]:
    """fx, fy, cx, cy in pixels for an image of size (W, H): the given ones, or NYU's Kinect scaled to it."""
    if intrinsics is not None:
        return tuple(float(v) for v in intrinsics)
    sx, sy = size_wh[0] / NYU_SIZE[0], size_wh[1] / NYU_SIZE[1]
    fx, fy, cx, cy = NYU_INTRINSICS
    return fx * sx, fy * sy, cx * sx, cy * sy


def depth_to_points(depth_m: np.ndarray, rgb: np.ndarray, intrinsics: tuple[float, ...],
                    stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every `stride`-th pixel (u, v) with depth d to the camera frame, metres:
    x = (u - cx) d / fx, y = (v - cy) d / fy, z = d (x right, y down, z forward; u, v = column, row).

    Returns float32 (N,3) points and uint8 (N,3) colours; pixels with non-finite or non-positive depth are left out.
    """
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:depth_m.shape[0]:stride, 0:depth_m.shape[1]:stride]
    d = np.asarray(depth_m, dtype=np.float64)[v, u]
    ok = np.isfinite(d) & (d > 0)
    u, v, d = u[ok], v[ok], d[ok]
    xyz = np.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], axis=1).astype(np.float32)
    return xyz, rgb[v, u].astype(np.uint8)


def write_ply(path: Path, xyz: np.ndarray, colors: np.ndarray, ascii: bool = False, comment: str = "") -> None:
    """PLY point cloud: float x, y, z (metres) + uchar red, green, blue; binary little-endian or ASCII."""
    fmt = "ascii" if ascii else "binary_little_endian"
    header = ["ply", f"format {fmt} 1.0"] + [f"comment {c}" for c in comment.splitlines() if c]
    header += [f"element vertex {len(xyz)}", "property float x", "property float y", "property float z",
               "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if ascii:
            for (x, y, z), (r, g, b) in zip(xyz.tolist(), colors.tolist()):
                f.write(f"{x:.6g} {y:.6g} {z:.6g} {r} {g} {b}\n".encode("ascii"))
        else:
            rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("r", "u1"), ("g", "u1"), ("b", "u1")])
            rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
            rec["r"], rec["g"], rec["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
            f.write(rec.tobytes())


def write_outputs(base: Path, depth_m: np.ndarray, rgb: np.ndarray, opts: OutputOptions,
                  source: Path | None = None) -> list[Path]:
    """Write every format of `opts` for one image next to the stem `base`; returns the paths written.
    `source`: the image file, read for its EXIF focal length (intrinsics for ply and stereo)."""
    written = []
    k = None
    if "ply" in opts.formats or "stereo" in opts.formats:
        k = resolve_intrinsics(opts.intrinsics, depth_m.shape[1], depth_m.shape[0], source)
    for fmt in opts.formats:
        path = base.with_name(base.name + SUFFIXES[fmt])
        if fmt == "png16":
            write_png16(path, depth_m)
        elif fmt == "npy":
            write_npy(path, depth_m)
        elif fmt == "color":
            write_color(path, depth_m, opts.cmap, opts.range_m, opts.colorbar)
        elif fmt == "stereo":
            write_stereo(path, rgb, depth_m, k.fx, opts.stereo or StereoOptions())
        else:
            xyz, colors = depth_to_points(depth_m, rgb, k.as_tuple(), opts.stride)
            write_ply(path, xyz, colors, opts.ply_ascii,
                      f"camera frame, metres: x right, y down, z forward\n{k.comment()}")
        written.append(path)
    return written


# --- the loop -----------------------------------------------------------------------------------


def predict_files(estimator: DepthEstimator, files: list[tuple[Path, Path]], out_dir: Path,
                  opts: OutputOptions, batch_size: int = 4,
                  on_done: Callable[[Path, Failure | None], None] | None = None) -> list[Failure]:
    """Predict every file and write its outputs under `out_dir`; returns the failures (others still run).

    Images are read one by one and grouped by size; a group is run as one batch when it holds
    `batch_size` images (and at the end), so memory stays bounded by sizes x batch_size images.
    `on_done(file, failure_or_None)` is called once per file (progress, messages).
    """
    failures: list[Failure] = []
    pending: dict[tuple[int, int], list[tuple[Job, np.ndarray]]] = {}
    enable_heif()  # HEIC/HEIF photos when pillow-heif is installed

    def done(job_path: Path, failure: Failure | None) -> None:
        if failure is not None:
            failures.append(failure)
        if on_done is not None:
            on_done(job_path, failure)

    def flush(key: tuple[int, int]) -> None:
        group = pending.pop(key)
        try:
            depths = estimator.predict_rgb([rgb for _, rgb in group])
        except RuntimeError as e:  # e.g. out of memory: these files fail, the rest go on
            for job, _ in group:
                done(job.path, Failure(str(job.path), f"prediction failed: {str(e).splitlines()[0]}"))
            return
        for (job, rgb), depth in zip(group, depths):
            try:
                write_outputs(job.base, depth, rgb, opts, job.path)
                done(job.path, None)
            except IntrinsicsError as e:
                done(job.path, Failure(str(job.path), str(e)))
            except OSError as e:
                where = e.filename or job.base.parent
                done(job.path, Failure(str(job.path), f"cannot write {where}: {e.strerror or e}"))

    for path, stem in files:
        try:
            rgb = load_image(path, estimator.max_pixels)
        except ImageError as e:
            done(path, Failure(e.name, e.reason))
            continue
        key = rgb.shape[:2]
        pending.setdefault(key, []).append((Job(path, out_dir / stem), rgb))
        if len(pending[key]) >= batch_size:
            flush(key)
    for key in list(pending):
        flush(key)
    return failures


def print_summary(failures: list[Failure], total: int, file: TextIO | None = None) -> None:
    """'N of M inputs failed:' and one line per failure, to stderr (nothing when all succeeded)."""
    file = file or sys.stderr
    if failures:
        print(f"{len(failures)} of {total} inputs failed:", file=file)
        for f in failures:
            print(f"  {f}", file=file)
