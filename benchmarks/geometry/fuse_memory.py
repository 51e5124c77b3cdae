"""Peak memory of TSDF fusion: N frames of 640x480 sensor depth (7-Scenes kitchen, held-out frames >= 800 by
default) fused at a given voxel size, the mesh extracted and written, as `transferdepth fuse --depth gt` does.

    PYTHONPATH=src python benchmarks/geometry/fuse_memory.py                   # 100 frames, 1 cm voxel
    PYTHONPATH=src python benchmarks/geometry/fuse_memory.py --frames 20 --voxel 0.02

Prints the process's peak resident set size (ru_maxrss: the most physical memory it ever held, imports
included) after the imports and at the end, the voxel blocks allocated and the mesh's size. The claim
(issue 22): 100 frames at 640x480 with a 1 cm voxel stay under 2 GB. Memory does not depend on the machine's
load, unlike time, so it may be measured anywhere; the wall time printed is for orientation only.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from transferdepth.apps.fuse import FuseSettings, fuse_sequence, write_result
from transferdepth.data.rgbd import rgbd_root
from transferdepth.data.sequence import RGBDSequence
from transferdepth.utils import set_progress

LIMIT_MB = 2048.0


def peak_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequence", type=Path, default=None, help="posed RGB-D folder (default: the shared kitchen)")
    ap.add_argument("--first", type=int, default=800, help="first frame number (default 800, held out)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--voxel", type=float, default=0.01, help="metres (default 0.01)")
    args = ap.parse_args()
    set_progress("none")
    after_imports = peak_mb()
    seq = RGBDSequence(args.sequence or rgbd_root() / "7scenes-redkitchen", index=(args.first, None),
                       max_frames=args.frames)
    h, w = seq.frame(0)["depth"].shape
    t0 = time.perf_counter()
    result = fuse_sequence(seq, None, FuseSettings(voxel_m=args.voxel), "sensor")
    with tempfile.TemporaryDirectory() as tmp:
        write_result(Path(tmp) / "model.ply", result)
    seconds = time.perf_counter() - t0
    peak = peak_mb()
    print(f"fused {len(seq)} frames of {w}x{h} at voxel {args.voxel * 100:g} cm: {len(result.mesh.vertices)} "
          f"vertices, {len(result.mesh.faces)} triangles ({seconds:.1f} s wall, for orientation only)")
    print(f"peak RSS: {peak:.0f} MiB (after imports: {after_imports:.0f} MiB; fusion added at most "
          f"{peak - after_imports:.0f} MiB); limit {LIMIT_MB:.0f} MiB: {'OK' if peak < LIMIT_MB else 'OVER'}")
    return 0 if peak < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
