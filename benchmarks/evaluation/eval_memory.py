"""Peak memory of `evaluate` over N procedural 480x640 images: it must not grow with N (streaming).

    python benchmarks/evaluation/eval_memory.py --n 100
    python benchmarks/evaluation/eval_memory.py --n 654          # run each N in its own process: peak RSS is per process
    python benchmarks/evaluation/eval_memory.py --n 100 --in-memory   # the old way (predict_dataset + evaluate), to compare

The model is a random MobileNetV2 + decoder of width 0.25 (pretrained=False) fed 120x160 (`--size`, as
`evaluate --size`; predictions and metrics are at the ground truth's 480x640): memory, not accuracy, is
measured, and the run fits a few minutes on 2 CPU cores. Images are generated on the fly (`procedural:`), so the dataset holds nothing. Prints a Markdown
row: images, protocol, mode, seconds, peak RSS (MiB, from getrusage: the whole process, Python and torch
included).
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from transferdepth.data import open_dataset
from transferdepth.evaluation.evaluate import evaluate, predict_dataset
from transferdepth.weights.build import build_model


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="number of test images")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--size", default="120x160",
                    help="network input HEIGHTxWIDTH (predictions are resized to the 480x640 ground truth)")
    ap.add_argument("--protocol", default="densedepth", choices=("densedepth", "eigen"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--in-memory", action="store_true", help="predict_dataset first, then evaluate (old way)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("mobilenetv2", decoder_width=0.25, pretrained=False).eval()
    data = open_dataset(f"procedural:n={args.n}&seed=0&height={args.height}&width={args.width}")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    before = peak_rss_mib()
    t = time.perf_counter()
    if args.in_memory:
        preds = predict_dataset(model, data, size=size, batch_size=args.batch_size, device="cpu")
        m = evaluate(model, data, args.protocol, predictions=preds)
    else:
        m = evaluate(model, data, args.protocol, size=size, batch_size=args.batch_size, device="cpu")
    seconds = time.perf_counter() - t
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"peak RSS before evaluating: {before:.0f} MiB; abs_rel {m['abs_rel']:.4f}")
    print("| images | size | protocol | mode | seconds | peak RSS (MiB) |")
    print("|---:|---|---|---|---:|---:|")
    print(f"| {m['n_images']} | {args.height}x{args.width} (net {args.size}) | {args.protocol} | "
          f"{'in memory' if args.in_memory else 'streaming'} | {seconds:.0f} | {peak_rss_mib():.0f} |")


if __name__ == "__main__":
    main()
