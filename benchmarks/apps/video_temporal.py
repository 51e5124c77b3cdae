"""Temporal check: per-frame abs rel and flicker of raw video predictions on a rendered moving-camera clip.

    python benchmarks/apps/video_temporal.py [--checkpoint DIR] [--frames 24] [--size 240x320] [--seed 3]
        [--example docs/images/3d_example.png] [--temporal] [--temporal-strength 0.7] [--jitter 0.1]

The clip: one procedural room (transferdepth.data.procedural) rendered from --frames camera poses, the
camera sliding sideways 2 cm and turning 0.25 degrees per frame, each frame ray-cast exactly (exact
z-depth per frame; the same lighting and textures; fresh sensor noise per frame). It is encoded as H.264
(what a user's clip is), then run through `video.iter_depth` (decode, batched predict): raw predictions,
no smoothing.

Reported per frame: abs rel = mean |pred - gt| / gt on valid pixels (gt in 0.5-10 m). Flicker: the mean
absolute frame-to-frame change of log depth, |log p_t - log p_{t-1}|, on static pixels, i.e. pixels
whose true depth changes by less than 0.5 % between the two frames (with a moving camera no pixel is
exactly static; the true change on them is printed as the floor). Also the mean |d log p - d log gt|
over all valid pixels (the error in the frame-to-frame change).

With --temporal the same predictions also go through `apps.temporal.ScaleStabiliser` (what `predict
--temporal` does) and both are reported: flicker as above, scale flicker = mean over consecutive frames of
|log s_t - log s_(t-1)| with s_t = median(pred_t / gt_t) over valid pixels (the main figure of docs/3d.md
"Steady video"), abs rel and delta1 (share of valid pixels with max(p/g, g/p) < 1.25). --jitter SIGMA
multiplies frame t's prediction by exp(N(0, SIGMA)) (seeded) before that: a stand-in for a trained model's
per-frame scale noise when the model used has little of its own.

The renderer is driven through procedural.py's internals (_Builder, _cast, _shade, _vignette): its
public API renders one pose per scene. Without --checkpoint a random-weight MobileNetV2 (as the tests'
tiny model) is used: the figures then show the procedure, not a trained model's quality.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from transferdepth import DepthEstimator
from transferdepth.apps.video import iter_depth
from transferdepth.data import procedural as P

STATIC = 0.005  # |d log gt| below this: a static pixel


def render_clip(seed: int, frames: int, h: int, w: int, step_m: float = 0.02, yaw_deg: float = 0.25):
    """[(rgb uint8 HxWx3, z-depth float32 HxW metres)] for a camera sliding along its x axis and panning."""
    rng = np.random.default_rng((seed, 0))
    builder = P._Builder(rng)
    room, _ = builder.build()
    origin, rot = builder.camera()
    tab = rng.random((64, 64)).astype(np.float32)
    light_state = builder.rng.bit_generator.state  # _shade draws ambient and light power from builder.rng
    noise = np.random.default_rng((seed, 1))
    out = []
    for i in range(frames):
        a = math.radians(yaw_deg * i)
        r_yaw = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        rot_i = r_yaw @ rot
        origin_i = origin + rot[:, 0] * step_m * i
        builder.rng.bit_generator.state = light_state
        t, face, parts, dirs = P._cast(room, builder.objects, origin_i, rot_i, h, w)
        colour = P._shade(builder, parts, origin_i, dirs, t, face, tab) * P._vignette(h, w)
        colour += noise.standard_normal(colour.shape, dtype=np.float32) * np.float32(0.012)
        rgb = (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)
        out.append((rgb, t.reshape(h, w)))
    return out


def encode(path: Path, rgbs: list[np.ndarray], fps: int = 30) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps), options={"crf": "18"})
        s.width, s.height, s.pix_fmt = rgbs[0].shape[1], rgbs[0].shape[0], "yuv420p"
        for i, rgb in enumerate(rgbs):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def temporal_figures(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, object]:
    """abs rel per frame; flicker on static pixels; the floor (true change there); error of the change."""
    valid = [(g >= P.MIN_DEPTH_M) & (g <= P.MAX_DEPTH_M) for g in gts]
    absrel = [float(np.mean(np.abs(p[v] - g[v]) / g[v])) for p, g, v in zip(preds, gts, valid)]
    flick, floor, dchange, fraction = [], [], [], []
    for t in range(1, len(preds)):
        both = valid[t] & valid[t - 1]
        dg = np.log(gts[t]) - np.log(gts[t - 1])
        dp = np.log(preds[t]) - np.log(preds[t - 1])
        static = both & (np.abs(dg) < STATIC)
        fraction.append(float(static.sum() / both.sum()))
        flick.append(float(np.mean(np.abs(dp[static]))))
        floor.append(float(np.mean(np.abs(dg[static]))))
        dchange.append(float(np.mean(np.abs(dp[both] - dg[both]))))
    return {"absrel": absrel, "flicker": float(np.mean(flick)), "floor": float(np.mean(floor)),
            "change_error": float(np.mean(dchange)), "static_fraction": float(np.mean(fraction))}


def scale_flicker(preds: list[np.ndarray], gts: list[np.ndarray], valids: list[np.ndarray]) -> float:
    """mean_t |log s_t - log s_(t-1)|, s_t = median(pred_t / gt_t) over frame t's valid pixels."""
    s = np.log([np.median(p[v] / g[v]) for p, g, v in zip(preds, gts, valids)])
    return float(np.mean(np.abs(np.diff(s))))


def accuracy(preds: list[np.ndarray], gts: list[np.ndarray], valids: list[np.ndarray]) -> tuple[float, float]:
    """(abs rel, delta1), each the mean over frames of the frame's value on its valid pixels."""
    absrel = [np.mean(np.abs(p[v] - g[v]) / g[v]) for p, g, v in zip(preds, gts, valids)]
    d1 = [np.mean(np.maximum(p[v] / g[v], g[v] / p[v]) < 1.25) for p, g, v in zip(preds, gts, valids)]
    return float(np.mean(absrel)), float(np.mean(d1))


def report_temporal(preds: list[np.ndarray], gts: list[np.ndarray], strength: float,
                    rgbs: list[np.ndarray] | None = None) -> None:
    """Per-frame predictions vs the stabilised ones (given the decoded frames `rgbs`, as `predict --temporal`):
    both flickers, abs rel, delta1, the change."""
    from transferdepth.apps.temporal import ScaleStabiliser

    stab = ScaleStabiliser(strength)
    steady = [stab(p, rgb) for p, rgb in zip(preds, rgbs or [None] * len(preds))]
    valids = [(g >= P.MIN_DEPTH_M) & (g <= P.MAX_DEPTH_M) for g in gts]
    rows = {}
    for name, ps in (("per-frame", preds), (f"--temporal {strength:g}", steady)):
        fig = temporal_figures(ps, gts)
        rows[name] = (scale_flicker(ps, gts, valids), fig["flicker"], *accuracy(ps, gts, valids))
    print("| prediction | scale flicker | static-pixel flicker | abs rel | delta1 |")
    print("|---|---|---|---|---|")
    for name, (sf, fl, ar, d1) in rows.items():
        print(f"| {name} | {sf:.4f} | {fl:.4f} | {ar:.3f} | {d1:.3f} |")
    (sf0, fl0, ar0, d10), (sf1, fl1, ar1, d11) = rows.values()
    print(f"change: scale flicker {100 * (sf1 / sf0 - 1):+.0f}%, static-pixel flicker {100 * (fl1 / fl0 - 1):+.0f}%, "
          f"delta1 {d11 - d10:+.4f}, abs rel {ar1 - ar0:+.4f}")


def save_example(path: Path, rgb: np.ndarray, depth: np.ndarray) -> None:
    """The docs picture: frame | colourised depth (top), side-by-side stereo from it (bottom)."""
    from PIL import Image

    from transferdepth.api.predict import colorize
    from transferdepth.geometry.camera import nyu
    from transferdepth.geometry.stereo import StereoOptions, stereo_image

    h, w = depth.shape
    colour = colorize(depth, "plasma", (0.5, 6.0))[0]
    sbs = stereo_image(rgb, depth, nyu(w, h).fx, StereoOptions("sbs", 0.065, None))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([np.concatenate([rgb, colour], axis=1), sbs], axis=0)).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="240x320", help="HxW")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--example", default=None, help="also save the docs picture (frame 0, its exact depth) here")
    ap.add_argument("--temporal", action="store_true", help="also report the stabilised predictions")
    ap.add_argument("--temporal-strength", type=float, default=None, help="stabiliser strength (default 0.7)")
    ap.add_argument("--jitter", type=float, default=0.0, help="sigma of an added per-frame log-scale jitter")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    clip = render_clip(args.seed, args.frames, h, w)
    if args.example:
        save_example(Path(args.example), *clip[0])
    if args.checkpoint:
        est = DepthEstimator.from_pretrained(args.checkpoint, "cpu", flip=args.flip)
        what = args.checkpoint
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from helpers import tiny_model

        est = DepthEstimator(tiny_model(), "cpu", flip=args.flip)
        what = "random-weight MobileNetV2 (tests' tiny_model)"
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        path = encode(Path(tmp) / "room.mp4", [rgb for rgb, _ in clip])
        decoded = [(rgb, d) for _, _, rgb, d in iter_depth(path, est, batch_size=4)]
    preds = [d for _, d in decoded]
    assert len(preds) == len(clip)
    if args.jitter:
        noise = np.random.default_rng((args.seed, 2)).normal(0, args.jitter, len(preds))
        preds = [p * np.float32(np.exp(v)) for p, v in zip(preds, noise)]
    fig = temporal_figures(preds, [g for _, g in clip])
    print(f"model: {what}; {args.frames} frames {h}x{w}, seed {args.seed}, flip {'on' if args.flip else 'off'}")
    print("abs rel per frame: " + " ".join(f"{v:.3f}" for v in fig["absrel"]))
    print(f"abs rel mean {np.mean(fig['absrel']):.3f}")
    print(f"flicker (mean |d log depth| on static pixels, {100 * fig['static_fraction']:.0f}% of pixels): "
          f"{fig['flicker']:.4f} (true change there: {fig['floor']:.4f})")
    print(f"mean |d log pred - d log gt| over valid pixels: {fig['change_error']:.4f}")
    gt_fig = temporal_figures([g for _, g in clip], [g for _, g in clip])
    print(f"(the exact depth itself: flicker {gt_fig['flicker']:.4f}, abs rel {np.mean(gt_fig['absrel']):.3f})")
    if args.temporal or args.temporal_strength is not None:
        from transferdepth.apps.temporal import DEFAULT_STRENGTH

        strength = DEFAULT_STRENGTH if args.temporal_strength is None else args.temporal_strength
        print(f"jitter added: sigma {args.jitter:g} (log scale per frame)")
        report_temporal(preds, [g for _, g in clip], strength, [rgb for rgb, _ in decoded])


if __name__ == "__main__":
    main()
