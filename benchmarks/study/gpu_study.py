"""The real-data transfer study at a larger scale, for a GPU (issue 14, item 5): MobileNetV2 and
EfficientNet-Lite0/1/2, each ImageNet-pretrained and from scratch, trained once per seed on every 7-Scenes
redkitchen training frame (frames < 800: 400 pairs) at 240x320 with mixed precision, tested on frames >= 800
(metric) and SUN3D office (median-scaled). The protocol is the CI test's (benchmarks/study/real_data_study.py,
`transferdepth.study.compare.run_grid`), only larger: size, steps, batch and AMP are arguments.

    PYTHONPATH=src python benchmarks/study/gpu_study.py --device cuda [--seeds 0,1,2] [--steps 1000] \
        [--size 240x320] [--batch-size 16] [--amp auto] [--out /tmp/gpu_study] \
        [--decoders densedepth,unet,fpn,bts,fastdepth,dpt] [--losses densedepth,silog,berhu,ssi] [--vary KEY=V1,V2]

Prints, per row, mean ± sd [95% interval] over seeds of kitchen abs rel and delta1 and office delta1, the
paired (same seed) difference pretrained - scratch per encoder, and the training time per run. Finished runs
in --out are reused, so a study can be split over several calls (e.g. `--seeds 0` first, to time a run).

On the lent GPU machine: the working tree travels but ../shared does not (and the two RGB-D folders, 84 MB,
exceed one call's 64 MiB): copy `7scenes-redkitchen` and `sun3d-office` into an ignored folder of the
checkout and point TRANSFERDEPTH_RGBD at it (see docs/seeds.md, "On a GPU").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data_study import TRAIN, eval_sets, fine_tune  # noqa: E402

from transferdepth.evaluation.stats import paired_difference, summarize  # noqa: E402
from transferdepth.study.compare import Run, Variant, grid_axes, grid_variants  # noqa: E402

ENCODERS = "mobilenetv2,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
COLUMNS = (("kitchen", "abs_rel"), ("kitchen", "d1"), ("office", "d1"))


def variants(encoders: list[str], axes: dict[str, list] | None = None) -> list[Variant]:
    """Per encoder: ImageNet-pretrained, then from scratch (row names as `compare --encoders` takes them),
    each crossed with the grid's axes (`--decoders`, `--losses`, `--vary`, as `compare`: cells named
    `ENCODER|key=value` for every axis with several values)."""
    if not axes:
        return [v for e in encoders for v in (Variant(e, e, True), Variant(f"{e}:scratch", e, False))]
    return grid_variants([x for e in encoders for x in (e, f"{e}:scratch")], axes)


def md(name: str) -> str:
    """A row name in a Markdown cell: grid cells' own "|" escaped."""
    return name.replace("|", "\\|")


def table(runs: list[Run], encoders: list[str]) -> str:
    """Markdown: one row per variant (mean ± sd [95% interval] over seeds, time per trained run), then the
    paired pretrained - scratch differences per encoder."""
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r.variant.name, []).append(r)
    lines = ["| row | seeds | kitchen abs rel | kitchen delta1 | office delta1 (median-scaled) | s / run |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, rs in by.items():
        cells = [summarize([r.metrics[t][m] for r in rs]).text() for t, m in COLUMNS]
        secs = [r.seconds for r in rs]
        lines.append(f"| {md(name)} | {len(rs)} | " + " | ".join(cells) + f" | {sum(secs) / len(secs):.0f} |")
    lines += ["", "| encoder | pretrained - scratch: kitchen abs rel | kitchen delta1 | office delta1 |",
              "|---|---:|---:|---:|"]
    tags = list(dict.fromkeys("|" + n.split("|", 1)[1] if "|" in n else "" for n in by))
    for e in encoders:
        for tag in tags:
            a = sorted(by.get(e + tag, []), key=lambda r: r.seed)
            b = sorted(by.get(f"{e}:scratch{tag}", []), key=lambda r: r.seed)
            if not a or [r.seed for r in a] != [r.seed for r in b]:
                continue
            cells = [paired_difference([r.metrics[t][m] for r in a], [r.metrics[t][m] for r in b]).text()
                     for t, m in COLUMNS]
            lines.append(f"| {md(e + tag)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default=ENCODERS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--size", default="240x320", help="HxW of training and evaluation")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--amp", default="auto", help="auto (bf16 where supported), bf16, fp16, off (CUDA only)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--eval-limit", type=int, default=None, help="first N images of each test set (smoke runs)")
    ap.add_argument("--out", default="/tmp/gpu_study")
    ap.add_argument("--decoders", default=None, help="grid axis, as compare: e.g. densedepth,unet,fpn,bts,fastdepth,dpt")
    ap.add_argument("--losses", default=None, help="grid axis, as compare: e.g. densedepth,silog,berhu,ssi")
    ap.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                    help="any training key as one more axis (repeatable), e.g. batch_size=8,32")
    args = ap.parse_args()
    try:
        h, w = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size: expected HEIGHTxWIDTH (e.g. 240x320), got {args.size!r}")
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"device: {device}; torch {torch.__version__}; amp {args.amp}; {args.steps} steps, batch "
          f"{args.batch_size}, {h}x{w}; train {TRAIN}; seeds {seeds}", flush=True)
    t = time.perf_counter()
    cells = variants(encoders, grid_axes(args.decoders, args.losses, args.vary))
    runs = fine_tune(cells, seeds, Path(args.out), steps=args.steps, size=(h, w), device=args.device,
                     tests=eval_sets(limit=args.eval_limit), log=lambda m: print(m, flush=True),
                     overrides={"batch_size": args.batch_size, "amp": args.amp})
    print(f"\nwall time {time.perf_counter() - t:.0f} s ({sum(r.trained for r in runs)} of {len(runs)} runs "
          f"trained now, the rest reused)\n")
    print(table(runs, encoders))


if __name__ == "__main__":
    main()
