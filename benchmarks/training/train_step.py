"""Training-step throughput per encoder: images/s and achieved GFLOP/s, CPU (and CUDA: fp32 vs AMP).

    python benchmarks/training/train_step.py [--encoders a,b] [--sizes 480x640,240x320] [--batch 4] [--repeats 5]
                                    [--devices cpu,cuda]

A step = `transferdepth.training.TrainStep`, the step training runs (forward under AMP, DenseDepth loss, backward,
the NaN guard's finiteness checks of loss, gradients and weights, the optimizer update of the default recipe:
Adam with AMSGrad), batch `--batch`, random data with valid depth, a model built as training builds it.
Step FLOPs = 3 x the forward FLOPs counted by torch.utils.flop_counter (the backward of a conv or linear
layer costs its forward twice: input and weight gradients). The backward is not counted directly because
torch 2.14's counter ignores `groups` in convolution_backward and overcounts depthwise convolutions
(MobileNetV2, EfficientNet) many times over. The machine's matmul peak
(a large fp32 / bf16 matmul, median of 5) is printed for scale. Each figure is the median of --repeats
timed steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transferdepth.models import available_encoders
from transferdepth.training import TrainStep, build, make_optimizer, set_memory_format
from transferdepth.training.config import TrainConfig
from transferdepth.utils import tune_cpu_allocator


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def make_step(name: str, h: int, w: int, batch: int, device: torch.device, amp) -> tuple[TrainStep, torch.nn.Module]:
    """The training step of the default recipe for encoder `name` (random init), on `device`."""
    cfg = TrainConfig(encoder=name, pretrained=False, height=h, width=w, batch_size=batch, device=str(device))
    model = set_memory_format(build(cfg).to(device).train(), cfg)  # as training does (channels_last)
    return TrainStep(model, model, make_optimizer(cfg, model), cfg, device, amp), model


def measure(name: str, h: int, w: int, batch: int, device: torch.device, amp, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    step, model = make_step(name, h, w, batch, device, amp)
    x = torch.randn(batch, 3, h, w, device=device)
    depth = 0.5 + 9 * torch.rand(batch, 1, h // 2, w // 2, device=device)
    valid = torch.ones_like(depth, dtype=torch.bool)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    flops = 3 * counter.get_total_flops()  # forward + backward (grad of inputs and of weights: 2x forward)
    step(x, depth, valid)
    step(x, depth, valid)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        applied, _ = step(x, depth, valid)
        sync(device)
        times.append(time.perf_counter() - t)
        assert applied, "a benchmark step was skipped as non-finite"
    t = statistics.median(times)
    return batch / t, flops / t / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default=",".join(available_encoders()))
    ap.add_argument("--sizes", default="480x640,240x320")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precisions", default="fp32,bf16", help="CUDA: fp32 and/or bf16 (autocast); CPU: fp32")
    args = ap.parse_args()
    allocator = tune_cpu_allocator()  # as the CLI runs (docs/using.md)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch}, median of {args.repeats} steps after 2 warm-ups; malloc tuned: {allocator}")
    for dev in args.devices.split(","):
        device = torch.device(dev)
        wanted = args.precisions.split(",")
        modes: list[tuple[str, torch.dtype | None]] = [("fp32", None)] if "fp32" in wanted or dev == "cpu" else []
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            torch.backends.cudnn.benchmark = True
            if "bf16" in wanted:
                modes.append(("amp-bf16", torch.bfloat16))
            print(f"\n{dev} ({name}): matmul peak fp32 {matmul_peak_gflops(device, torch.float32, 8192):.0f} "
                  f"GFLOP/s (TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}), bf16 "
                  f"{matmul_peak_gflops(device, torch.bfloat16, 8192):.0f} GFLOP/s")
        else:
            print(f"\ncpu: matmul peak fp32 {matmul_peak_gflops(device, torch.float32, 2048):.0f} GFLOP/s")
        print("\n| device | precision | encoder | input | images/s | GFLOP/s |")
        print("|---|---|---|---|---|---|")
        for name in args.encoders.split(","):
            for size in args.sizes.split(","):
                for mode, amp in modes:
                    h, w = (int(v) for v in size.split("x"))
                    ips, gf = measure(name, h, w, args.batch, device, amp, args.repeats)
                    print(f"| {dev} | {mode} | {name} | {h}x{w} | {ips:.2f} | {gf:.0f} |", flush=True)


if __name__ == "__main__":
    main()
