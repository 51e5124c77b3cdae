"""Seed calibration of the real-data transfer test (tests/study/test_real_data.py): prints mean, sd, min, max per
figure over seeds, and the per-run time.

    PYTHONPATH=src python benchmarks/study/real_data_seeds.py [--seeds 0,1,2,3,4] [--out /tmp/real_data_seeds]

The 3-seed means are over every choice of 3 of the seeds: the worst of them is where a bound on a 3-seed
mean starts (docs/seeds.md). Runs the same study as the test (`transferdepth.study.compare.run_grid`, the settings in tests/study/test_real_data.py):
MobileNetV2 pretrained and from scratch on 7-Scenes redkitchen frames < 800, evaluated on frames >= 800
(metric) and on SUN3D office (median-scaled). Finished runs in --out are reused (add seeds cheaply).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data_study import FIGURES, VARIANTS, figures, run_study  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", default="/tmp/real_data_seeds")
    ap.add_argument("--only", choices=tuple(v.name for v in VARIANTS), default=None,
                    help="train one variant only (e.g. two processes in parallel); then rerun without it")
    ap.add_argument("--recipe", default=None, help="base training preset (rows with their own recipe keep it)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override (repeatable), e.g. --set encoder_lr_mult=0.1")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set) | ({"recipe": args.recipe} if args.recipe else {})
    seeds = [int(s) for s in args.seeds.split(",")]
    t = time.perf_counter()
    variants = [v for v in VARIANTS if args.only in (None, v.name)]
    study = run_study(seeds, Path(args.out), log=lambda m: print(m, flush=True), variants=variants,
                      overrides=overrides)
    if args.only:
        return
    print(f"wall time {time.perf_counter() - t:.0f} s")
    per_seed = figures(study)
    print(json.dumps({"constant": study["constant"], "per_seed": per_seed}, indent=1))
    print("\n| figure | mean | sd | min | max | 3-seed means: lowest | highest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in FIGURES:
        a = np.array([per_seed[s][name] for s in seeds])
        threes = [a[list(c)].mean() for c in itertools.combinations(range(len(a)), 3)]
        print(f"| {name} | {a.mean():.4f} | {a.std(ddof=1) if a.size > 1 else float('nan'):.4f} | {a.min():.4f} "
              f"| {a.max():.4f} | {min(threes) if threes else float('nan'):.4f} "
              f"| {max(threes) if threes else float('nan'):.4f} |")
    times = [r.seconds for r in study["runs"] if r.trained]
    if times:
        print(f"\ntraining time per run: mean {np.mean(times):.0f} s, min {min(times):.0f} s, max {max(times):.0f} s "
              f"({len(times)} runs trained now)")


if __name__ == "__main__":
    main()
