"""Accuracy of int8 exports on real data: fine-tune, export fp32 and int8 ONNX, evaluate both.

    PYTHONPATH=src python benchmarks/deploy/quantization.py [--encoders mobilenetv2,efficientnet_lite0] [--seeds 0]
        [--workdir /tmp/quantization] [--calibration-count 32] [--settings default] [--no-bad-calibration]
        [--recipe finetune]

Protocol (issue 13 item 3). Fine-tuning is the real-data study's recipe (benchmarks/study/real_data_study.py,
`fine_tune`: ImageNet-pretrained encoder, 7-Scenes redkitchen frames < 800 at 128x96, batch 8, 100 steps,
through `transferdepth.study.compare.run_grid`; finished runs in --workdir are reused and said so). Each fine-tuned
model is exported as fp32 and as int8 ONNX (`export_onnx`, `--precision int8`), int8 calibrated on
--calibration-count training frames (frames < 800, evenly spaced) at the evaluation size 96x128, recorded in
the file's metadata. Both files run on the ONNX engine (`DepthEstimator.from_onnx`, network input 96x128,
flip averaging, depth resized to 640x480) and are scored by `transferdepth.evaluation.evaluate.evaluate` on 7-Scenes
frames >= 800 (metric, full frame) and SUN3D office (median-scaled per image), Eigen mask 1e-3 < gt < 10 m.
Target: delta1 drop <= 0.01 and abs rel increase <= 0.005 on both sets. The bad-calibration row (one black
image) shows the check can fail. --settings compares quantisation settings (calibration method, per-channel
weights, which ops stay float32): `default` (export's default), or names from SETTINGS, comma-separated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))
from real_data_study import KITCHEN_HELD, OFFICE, SIZE, STEPS, TRAIN, eval_sets, fine_tune  # noqa: E402

from transferdepth.api.estimator import DepthEstimator  # noqa: E402
from transferdepth.data import open_dataset  # noqa: E402
from transferdepth.deploy.export import export_onnx  # noqa: E402
from transferdepth.evaluation.evaluate import Predictions, evaluate  # noqa: E402
from transferdepth.inference.checkpoint import load_checkpoint  # noqa: E402
from transferdepth.study.compare import EvalSet, Variant  # noqa: E402

CALIBRATION = TRAIN  # training frames (< 800), never the test frames
CALIBRATION_COUNT = 32
D1_DROP, ABS_REL_RISE = 0.01, 0.005  # the target
# quantize_onnx keyword arguments per named setting (--settings); "default" is export's own default
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "int8-activations": {"activations": "int8"},  # the default before uint8 (last conv and every Resize float32)
    "no-bias-correction": {"bias_correction": False},
    "minmax": {"method": "minmax", "exclude": "none"},
    "minmax-head": {"method": "minmax", "exclude": "head"},
    "minmax-lastconv": {"method": "minmax", "exclude": "last-conv"},
    "minmax-lastconv-resize": {"method": "minmax", "exclude": "last-conv+resize"},
    "percentile-lastconv-resize": {"method": "percentile", "exclude": "last-conv+resize"},
    "entropy-lastconv": {"method": "entropy", "exclude": "last-conv"},
    "percentile-lastconv": {"method": "percentile", "exclude": "last-conv"},
    "minmax-lastconv-pertensor": {"method": "minmax", "exclude": "last-conv", "per_channel": False},
    "entropy": {"method": "entropy", "exclude": "none"},
    "percentile": {"method": "percentile", "exclude": "none"},
}


def cached(spec: str) -> list[dict[str, Any]]:
    """A dataset spec's samples, read once (each evaluation then skips decoding)."""
    data = open_dataset(spec)
    return [data[i] for i in range(len(data))]


def onnx_metrics(path: str | os.PathLike, tests: list[EvalSet], threads: int = 2, batch: int = 10
                 ) -> dict[str, dict[str, Any]]:
    """Metrics of an exported file on each test set: the ONNX engine at SIZE with flip averaging, scored by
    `evaluate` (the predictions handed over), with each test set's crop, median scaling and limit."""
    est = DepthEstimator.from_onnx(path, threads=threads, input_size=SIZE)
    out = {}
    for t in tests:
        data = t.data
        n = len(data) if t.limit is None else min(t.limit, len(data))
        samples = [data[i] for i in range(n)]
        preds = []
        for k in range(0, n, batch):
            preds += est.predict_rgb([s["rgb"] for s in samples[k:k + batch]])
        p = Predictions(np.stack(preds), np.stack([s["depth"] for s in samples]),
                        np.stack([s["valid"] for s in samples]), [s["name"] for s in samples])
        m = evaluate(est.model, data, t.protocol, crop=t.crop, median_scaling=t.median_scaling, predictions=p)
        out[t.name] = {k: float(m[k]) for k in ("d1", "abs_rel", "rmse")}
    return out


def export_and_score(model: Any, work: Path, label: str, tests: list[EvalSet], precision: str = "int8",
                     calibration: str = CALIBRATION, count: int = CALIBRATION_COUNT,
                     quantization: dict[str, Any] | None = None, threads: int = 2) -> dict[str, Any]:
    """Export `model` (fp32, or int8 calibrated on `count` images of `calibration` at SIZE with `quantization`
    settings) to `work/label.onnx` and score it on `tests`; returns the metrics and the export's seconds."""
    t = time.perf_counter()
    path = export_onnx(model, work / f"{label}.onnx", precision=precision, calibration=calibration,
                       calibration_count=count, calibration_size=SIZE, quantization=quantization)
    seconds = time.perf_counter() - t
    return {"metrics": onnx_metrics(path, tests, threads), "export_s": seconds}


def black_folder(where: Path) -> str:
    """A folder holding one black image at SIZE: the deliberately bad calibration set."""
    from PIL import Image

    where.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIZE[1], SIZE[0])).save(where / "black.png")
    return str(where)


def change(fp32: dict[str, dict[str, float]], int8: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per test set: int8 - fp32 for delta1 and abs rel (a d1 drop is negative here)."""
    return {name: {"d1": int8[name]["d1"] - fp32[name]["d1"], "abs_rel": int8[name]["abs_rel"] - fp32[name]["abs_rel"]}
            for name in fp32}


def meets_target(delta: dict[str, dict[str, float]]) -> bool:
    """The issue's target on every test set: delta1 drop <= 0.01 and abs rel increase <= 0.005."""
    return all(d["d1"] >= -D1_DROP and d["abs_rel"] <= ABS_REL_RISE for d in delta.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="mobilenetv2,efficientnet_lite0")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "quantization"))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--calibration-count", type=int, default=CALIBRATION_COUNT)
    ap.add_argument("--settings", default="default", help=f"comma-separated: {', '.join(SETTINGS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bad-calibration", action="store_true", help="skip the one-black-image row")
    ap.add_argument("--recipe", default=None, help="fine-tune with this preset (e.g. finetune; default: densedepth)")
    args = ap.parse_args()
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        ap.error(f"--settings: unknown {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    work = Path(args.workdir)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    tests = eval_sets(cached(KITCHEN_HELD), cached(OFFICE))
    variants = [Variant(e + (f"@{args.recipe}" if args.recipe else ""), e, True, args.recipe)
                for e in args.encoders.split(",")]
    runs = fine_tune(variants, [int(s) for s in args.seeds.split(",")], work / "runs", steps=args.steps, tests=tests,
                     log=lambda m: print(m, flush=True))
    bad = black_folder(work / "black")
    results = []
    for run in runs:
        model = load_checkpoint(run.run_dir / "checkpoint")
        out = run.run_dir / "exports"
        out.mkdir(exist_ok=True)
        rec = {"encoder": run.variant.name, "seed": run.seed, "trained_now": run.trained, "train_s": run.seconds,
               "torch": {k: {m: run.metrics[k][m] for m in ("d1", "abs_rel", "rmse")} for k in run.metrics},
               "fp32": export_and_score(model, out, "fp32", tests, precision="fp32", threads=args.threads)}
        rows = {s: export_and_score(model, out, f"int8_{s}", tests, count=args.calibration_count,
                                    quantization=SETTINGS[s], threads=args.threads) for s in settings}
        if not args.no_bad_calibration:
            rows["one black image"] = export_and_score(model, out, "int8_black", tests, calibration=bad, count=1,
                                                       threads=args.threads)
        for r in rows.values():
            r["change"] = change(rec["fp32"]["metrics"], r["metrics"])
            r["target_met"] = meets_target(r["change"])
        rec["int8"] = rows
        results.append(rec)
        print(json.dumps(rec), flush=True)
    print(f"\nfine-tune: {TRAIN} at {SIZE[0]}x{SIZE[1]}, {args.steps} steps, batch 8; int8 calibrated on "
          f"{args.calibration_count} frames of {CALIBRATION} at {SIZE[0]}x{SIZE[1]} (bad: one black image); "
          f"ONNX engine, {args.threads} threads, flip averaging; kitchen = frames >= 800 (metric), office = SUN3D "
          f"(median-scaled); change = int8 - fp32; target d1 change >= -{D1_DROP}, abs rel change <= {ABS_REL_RISE}")
    print("\n| encoder | seed | int8 setting | kitchen d1 fp32 / int8 (change) | kitchen abs rel fp32 / int8 (change) "
          "| office d1 fp32 / int8 (change) | office abs rel fp32 / int8 (change) | target met |")
    print("|---|---|---|---|---|---|---|---|")
    for rec in results:
        f = rec["fp32"]["metrics"]
        for label, r in rec["int8"].items():
            cells = []
            for name in ("kitchen", "office"):
                for m in ("d1", "abs_rel"):
                    cells.append(f"{f[name][m]:.4f} / {r['metrics'][name][m]:.4f} ({r['change'][name][m]:+.4f})")
            print(f"| {rec['encoder']} | {rec['seed']} | {label} | {' | '.join(cells)} | "
                  f"{'yes' if r['target_met'] else 'NO'} |")
    print("\ntorch engine (run_grid, for reference): " + "; ".join(
        f"{r['encoder']} seed {r['seed']}: " + ", ".join(f"{k} d1 {v['d1']:.4f} abs rel {v['abs_rel']:.4f}"
                                                          for k, v in r["torch"].items()) for r in results))
    print(f"wall time {time.perf_counter() - t0:.0f} s; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
