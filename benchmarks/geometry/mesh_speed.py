"""What `predict --format glb` adds to a prediction: seconds to turn one photo's depth map into a GLB file.

    PYTHONPATH=src python benchmarks/geometry/mesh_speed.py [--size 480x640] [--rounds 7] [--formats glb,obj,mesh.ply]

The work timed is exactly what `api.predict.write_outputs` does for the format after the network has run:
resolve the intrinsics (reading the photo's EXIF), triangulate the pixel grid (`geometry.mesh.depth_to_mesh`,
default --mesh-max-jump), encode the file with trimesh (GLB: the photo as a PNG texture) and write it
atomically to a temporary folder on the local disk. Input: a procedural room (`data/procedural.py`, NYU's
camera, exact depth with real discontinuities at furniture edges) saved as a PNG photo. One thread (as the
CLI's writing runs). Prints the first call in a fresh process separately (it imports trimesh), then the
median of --rounds warm calls with its min and max, and the share of triangulate / encode + write. Time it on
a quiet machine: other work on the CPU slows every figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the photo (default 480x640)")
    parser.add_argument("--rounds", type=int, default=7, help="warm calls timed per format (median printed)")
    parser.add_argument("--formats", default="glb", help="comma-separated mesh formats (default glb)")
    args = parser.parse_args()
    h, w = parse_size(args.size)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())

    import numpy as np
    from PIL import Image

    from transferdepth.api.predict import OutputOptions  # noqa: F401 (torch: imported by any prediction)
    from transferdepth.data.procedural import ProceduralScenes

    scene = ProceduralScenes(1, seed=0, height=h, width=w)[0]
    rgb, depth = scene["rgb"], scene["depth"].astype(np.float32)
    depth = np.where(scene["valid"], depth, np.nan).astype(np.float32)
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, 1 thread, "
          f"{w}x{h} procedural room, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.png"
        Image.fromarray(rgb).save(photo)
        for fmt in formats:
            run_format(fmt, rgb, depth, photo, Path(tmp), args.rounds)


def run_format(fmt: str, rgb, depth, photo: Path, tmp: Path, rounds: int) -> None:
    from transferdepth.api.predict import OutputOptions, write_outputs
    from transferdepth.geometry.camera import resolve
    from transferdepth.geometry.mesh import DEFAULT_MAX_JUMP, depth_to_mesh

    opts = OutputOptions(formats=(fmt,))
    fresh = "trimesh" not in sys.modules
    start = time.perf_counter()
    (path,) = write_outputs(tmp / "photo", depth, rgb, opts, photo)
    first = time.perf_counter() - start
    times, tri = [], []
    k = resolve(None, depth.shape[1], depth.shape[0], photo).as_tuple()
    for _ in range(rounds):
        start = time.perf_counter()
        write_outputs(tmp / "photo", depth, rgb, opts, photo)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        mesh = depth_to_mesh(depth, rgb, k, DEFAULT_MAX_JUMP)
        tri.append(time.perf_counter() - start)
    med, t = statistics.median(times), statistics.median(tri)
    print(f"{fmt}: {med:.3f} s added per photo (median of {rounds}; min {min(times):.3f}, max {max(times):.3f}); "
          f"triangulate {t:.3f} s, encode + write {med - t:.3f} s; {len(mesh.vertices):,} vertices, "
          f"{len(mesh.faces):,} faces, {path.stat().st_size / 1e6:.1f} MB")
    if fresh:
        print(f"{fmt}: first photo in a process {first:.3f} s (imports trimesh)")


if __name__ == "__main__":
    main()
