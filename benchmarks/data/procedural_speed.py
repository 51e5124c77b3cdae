"""Procedural scene generation speed on ONE thread: scenes/s, median over repeats.

    python benchmarks/data/procedural_speed.py [--repeats 5] [--scenes 20]

Each repeat renders `scenes` consecutive new scenes (different indices, so no caching helps) at each size.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch are imported

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from transferdepth.data.procedural import ProceduralScenes  # noqa: E402


def scenes_per_second(height: int, width: int, repeats: int, scenes: int) -> list[float]:
    data = ProceduralScenes(repeats * scenes + 1, seed=0, height=height, width=width)
    data[repeats * scenes]  # warm-up: ray tables and imports
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(r * scenes, (r + 1) * scenes):
            data[i]
        rates.append(scenes / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scenes", type=int, default=20, help="scenes per repeat at 320x240 (a quarter at 640x480)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, 1 thread, "
          f"median of {args.repeats} repeats")
    for height, width, n in ((240, 320, args.scenes), (480, 640, max(1, args.scenes // 4))):
        rates = scenes_per_second(height, width, args.repeats, n)
        print(f"{width}x{height}: {statistics.median(rates):6.1f} scenes/s  "
              f"(min {min(rates):.1f}, max {max(rates):.1f}, {n} scenes per repeat)")


if __name__ == "__main__":
    main()
