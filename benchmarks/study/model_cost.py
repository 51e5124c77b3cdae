"""Cost of every registry encoder + DenseDepth decoder: parameters, GFLOPs, CPU forward latency.

    python benchmarks/study/model_cost.py [--encoders a,b] [--repeats 5] [--threads N]

GFLOPs: one forward at 480x640 counted by torch.utils.flop_counter (a multiply-add = 2 FLOPs).
Latency: median of --repeats timed forwards after one warm-up, batch 1, fp32, eval mode, no grad.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferdepth.models import available_encoders
from transferdepth.weights.build import build_model


def gflops(model: torch.nn.Module, h: int, w: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def latency_ms(model: torch.nn.Module, h: int, w: int, repeats: int) -> float:
    x = torch.randn(1, 3, h, w)
    times = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default=",".join(available_encoders()))
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, median of {args.repeats} after 1 warm-up\n")
    print("| encoder | width | params (M) | encoder (M) | GFLOPs @480x640 | CPU ms @480x640 | CPU ms @240x320 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.encoders.split(","):
        for width in (float(w) for w in args.widths.split(",")):
            torch.manual_seed(0)
            model = build_model(name, decoder_width=width, pretrained=False).eval()
            params = sum(p.numel() for p in model.parameters()) / 1e6
            enc = sum(p.numel() for p in model.encoder.parameters()) / 1e6
            row = (name, width, params, enc, gflops(model, 480, 640),
                   latency_ms(model, 480, 640, args.repeats), latency_ms(model, 240, 320, args.repeats))
            print("| {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.0f} | {:.0f} |".format(*row), flush=True)


if __name__ == "__main__":
    main()
