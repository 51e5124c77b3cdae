"""Batch prediction over image files: finding inputs, naming outputs, the loop, point clouds.

The image reader and the depth writers (16-bit PNG mm, .npy metres, colour, PLY) live in
`transferdepth.inference.imageio`; their names stay importable from here.

Output names, for an input `<stem>.<ext>` (in a sub-folder of `out` mirroring the input's folder with
`--recursive`): `<stem>_depth_mm.png`, `<stem>_depth_m.npy`, `<stem>_depth_color.png`, `<stem>.ply`; meshes
(`geometry/mesh.py`) `<stem>.glb`, `<stem>.obj`, `<stem>_mesh.ply`.
Every file is written atomically. One bad input never stops the others: failures are collected. Before
any work `check_outputs` refuses outputs that would replace an input of the same run, or existing files
without `overwrite`. A resumed run (`--resume`) keeps only the `unfinished` inputs (not all outputs there).
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from transferdepth.api.estimator import DepthEstimator, batch_size_for
from transferdepth.geometry.align import AlignError, Alignment, align_depth
from transferdepth.geometry.camera import IntrinsicsError, IntrinsicsSpec, enable_heif
from transferdepth.geometry.camera import resolve as resolve_intrinsics
from transferdepth.geometry.mesh import DEFAULT_MAX_JUMP, MESH_FORMATS, MeshError, depth_to_mesh, write_mesh
from transferdepth.geometry.points import depth_to_points
from transferdepth.geometry.stereo import StereoOptions, write_stereo
from transferdepth.inference.imageio import (  # noqa: F401  (colorize, depth_to_mm: public here too)
    IMAGE_EXTENSIONS,
    ImageError,
    colorize,
    depth_to_mm,
    load_image,
    write_color,
    write_npy,
    write_ply,
    write_png16,
)

FORMATS = ("png16", "npy", "color", "ply", "stereo") + MESH_FORMATS
SUFFIXES = {"png16": "_depth_mm.png", "npy": "_depth_m.npy", "color": "_depth_color.png", "ply": ".ply",
            "stereo": "_stereo.png", "glb": ".glb", "obj": ".obj", "mesh.ply": "_mesh.ply"}


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
    mesh_max_jump: float = DEFAULT_MAX_JUMP  # glb, obj, mesh.ply: relative depth jump that cuts a triangle


@dataclass
class Failure:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass
class AlignOptions:
    """Metres from known points (`geometry.align`, docs/3d.md) for the inputs in `targets` (input path ->
    target: a PNG16 mm / CSV file or KnownPoints); `fits` collects each aligned input's fit as it is written."""

    targets: dict[Path, Any]
    mode: str = "scale"
    robust: bool = False
    space: str | None = None
    fits: dict[Path, Alignment] = field(default_factory=dict)


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


# --- output names: never over an input, an existing file only with overwrite ------------------------

class OutputConflict(ValueError):
    """Outputs that would replace an input of the same run, or existing files without overwrite (one line)."""


def output_paths(base: Path, formats: Iterable[str]) -> list[Path]:
    """The files `write_outputs` writes for the output stem `base` (`out/<sub>/<stem>`)."""
    return [base.with_name(base.name + SUFFIXES[fmt]) for fmt in formats]


def check_outputs(planned: Iterable[Path], inputs: Iterable[Path], out_dir: Path, overwrite: bool = False) -> None:
    """Before any work: refuse (OutputConflict) when an output would be written over an input of this run
    (never allowed, even with `overwrite`: it would be read back as an input) or over an existing file
    (allowed only with `overwrite`, as training's `--overwrite`). The message names `--out` and the first file."""
    sources = {Path(p).resolve(): Path(p) for p in inputs}
    planned = list(planned)
    for path in planned:
        if path.resolve() in sources:
            raise OutputConflict(f"--out {out_dir}: the output {path.name} would be written over the input "
                                 f"{sources[path.resolve()]} of this run; choose another --out (inputs are "
                                 "never overwritten, even with --overwrite)")
    if overwrite:
        return
    existing = [p for p in planned if os.path.lexists(p)]
    if existing:
        more = f" and {len(existing) - 1} more output files" if len(existing) > 1 else ""
        raise OutputConflict(f"--out {out_dir}: {existing[0]}{more} {'exist' if more else 'exists'} already; pass "
                             "--overwrite to replace them, or choose another --out")


# --- resuming: skip inputs whose outputs are all there, remove what a killed run left ---------------

def unfinished(items: Iterable[tuple[Path, Path]], out_dir: Path, outputs: Callable[[Path], Iterable[Path]]
               ) -> list[tuple[Path, Path]]:
    """The (file, output stem) items that still need work: not every one of `outputs(out_dir / stem)` exists.

    Outputs are renamed into place whole (`utils.atomic_write`), so one that exists is complete, whichever
    process or run wrote it. First the temporaries a killed run left beside these items' outputs are removed
    (`remove_stale_temps`); only these items' names are touched, so other processes' work is left alone."""
    items = list(items)
    remove_stale_temps([(out_dir / stem, list(outputs(out_dir / stem))) for _, stem in items])
    return [(f, stem) for f, stem in items if not all(os.path.exists(p) for p in outputs(out_dir / stem))]


_RANDOM_PART = re.compile(r"\.[a-z0-9_]{8}(\.(tmp|old|f16))$")  # tempfile's 8 random characters


def remove_stale_temps(items: Iterable[tuple[Path, list[Path]]]) -> int:
    """For (output stem, its output paths): remove `.<output name>.XXXXXXXX.tmp` / `.old` (`utils.atomic_write`,
    `atomic_folder`), `.<output name>.tmp` (a video's stereo) and `.<stem>.XXXXXXXX.f16` (a video's raw
    frames) beside them, files or folders; returns how many were removed. One listing per folder."""
    import shutil

    wanted: dict[Path, set[str]] = {}
    for base, paths in items:
        wanted.setdefault(base.parent, set()).add(f".{base.name}.f16")
        for p in paths:
            wanted.setdefault(p.parent, set()).update(f".{p.name}{s}" for s in (".tmp", ".old"))
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if entry in names or (entry.startswith(".") and _RANDOM_PART.sub(r"\1", entry) in names):
                path = folder / entry
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
    return removed


# --- writers -----------------------------------------------------------------------------------

def write_outputs(base: Path, depth_m: np.ndarray, rgb: np.ndarray, opts: OutputOptions,
                  source: Path | None = None) -> list[Path]:
    """Write every format of `opts` for one image next to the stem `base`; returns the paths written.
    `source`: the image file, read for its EXIF focal length (intrinsics for ply and stereo)."""
    written = []
    k = mesh = None
    if any(f in ("ply", "stereo") + MESH_FORMATS for f in opts.formats):
        k = resolve_intrinsics(opts.intrinsics, depth_m.shape[1], depth_m.shape[0], source)
    for fmt, path in zip(opts.formats, output_paths(base, opts.formats)):
        if fmt == "png16":
            write_png16(path, depth_m)
        elif fmt == "npy":
            write_npy(path, depth_m)
        elif fmt == "color":
            write_color(path, depth_m, opts.cmap, opts.range_m, opts.colorbar)
        elif fmt == "stereo":
            write_stereo(path, rgb, depth_m, k.fx, opts.stereo or StereoOptions())
        elif fmt in MESH_FORMATS:  # one triangulation for all mesh formats; axes: geometry/mesh.py
            mesh = mesh or depth_to_mesh(depth_m, rgb, k.as_tuple(), opts.mesh_max_jump, opts.stride)
            write_mesh(path, mesh, fmt, rgb, f"{k.comment()}\nmesh max jump {opts.mesh_max_jump:g}",
                       opts.ply_ascii)
        else:
            xyz, colors = depth_to_points(depth_m, rgb, k.as_tuple(), opts.stride)
            write_ply(path, xyz, colors, opts.ply_ascii,
                      f"camera frame, metres: x right, y down, z forward\n{k.comment()}")
        written.append(path)
    return written


# --- the loop -----------------------------------------------------------------------------------


def predict_files(estimator: DepthEstimator, files: list[tuple[Path, Path]], out_dir: Path,
                  opts: OutputOptions, batch_size: int | None = None,
                  on_done: Callable[[Path, Failure | None], None] | None = None,
                  align: AlignOptions | None = None) -> list[Failure]:
    """Predict every file and write its outputs under `out_dir`; returns the failures (others still run).
    `align`: the files in `align.targets` are aligned to their known points before anything is written.

    Images are read one by one and grouped by size; a group is run as one batch when it holds
    `batch_size` images (and at the end), so memory stays bounded by sizes x batch_size images; None: by
    the estimator's device (`api.estimator.default_batch_size`: 1 on the CPU, 4 on a GPU).
    `on_done(file, failure_or_None)` is called once per file (progress, messages).
    """
    batch_size = batch_size or batch_size_for(estimator)
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
                if align is not None and job.path in align.targets:
                    depth, align.fits[job.path] = align_depth(depth, align.targets[job.path], align.mode,
                                                              robust=align.robust, space=align.space)
                write_outputs(job.base, depth, rgb, opts, job.path)
                done(job.path, None)
            except (IntrinsicsError, MeshError, AlignError) as e:
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
