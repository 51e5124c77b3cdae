"""Video throughput: frames/s of `transferdepth.apps.video.predict_video` and the decode / predict / write shares.

    python benchmarks/apps/video_throughput.py [--encoders mobilenetv2,efficientnet_lite0] [--size 480x640]
        [--frames 24] [--batch-size 4] [--flip] [--engines torch,onnx] [--repeats 1] [--device cpu]

A synthetic H.264 clip (a smooth random texture panning 4 px per frame, --frames frames at --size) is
written once; each run decodes it (PyAV), predicts in batches and writes the colour depth video (H.264)
and the float16 npz. "write" is everything after prediction: the npz, and the colour video's encoding.
Random weights (the time does not depend on them). Engines: `torch` = DepthEstimator (the CLI's path);
`onnx` = onnxruntime on the exported MetricDepth graph behind the same `predict_rgb` interface (there is
no `--engine onnx` in the CLI yet; this shows what it would give). No flip by default (--flip doubles the
network's work). Prints the machine's load and a Markdown table (best of --repeats per row).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from transferdepth import DepthEstimator
from transferdepth.apps.video import VideoOptions, predict_video
from transferdepth.weights.build import build_model


def make_clip(path: Path, frames: int, h: int, w: int, fps: int = 30) -> Path:
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h // 8 + 1, (w + 4 * frames) // 8 + 1, 3)).astype(np.uint8)
    base = np.kron(base, np.ones((8, 8, 1), np.uint8))  # 8x8 blocks: compressible, not trivial
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:h, 4 * i:4 * i + w]), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


class OnnxPredictor:
    """`predict_rgb` on an onnxruntime session of the exported MetricDepth graph (RGB [0,1] -> metres)."""

    def __init__(self, model, path: Path, threads: int):
        import onnxruntime as ort

        from transferdepth.deploy.export import export_onnx

        export_onnx(model, path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def predict_rgb(self, rgbs):
        x = np.stack(rgbs).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return list(self.sess.run(None, {"rgb": x})[0][:, 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default="mobilenetv2,efficientnet_lite0")
    ap.add_argument("--size", default="480x640", help="HxW")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--engines", default="torch,onnx")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads, device {args.device}; load average (1/5/15 min) at start: {load}; "
          f"{args.frames} frames {h}x{w}, batch {args.batch_size}, flip {'on' if args.flip else 'off'}, "
          f"best of {args.repeats}\n")
    print("| encoder | engine | frames/s | decode % | predict % | write % |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.frames, h, w)
        for name in args.encoders.split(","):
            torch.manual_seed(0)
            model = build_model(name, decoder_width=0.5, pretrained=False).eval()
            for engine in args.engines.split(","):
                if engine == "torch":
                    predictor = DepthEstimator(model, args.device, flip=args.flip)
                elif engine == "onnx":
                    if args.flip:
                        print(f"| {name} | onnx | (no flip in the exported graph) | | | |")
                        continue
                    try:
                        predictor = OnnxPredictor(model.cpu(), Path(tmp) / f"{name}.onnx", args.threads)
                    except ImportError as e:
                        print(f"| {name} | onnx | not available ({e}) | | | |")
                        continue
                else:
                    raise SystemExit(f"unknown engine {engine}")
                best = None
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    r = predict_video(clip, predictor, Path(tmp) / "out" / "clip",
                                      VideoOptions(batch_size=args.batch_size))
                    total = time.perf_counter() - t0
                    if best is None or total < best[0]:
                        best = (total, r)
                total, r = best
                s = r.seconds
                print(f"| {name} | {engine} | {r.frames / total:.2f} | {100 * s['decode'] / total:.0f} | "
                      f"{100 * s['predict'] / total:.0f} | {100 * s['write'] / total:.0f} |", flush=True)
    print(f"\nload average (1/5/15 min) at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
