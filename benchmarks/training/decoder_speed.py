"""Training speed per decoder at the same parameter budget: images/s of one training step, CPU.

    PYTHONPATH=src python benchmarks/training/decoder_speed.py [--encoder mobilenetv2] [--size 240x320]
        [--batch 4] [--repeats 5] [--rounds 3] [--decoders densedepth,unet,fpn,bts,fastdepth,dpt]

Every decoder gets the `decoder_width` whose decoder parameter count is closest to the DenseDepth decoder's at
the default width 0.5 (found by bisection on the count; the encoder is the same for all). A step is
`training.TrainStep` (forward, the default DenseDepth loss in the decoder's output space, backward, Adam), random
data, channels_last as training runs it. Each round times every decoder (median of --repeats steps after 2
warm-up steps) in turn; the table gives the median over rounds and the ratio to densedepth per round.
Time nothing else while it runs (two cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from transferdepth.models import available_decoders, create_model
from transferdepth.training import TrainStep, build, make_optimizer, set_memory_format
from transferdepth.training.config import TrainConfig
from transferdepth.utils import tune_cpu_allocator


def decoder_params(encoder: str, decoder: str, width: float) -> int:
    return sum(p.numel() for p in create_model(encoder, width, decoder=decoder).decoder.parameters())


def matched_width(encoder: str, decoder: str, target: int) -> float:
    """The width in [0.05, 2] whose decoder parameter count is closest to `target` (counts grow with width)."""
    lo, hi = 0.05, 2.0
    for _ in range(18):
        mid = (lo + hi) / 2
        if decoder_params(encoder, decoder, mid) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(decoder_params(encoder, decoder, w) - target))


def images_per_s(encoder: str, decoder: str, width: float, h: int, w: int, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    cfg = TrainConfig(encoder=encoder, decoder=decoder, decoder_width=width, pretrained=False, height=h, width=w,
                      batch_size=batch, device="cpu")
    model = set_memory_format(build(cfg).train(), cfg)
    step = TrainStep(model, model, make_optimizer(cfg, model), cfg, torch.device("cpu"), None)
    x = torch.randn(batch, 3, h, w)
    depth = 0.5 + 9 * torch.rand(batch, 1, h // 2, w // 2)
    valid = torch.ones_like(depth, dtype=torch.bool)
    for _ in range(2):
        step(x, depth, valid)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        applied, _ = step(x, depth, valid)
        times.append(time.perf_counter() - t)
        assert applied, "a benchmark step was skipped as non-finite"
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="mobilenetv2")
    ap.add_argument("--decoders", default=",".join(["densedepth", *(d for d in available_decoders() if d != "densedepth")]))
    ap.add_argument("--size", default="240x320")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tune_cpu_allocator()
    h, w = (int(v) for v in args.size.split("x"))
    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    target = decoder_params(args.encoder, "densedepth", 0.5)
    widths = {d: (0.5 if d == "densedepth" else matched_width(args.encoder, d, target)) for d in decoders}
    rates: dict[str, list[float]] = {d: [] for d in decoders}
    for _ in range(args.rounds):
        for d in decoders:
            rates[d].append(images_per_s(args.encoder, d, widths[d], h, w, args.batch, args.repeats))
    print(f"{args.encoder}, {h}x{w}, batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"decoder budget {target:,} parameters (densedepth at width 0.5); median of {args.rounds} rounds of "
          f"{args.repeats} steps\n")
    print("| decoder | width | decoder params | images/s | vs densedepth (per-round ratios) |")
    print("|---|---:|---:|---:|---|")
    base = rates.get("densedepth")
    for d in decoders:
        ratios = [a / b for a, b in zip(rates[d], base)] if base else []
        ratio = f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})" if ratios else "-"
        print(f"| {d} | {widths[d]:.3f} | {decoder_params(args.encoder, d, widths[d]):,} | "
              f"{statistics.median(rates[d]):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
