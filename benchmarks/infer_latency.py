"""Inference latency: PyTorch eager vs onnxruntime (CPU) for the exported graph, per encoder.

    python benchmarks/infer_latency.py [--encoders a,b] [--size 480x640] [--repeats 5] [--threads N]

Both run the same thing: `transferdepth.export.MetricDepth` (RGB in [0,1] -> metres at the input size, no
flip), batch 1, fp32, random weights (latency does not depend on them). onnxruntime uses
ORT_ENABLE_ALL graph optimisations. Median of --repeats after --warmup runs. Prints the machine's load
(other work on the CPU slows both) and a Markdown table with the eager/ORT ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from transferdepth.build import build_model
from transferdepth.export import MetricDepth, export_onnx
from transferdepth.models import available_encoders


def median_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default=",".join(available_encoders()))
    ap.add_argument("--width", type=float, default=0.5, help="decoder width")
    ap.add_argument("--size", default="480x640", help="HxW")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} threads; load average (1/5/15 min) at start: {load}; "
          f"{h}x{w}, batch 1, median of {args.repeats} after {args.warmup} warm-up\n")
    print("| encoder | PyTorch eager ms | onnxruntime ms | eager / ORT |")
    print("|---|---|---|---|")
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            torch.manual_seed(0)
            model = build_model(name, decoder_width=args.width, pretrained=False).eval()
            wrapper = MetricDepth(model).eval()
            path = export_onnx(model, Path(tmp) / f"{name.replace(':', '_')}.onnx")
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            feed = {"rgb": x.numpy()}
            with torch.no_grad():
                eager = median_ms(lambda: wrapper(x), args.warmup, args.repeats)  # noqa: B023
            onnx_ms = median_ms(lambda: sess.run(None, feed), args.warmup, args.repeats)  # noqa: B023
            print(f"| {name} | {eager:.0f} | {onnx_ms:.0f} | {eager / onnx_ms:.2f} |", flush=True)
            path.unlink()
    print(f"\nload average (1/5/15 min) at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
