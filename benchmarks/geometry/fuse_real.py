"""Fusion on real data: 7-Scenes "redkitchen" frames held out from training, fused into one mesh each with
(a) the sensor's depth, (b) the real-data study's fine-tuned ImageNet-pretrained MobileNetV2, (c) its scratch
twin, (d) a constant depth (the training frames' median, the study's constant baseline); F-score at 5 cm and
chamfer of (b), (c), (d) against (a), per seed, with each alignment (`none`: metric depth as predicted;
`median-gt`: each frame scaled by median(sensor) / median(prediction)).

The protocol is shared with tests/apps/test_fuse_real.py (the CI test: 20 frames, one seed trained inside).

    PYTHONPATH=src python benchmarks/geometry/fuse_real.py --runs /work/shared_runs/base --every 1 \
        --render docs/images/fuse_kitchen.png      # the docs/3d.md table: 100 frames, seeds 0 1 2
    PYTHONPATH=src python benchmarks/geometry/fuse_real.py --runs /work/shared_runs/base --every 5   # CI's frames

`--runs` holds `pretrained/seed_N/` and `scratch/seed_N/` run folders (benchmarks/study/real_data_study.py's
layout: MobileNetV2 on frames < 800 at 128x96, 100 steps); nothing is trained here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from transferdepth.apps.fuse import ConstantDepth, FuseSettings, fuse_sequence
from transferdepth.data.rgbd import rgbd_root
from transferdepth.data.sequence import RGBDSequence
from transferdepth.evaluation.metrics3d import mesh_metrics
from transferdepth.geometry.fusion import Mesh
from transferdepth.utils import set_progress

HELD = (800, None)  # frame numbers held out from training (the study trains on < 800)
TRAIN = (None, 800)
INPUT_SIZE = (96, 128)  # the study's training resolution; predictions are made there and resized back
SETTINGS = dict(voxel_m=0.02, trunc_m=0.10, max_depth_m=5.0)  # coarser than the CLI's default: noisy depth
THRESHOLD = 0.05
POINTS = 100_000
SEEDS = (0, 1, 2)
CI_EVERY = 5  # the CI test's 20 frames: every 5th held-out file (frames 800, 810, ..., 990)


def kitchen() -> Path:
    return rgbd_root() / "7scenes-redkitchen"


def held_out(every: int) -> RGBDSequence:
    """Held-out frames >= 800 of the kitchen (100 files: every 2nd frame of 800-999), every `every`-th."""
    return RGBDSequence(kitchen(), index=HELD, every=every)


def training_median() -> float:
    """The median valid sensor depth (metres) over the training frames (< 800) at full resolution."""
    train = RGBDSequence(kitchen(), index=TRAIN)
    return float(np.median(np.concatenate([(f := train.frame(i))["depth"][f["valid"]] for i in range(len(train))])))


def sensor_mesh(seq: RGBDSequence) -> Mesh:
    """(a): the sequence's sensor depth fused."""
    return fuse_sequence(seq, None, FuseSettings(**SETTINGS), "sensor").mesh


def score(seq: RGBDSequence, predictor: Any, reference: Mesh, align: str) -> dict[str, Any]:
    """Fuse `seq` with `predictor` under `align` and compare with `reference` (F-score at THRESHOLD, chamfer)."""
    result = fuse_sequence(seq, predictor, FuseSettings(**SETTINGS, align=align), "model")
    m = mesh_metrics(result.mesh, reference, THRESHOLD, POINTS)
    return {k: m[k] for k in ("fscore", "chamfer", "accuracy", "completeness", "precision", "recall")} | {
        "mesh": result.mesh}


def estimator(run: Path):
    from transferdepth.api.estimator import DepthEstimator

    return DepthEstimator.from_pretrained(run / "checkpoint", device="cpu", input_size=INPUT_SIZE)


def study(runs: Path, every: int, seeds=SEEDS, aligns=("none", "median-gt")) -> dict[str, Any]:
    """Every figure of the table: {align: {row: [per-seed dict]}} plus the constant and the meshes of seed 0."""
    seq = held_out(every)
    ref = sensor_mesh(seq)
    const = training_median()
    table: dict[str, Any] = {"frames": len(seq), "constant_m": const, "settings": SETTINGS, "rows": {}}
    meshes = {"sensor": ref}
    for align in aligns:
        rows = table["rows"].setdefault(align, {})
        d = score(seq, ConstantDepth(const), ref, align)
        rows["constant"] = [{k: v for k, v in d.items() if k != "mesh"}]
        for variant in ("pretrained", "scratch"):
            for seed in seeds:
                s = score(seq, estimator(runs / variant / f"seed_{seed}"), ref, align)
                if seed == seeds[0] and align == "none":
                    meshes[variant] = s["mesh"]
                rows.setdefault(variant, []).append({"seed": seed} | {k: v for k, v in s.items() if k != "mesh"})
                print(f"{align:9s} {variant:10s} seed {seed}: F {s['fscore']:.3f} chamfer {s['chamfer'] * 100:.1f} cm",
                      file=sys.stderr, flush=True)
    return {"table": table, "meshes": meshes}


def markdown(table: dict[str, Any]) -> str:
    """Mean +- sd over seeds of F-score and chamfer per row and alignment."""
    lines = ["| depth | align | F-score @5 cm | chamfer (cm) | accuracy (cm) | completeness (cm) | per-seed F |",
             "|---|---|---|---|---|---|---|"]
    for align, rows in table["rows"].items():
        for name, runs in rows.items():
            def ms(key: str, scale: float = 1.0, runs: list = runs) -> str:
                v = np.array([r[key] for r in runs]) * scale
                return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} +- {v.std(ddof=1):.3f}"
            per = ", ".join(f"{r['fscore']:.3f}" for r in runs)
            lines.append(f"| {name} | {align} | {ms('fscore')} | {ms('chamfer', 100)} | {ms('accuracy', 100)} | "
                         f"{ms('completeness', 100)} | {per} |")
    return "\n".join(lines)


def vertex_normals(mesh: Mesh) -> np.ndarray:
    """Unit normals per vertex: the area-weighted sum of the normals of its faces."""
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v)
    for i in range(3):
        np.add.at(out, f[:, i], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def render(mesh: Mesh, k: np.ndarray, cam_to_world: np.ndarray, size=(240, 320), voxel_m: float = 0.02) -> np.ndarray:
    """A grey Lambert-shaded picture of the mesh seen from a pinhole camera (k at 640x480, scaled to `size`):
    each vertex is drawn as a square about 1.5 voxels wide at its depth (so neighbouring vertices touch), the
    nearest one winning each pixel (z-buffer); light from the camera. uint8 (H, W, 3)."""
    h, w = size
    scale = w / 640.0
    world_to_cam = np.linalg.inv(cam_to_world)
    p = mesh.vertices.astype(np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    n = vertex_normals(mesh) @ world_to_cam[:3, :3].T
    ok = p[:, 2] > 0.05
    p, n = p[ok], n[ok]
    u = (k[0, 0] * p[:, 0] / p[:, 2] + k[0, 2]) * scale
    v = (k[1, 1] * p[:, 1] / p[:, 2] + k[1, 2]) * scale
    shade = np.abs(np.sum(n * (-p / np.linalg.norm(p, axis=1, keepdims=True)), axis=1))
    splat = np.clip(np.ceil(1.5 * voxel_m * k[0, 0] * scale / p[:, 2]), 1, 8).astype(int)
    us, vs, zs, cs = [], [], [], []
    for size_px in np.unique(splat):
        sel = splat == size_px
        for du in range(size_px):
            for dv in range(size_px):
                us.append(np.floor(u[sel]).astype(int) + du - size_px // 2)
                vs.append(np.floor(v[sel]).astype(int) + dv - size_px // 2)
                zs.append(p[sel, 2]), cs.append(shade[sel])
    u, v, z, c = (np.concatenate(a) for a in (us, vs, zs, cs))
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z, c = u[inside], v[inside], z[inside], c[inside]
    pix = v * w + u
    order = np.lexsort((z, pix))  # by pixel, nearest first
    first = order[np.unique(pix[order], return_index=True)[1]]
    image = np.full((h, w, 3), 255, np.uint8)
    image.reshape(-1, 3)[pix[first]] = (40 + 200 * c[first]).astype(np.uint8)[:, None]
    return image


def render_pair(meshes: list[Mesh], titles: list[str], k: np.ndarray, cam_to_world: np.ndarray, path: Path) -> None:
    """The meshes rendered side by side from one camera, a title above each, written as a PNG (atomically)."""
    from PIL import Image, ImageDraw

    from transferdepth.utils import atomic_write

    tiles = []
    for mesh, title in zip(meshes, titles):
        tile = Image.new("RGB", (320, 258), "white")
        tile.paste(Image.fromarray(render(mesh, k, cam_to_world, voxel_m=SETTINGS["voxel_m"])), (0, 18))
        ImageDraw.Draw(tile).text((4, 3), title, fill="black")
        tiles.append(tile)
    out = Image.new("RGB", (320 * len(tiles), 258), "white")
    for i, tile in enumerate(tiles):
        out.paste(tile, (320 * i, 0))
    with atomic_write(path) as tmp:
        out.convert("L").save(tmp, format="PNG", optimize=True)  # grey: a third of the size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="folder with pretrained/seed_N and scratch/seed_N runs")
    ap.add_argument("--every", type=int, default=1, help="fuse every N-th held-out file (1: 100 frames)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--render", type=Path, default=None, help="PNG of (a) sensor and (b) pretrained seed 0")
    ap.add_argument("--render-only", action="store_true", help="only the picture (fuses (a) and (b) seed 0)")
    args = ap.parse_args()
    set_progress("none")
    if args.render_only:
        seq = held_out(args.every)
        model = estimator(args.runs / "pretrained" / f"seed_{args.seeds[0]}")
        out = {"meshes": {"sensor": sensor_mesh(seq),
                          "pretrained": fuse_sequence(seq, model, FuseSettings(**SETTINGS), "model").mesh}}
    else:
        out = study(args.runs, args.every, tuple(args.seeds))
        print(markdown(out["table"]))
        if args.json:
            args.json.write_text(json.dumps(out["table"], indent=1))
    if args.render:
        seq = held_out(args.every)
        back = np.eye(4)
        back[2, 3] = -0.5  # 0.5 m behind the middle frame's camera
        view = seq.frames[len(seq) // 2].pose @ back
        render_pair([out["meshes"]["sensor"], out["meshes"]["pretrained"]],
                    ["(a) sensor depth", "(b) fine-tuned pretrained MobileNetV2"], seq.intrinsics, view, args.render)
        print(f"wrote {args.render}")


if __name__ == "__main__":
    main()
