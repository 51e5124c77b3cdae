"""Accuracy of int8 exports on real data: fine-tune, export fp32 and int8 ONNX, evaluate both.

    python benchmarks/quantization.py [--encoders mobilenetv2,efficientnet_lite0] [--workdir DIR]
        [--calibration SPEC] [--calibration-count 16]

Recipe (tests/test_real_data.py's): ImageNet-pretrained encoder, fine-tuned 150 steps, batch 8, 160x120, seed 0 on
7-Scenes redkitchen frames < 800. Both exports are run by the ONNX engine (`DepthEstimator.from_onnx`,
network input 120x160, flip averaging, depth resized to 640x480) and scored on 7-Scenes frames >= 800
(metric, full frame) and SUN3D office (median-scaled per image), Eigen mask 1e-3 < gt < 10 m. int8 is
calibrated by default on 16 training frames (< 800) at 120x160. Targets: delta1 drop <= 0.01 and abs rel
increase <= 0.005. A fine-tuned checkpoint already in --workdir is reused (say so when reporting).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from transferdepth.api import DepthEstimator
from transferdepth.export import export_onnx
from transferdepth.metrics import EIGEN_MIN_GT_M, MetricAccumulator, median_scale

SIZE = (120, 160)
TRAIN = "rgbd:7scenes-redkitchen?index=:800"
SETS = {"kitchen>=800": ("rgbd:7scenes-redkitchen?index=800:", False), "sun3d-office": ("rgbd:sun3d-office", True)}


def fine_tune(encoder: str, out: Path, steps: int) -> Path:
    """The real-data test's recipe; returns the checkpoint directory (reused when present)."""
    ckpt = out / "checkpoint"
    if (ckpt / "config.json").exists():
        print(f"{encoder}: reusing {ckpt}")
        return ckpt
    from transferdepth.config import load_config
    from transferdepth.data import InMemory, open_dataset
    from transferdepth.data.transforms import TrainTransform, TransformedDataset
    from transferdepth.models import get_spec
    from transferdepth.train import train

    spec = get_spec(encoder)
    cfg = load_config(overrides=dict(encoder=encoder, pretrained=True, height=SIZE[0], width=SIZE[1], batch_size=8,
                                     max_steps=steps, num_workers=0, seed=0, log_every=50, tensorboard=False,
                                     progress=False, ckpt_every=10**6))
    ds = TransformedDataset(InMemory(open_dataset(TRAIN), SIZE),
                            TrainTransform(spec.mean, spec.std, SIZE, cfg.flip_p, cfg.swap_p), seed=cfg.seed)
    t = time.perf_counter()
    train(cfg, out, train_dataset=ds)
    print(f"{encoder}: fine-tuned {steps} steps in {time.perf_counter() - t:.0f} s")
    return ckpt


def score(est: DepthEstimator, spec: str, median_scaling: bool) -> dict[str, float]:
    """delta1, abs rel, RMSE of `est` on a dataset spec (full frame, Eigen mask)."""
    from transferdepth.data import open_dataset

    data = open_dataset(spec)
    acc = None
    for i in range(len(data)):
        s = data[i]
        gt = np.asarray(s["depth"], np.float32)
        pred = est.predict_rgb([s["rgb"]])[0]
        if median_scaling:
            pred = median_scale(pred[None], gt[None], np.asarray(s["valid"], bool)[None])[0]
        if acc is None:
            acc = MetricAccumulator("eigen", (0, gt.shape[0] - 1, 0, gt.shape[1] - 1), EIGEN_MIN_GT_M, 10.0)
        acc.add(pred[None], gt[None])
    r = acc.result()
    return {k: float(r[k]) for k in ("d1", "abs_rel", "rmse")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="mobilenetv2,efficientnet_lite0")
    ap.add_argument("--workdir", default="runs/quantization")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--calibration", default=TRAIN)
    ap.add_argument("--calibration-count", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bad-calibration", action="store_true",
                    help="also int8 calibrated on one black image (shows the target check can fail)")
    args = ap.parse_args()
    from transferdepth.checkpoint import load_checkpoint

    rows = []
    for encoder in args.encoders.split(","):
        work = Path(args.workdir) / encoder
        model = load_checkpoint(fine_tune(encoder, work, args.steps))
        res = {}
        variants = {"fp32": ("fp32", args.calibration), "int8": ("int8", args.calibration)}
        if args.bad_calibration:
            from PIL import Image

            (work / "black").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (SIZE[1], SIZE[0])).save(work / "black" / "black.png")
            variants["int8, one black image"] = ("int8", str(work / "black"))
        for label, (precision, calib) in variants.items():
            path = export_onnx(model, work / f"{label.replace(' ', '_').replace(',', '')}.onnx", precision=precision,
                               calibration=calib, calibration_count=args.calibration_count, calibration_size=SIZE)
            est = DepthEstimator.from_onnx(path, threads=args.threads, input_size=SIZE)
            res[label] = {name: score(est, spec, ms) for name, (spec, ms) in SETS.items()}
        for label in [v for v in variants if v != "fp32"]:
            for name in SETS:
                a, b = res["fp32"][name], res[label][name]
                d1_drop, absrel_up = a["d1"] - b["d1"], b["abs_rel"] - a["abs_rel"]
                ok = d1_drop <= 0.01 and absrel_up <= 0.005
                rows.append((f"{encoder} ({label})", name, a, b, d1_drop, absrel_up, ok))
        print(json.dumps({encoder: res}), flush=True)
    print(f"\ncalibration: {args.calibration}, {args.calibration_count} images at {SIZE[0]}x{SIZE[1]}; "
          f"fine-tune {args.steps} steps\n")
    print("| encoder | eval set | fp32 d1 | int8 d1 | d1 drop | fp32 abs rel | int8 abs rel | abs rel increase | "
          "target met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for enc, name, a, b, dd, da, ok in rows:
        print(f"| {enc} | {name} | {a['d1']:.4f} | {b['d1']:.4f} | {dd:+.4f} | {a['abs_rel']:.4f} | "
              f"{b['abs_rel']:.4f} | {da:+.4f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
