"""Which head and which loss matter, on real data: the real-data study's protocol (`real_data_study.py`) as grids.

    python benchmarks/study/decoder_loss_study.py --out runs/zoo [--part base,decoders,losses] [--seeds 0,1,2]
        [--threads 1] [--report docs/study_zoo.md]

Protocol (the real-data test's, unchanged): fine-tune on 7-Scenes redkitchen frames < 800 at 128x96, batch 8,
100 steps, ImageNet-pretrained encoder, the default recipe; test on 7-Scenes frames >= 800 (metric, full frame;
also median-scaled, `kitchen_med`, so scale-free losses are judged fairly) and on SUN3D office (median-scaled).
Parts (every cell x seed is one `run_grid` run; finished runs in --out are reused, an interrupted grid resumes):
- base: the real-data test's rows `pretrained` and `scratch` (MobileNetV2), the checkpoints other benchmarks reuse;
- decoders: MobileNetV2 and EfficientNet-Lite0 x every registered decoder, DenseDepth's loss, each from its
  default start (`output_init=auto`), plus densedepth from the targets' mean, the start every other decoder has
  (paired differences against both densedepth cells);
- losses: MobileNetV2 + the densedepth decoder x every registered loss, from the decoder's reference start and
  from the targets' mean (`output_init`; paired differences against DenseDepth's loss from each start).
Every decoder is built at its registered default width: parameter counts differ (printed per cell).
The report: per cell mean, sd and 95% t-interval over seeds; paired differences (same seed = same data order,
augmentation and initialisation seed) against the densedepth decoder / densedepth loss of the same encoder, with
their 95% interval and the verdict `real` (interval excludes 0) or `noise`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data_study import KITCHEN_HELD, VARIANTS, eval_sets, fine_tune  # noqa: E402

from transferdepth.evaluation.stats import paired_difference, summarize  # noqa: E402
from transferdepth.models.decoders import available_decoders  # noqa: E402
from transferdepth.study.compare import EvalSet, Run, grid_variants  # noqa: E402
from transferdepth.training.losses import LOSSES  # noqa: E402

ENCODERS = ("mobilenetv2", "efficientnet_lite0")
METRICS = (("kitchen", "abs_rel"), ("kitchen", "d1"), ("kitchen_med", "abs_rel"), ("office", "d1"))


def tests() -> list[EvalSet]:
    return eval_sets() + [EvalSet("kitchen_med", KITCHEN_HELD, crop="full", median_scaling=True,
                                  key=KITCHEN_HELD + "#median")]


def cells(part: str, encoders=ENCODERS):
    if part == "base":
        return [v for v in VARIANTS if v.name in ("pretrained", "scratch")], None
    if part == "decoders":  # every decoder from its default start, and densedepth also from the others' start
        fair = [dataclasses.replace(v, name=f"{v.name}|decoder=densedepth|output_init=targets") for v in
                grid_variants(list(encoders), {"decoder": ["densedepth"], "output_init": ["targets"]})]
        return (grid_variants(list(encoders), {"decoder": list(available_decoders())}) + fair,
                ("decoder=densedepth", "decoder=densedepth|output_init=targets"))
    if part == "losses":
        return (grid_variants(["mobilenetv2"], {"loss": list(LOSSES), "output_init": ["reference", "targets"]}),
                ("loss=densedepth|output_init=reference", "loss=densedepth|output_init=targets"))
    raise SystemExit(f"--part: unknown part {part!r}; choose from base, decoders, losses")


def _fmt(s) -> str:
    return s.text(4)


def table(runs: list[Run], baselines: str | tuple[str, ...] | None) -> list[str]:
    """Markdown: one row per cell (mean ± sd [95% interval]) and, per baseline (a cell tag after the encoder),
    paired differences of every other cell of the same encoder to it."""
    by: dict[str, dict[int, Run]] = {}
    for r in runs:
        by.setdefault(r.variant.name, {})[r.seed] = r
    head = "| cell | params (M) | train s/run | " + " | ".join(f"{t} {m}" for t, m in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for name, seeds in by.items():
        some = next(iter(seeds.values()))
        params = some.metrics.get("_params_m", float("nan"))
        secs = sum(r.seconds for r in seeds.values()) / len(seeds)
        vals = [summarize([seeds[s].metrics[t][m] for s in sorted(seeds)]) for t, m in METRICS]
        lines.append(f"| {name} | {params:.2f} | {secs:.0f} | " + " | ".join(_fmt(v) for v in vals) + " |")
    for baseline_tag in ((baselines,) if isinstance(baselines, str) else baselines or ()):
        lines += ["", "Paired differences (cell - baseline, same seeds), 95% interval; `real` when it excludes 0:", "",
                  "| cell | baseline | " + " | ".join(f"Δ {t} {m}" for t, m in METRICS) + " |",
                  "|" + "---|" * (2 + len(METRICS))]
        for name, seeds in by.items():
            enc = name.split("|")[0]
            base = f"{enc}|{baseline_tag}"
            if name == base or base not in by:
                continue
            common = sorted(set(seeds) & set(by[base]))
            row = []
            for t, m in METRICS:
                d = paired_difference([seeds[s].metrics[t][m] for s in common],
                                      [by[base][s].metrics[t][m] for s in common])
                verdict = "real" if (d.lo > 0 or d.hi < 0) else "noise"
                row.append(f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}] {verdict}")
            lines.append(f"| {name} | {base} | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--part", default="base,decoders,losses")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help="the decoders part's encoders")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--report", type=Path, default=None, help="write the Markdown tables here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    report = [f"Seeds {seeds}; torch threads {torch.get_num_threads()}.", ""]
    for part in args.part.split(","):
        variants, baseline = cells(part, args.encoders.split(","))
        t0 = time.perf_counter()
        runs = fine_tune(variants, seeds, args.out / part, tests=tests(), log=lambda m: print(m, flush=True))
        wall = time.perf_counter() - t0
        for r in runs:  # parameter count of each cell (from its checkpoint's model)
            from transferdepth.api.estimator import DepthEstimator
            est = DepthEstimator.from_pretrained(r.run_dir / "checkpoint", device="cpu")
            r.metrics["_params_m"] = sum(p.numel() for p in est.model.parameters()) / 1e6
        report += [f"## {part} ({len(runs)} runs, {sum(r.trained for r in runs)} trained now, wall {wall:.0f} s)", ""]
        report += table(runs, baseline) + [""]
        (args.out / f"{part}-{args.encoders.replace(',', '+')}.json").write_text(json.dumps(
            [{"cell": r.variant.name, "seed": r.seed, "seconds": r.seconds, "run_dir": str(r.run_dir),
              "metrics": r.metrics} for r in runs], indent=1, default=float))
        print("\n".join(report), flush=True)
    if args.report:
        args.report.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
