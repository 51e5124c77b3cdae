"""Steady video on real data: per-frame prediction vs `--temporal` on the 7-Scenes held-out sweep as a video.

    PYTHONPATH=src python benchmarks/apps/video_temporal_real.py [--runs /work/shared_runs/base/pretrained]
        [--seeds 0,1,2] [--strengths 0.5,0.7,0.9] [--frames 100] [--input-size 96x128] [--no-flip]

The clip: 7-Scenes "redkitchen" frames numbered 800 and above (the real-data study's held-out block: 100
files, every 2nd frame of the Kinect sweep, 640x480), encoded as H.264 (PyAV, crf 18, 15 frames/s: the
30 Hz sensor at every 2nd frame), then run as `predict clip.mp4` does: `apps.video.iter_depth` (decode,
batched predict) with each run's checkpoint (`<runs>/seed_<k>/checkpoint`, the study's MobileNetV2
fine-tuned on frames < 800 at 128x96; the network sees --input-size, its training size, flip-averaged),
and the same predictions through `apps.temporal.ScaleStabiliser` at each strength (what `--temporal` does).

Ground truth: the Kinect depth of each frame (metres; valid 0.001 < gt < 10 m, as the study's eval).
Figures per frame sequence:
- scale flicker (the main one): mean over consecutive frames of |log s_t - log s_(t-1)|, s_t = median of
  pred_t / gt_t over frame t's valid pixels: how much the prediction's overall scale jumps from one frame to
  the next relative to the sensor (camera motion does not enter: each frame is compared with its own
  measurement).
- pose flicker: frame t-1's prediction carried into frame t with the sensor depth and the camera poses
  (`frame-*.pose.txt`, camera-to-world; fx = fy = 585, cx = 320, cy = 240): each valid pixel of t-1 (every
  4th row and column) is back-projected with its sensor depth z, moved into camera t (depth z'), projected
  to the nearest pixel; kept when t's sensor depth there agrees with z' within 5 % (visible in both);
  the figure is the mean |log pred_t(p') - log(pred_(t-1)(p) z' / z)| over those pixels and the frames.
  It also holds per-pixel disagreements a scale cannot fix (and the few pixels of offset between
  7-Scenes' depth and colour cameras), so it drops less than the scale flicker.
- delta1 and abs rel: `evaluation.metrics.depth_metrics`, protocol eigen on the full frame, the same
  mask and clamp as the study's `kitchen` eval (per-frame means).
An accuracy / flicker figure, not a speed figure.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from video_temporal import encode, scale_flicker

from transferdepth import DepthEstimator
from transferdepth.apps.temporal import ScaleStabiliser
from transferdepth.apps.video import iter_depth
from transferdepth.data.rgbd import rgbd_root
from transferdepth.evaluation.metrics import depth_metrics

FIRST = 800
K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
MASK_M = (0.001, 10.0)


def load_sweep(limit: int | None) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(rgb uint8, sensor depth float32 metres (0 = none), camera-to-world 4x4) of frames >= FIRST, in order."""
    folder = rgbd_root() / "7scenes-redkitchen"
    names = sorted(p.name.split(".")[0] for p in folder.glob("frame-*.color.jpg"))
    names = [n for n in names if int(n.split("-")[1]) >= FIRST][:limit]
    rgbs, depths, poses = [], [], []
    for n in names:
        rgbs.append(np.asarray(Image.open(folder / f"{n}.color.jpg").convert("RGB")))
        d = np.asarray(Image.open(folder / f"{n}.depth.png"), np.float32)
        depths.append(np.where(d == 65535, 0, d) / 1000.0)
        poses.append(np.loadtxt(folder / f"{n}.pose.txt"))
    return rgbs, depths, poses


def valid_mask(gt: np.ndarray) -> np.ndarray:
    return (gt > MASK_M[0]) & (gt < MASK_M[1])


def pose_flicker(preds, gts, poses, step: int = 4, agree: float = 0.05) -> float:
    """Mean |log pred_t(p') - log(pred_(t-1)(p) z'/z)| over pixels seen in both frames (module docstring)."""
    h, w = gts[0].shape
    v, u = np.mgrid[0:h:step, 0:w:step]
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    terms = []
    for t in range(1, len(preds)):
        z = gts[t - 1][v, u].ravel().astype(np.float64)
        ok = valid_mask(z)
        pts = rays[:, ok] * z[ok]
        move = np.linalg.inv(poses[t]) @ poses[t - 1]
        cam = move[:3, :3] @ pts + move[:3, 3:4]
        zt = cam[2]
        front = zt > MASK_M[0]
        uv = (K @ cam[:, front])[:2] / zt[front]
        ut, vt = np.round(uv).astype(int)
        inside = (ut >= 0) & (ut < w) & (vt >= 0) & (vt < h)
        src = np.flatnonzero(ok)[front][inside]
        ut, vt, zt = ut[inside], vt[inside], zt[front][inside]
        gt_t = gts[t][vt, ut]
        seen = valid_mask(gt_t) & (np.abs(gt_t - zt) < agree * zt)
        p0 = preds[t - 1][v.ravel()[src], u.ravel()[src]][seen]
        carried = np.log(p0) + np.log(zt[seen] / z[src][seen])
        terms.append(np.abs(np.log(preds[t][vt[seen], ut[seen]]) - carried))
    return float(np.mean(np.concatenate(terms)))


def figures(preds, gts, poses) -> dict[str, float]:
    valids = [valid_mask(g) for g in gts]
    m = depth_metrics(np.stack(preds), np.stack(gts), "eigen", crop=(0, gts[0].shape[0] - 1, 0, gts[0].shape[1] - 1),
                      min_depth=MASK_M[0], max_depth=MASK_M[1])
    return {"scale": scale_flicker(preds, gts, valids), "pose": pose_flicker(preds, gts, poses),
            "d1": m["d1"], "abs_rel": m["abs_rel"]}


def measure(checkpoint: Path, clip: Path, gts, poses, strengths, input_size, flip: bool) -> dict[str, dict]:
    est = DepthEstimator.from_pretrained(checkpoint, "cpu", flip=flip, input_size=input_size)
    frames = [(rgb, d) for _, _, rgb, d in iter_depth(clip, est, batch_size=8)]
    preds = [d for _, d in frames]
    assert len(preds) == len(gts), (len(preds), len(gts))
    rows = {"per-frame": figures(preds, gts, poses)}
    for s in strengths:
        stab = ScaleStabiliser(s)
        rows[f"--temporal {s:g}"] = figures([stab(d, rgb) for rgb, d in frames], gts, poses)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="/work/shared_runs/base/pretrained", help="folder of seed_<k>/checkpoint")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strengths", default="0.5,0.7,0.9")
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames of the sweep")
    ap.add_argument("--input-size", default="96x128", help="HxW the network sees (the runs' training size)")
    ap.add_argument("--no-flip", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    strengths = [float(s) for s in args.strengths.split(",")]
    input_size = tuple(int(v) for v in args.input_size.lower().split("x"))
    rgbs, gts, poses = load_sweep(args.frames)
    print(f"7-Scenes redkitchen frames >= {FIRST}: {len(rgbs)} frames {rgbs[0].shape[1]}x{rgbs[0].shape[0]}, "
          f"H.264 crf 18; network input {input_size[1]}x{input_size[0]}, flip {'off' if args.no_flip else 'on'}")
    table: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = encode(Path(tmp) / "kitchen.mp4", rgbs, fps=15)
        for seed in seeds:
            ckpt = Path(args.runs) / f"seed_{seed}" / "checkpoint"
            for name, fig in measure(ckpt, clip, gts, poses, strengths, input_size, not args.no_flip).items():
                table.setdefault(name, []).append(fig)
                print(f"seed {seed} {name:>16}: scale flicker {fig['scale']:.4f}  pose flicker {fig['pose']:.4f}  "
                      f"delta1 {fig['d1']:.4f}  abs rel {fig['abs_rel']:.4f}", flush=True)
    base = table["per-frame"]
    print(f"\nmean over seeds {','.join(map(str, seeds))} (change vs per-frame: mean, [min, max] over seeds)\n")
    print("| prediction | scale flicker | change | pose flicker | change | delta1 | change | abs rel |")
    print("|---|---|---|---|---|---|---|---|")
    for name, figs in table.items():
        sc = [100 * (f["scale"] / b["scale"] - 1) for f, b in zip(figs, base)]
        po = [100 * (f["pose"] / b["pose"] - 1) for f, b in zip(figs, base)]
        dd = [f["d1"] - b["d1"] for f, b in zip(figs, base)]
        mean = {k: np.mean([f[k] for f in figs]) for k in figs[0]}
        print(f"| {name} | {mean['scale']:.4f} | {np.mean(sc):+.0f}% [{min(sc):+.0f}, {max(sc):+.0f}] | "
              f"{mean['pose']:.4f} | {np.mean(po):+.0f}% [{min(po):+.0f}, {max(po):+.0f}] | {mean['d1']:.4f} | "
              f"{np.mean(dd):+.4f} [{min(dd):+.4f}, {max(dd):+.4f}] | {mean['abs_rel']:.4f} |")


if __name__ == "__main__":
    main()
