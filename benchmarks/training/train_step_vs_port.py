"""Our full training step against DenseDepth's PyTorch port on the same model, in one process, alternating.

    python benchmarks/training/train_step_vs_port.py [--sizes 240x320,480x640] [--batch 4] [--threads 2]
                                            [--repeats 5] [--warmup 2] [--old] [--nchw] [--infer 480x640|none]
                                            [--profile]
    python benchmarks/training/train_step_vs_port.py --quick      # 240x320, 3 repeats, 1 warm-up, no inference

Model: DenseNet-169 (torchvision, random init: nothing is downloaded), decoder width 1.0 (the paper's 42.6M
parameters, the `densedepth-2018` recipe: no activation after convA).

- ours: `transferdepth.training.TrainStep` exactly as training runs it with `--recipe densedepth-2018`
  (channels_last memory, the default): DepthNet
  (no input padding since `pad_multiple`; sides under 32 only), the full loss (L1 + gradient term + SSIM,
  masked), the NaN guard (finiteness of the loss, of every gradient and of every weight), Adam with AMSGrad
  (`make_optimizer`, torch's default implementation).
- port: built here as DenseDepth's `PyTorch/` folder does it (model.py, loss.py, train.py): torchvision's
  `densenet169().features` run module by module, a plain decoder (1x1 conv2 with the port's padding=1,
  four blocks: bilinear upsampling to the skip's size with align_corners=True, concat, convA 3x3, convB 3x3,
  LeakyReLU(0.2), then a 3x3 conv to one channel), the port's loss (0.1 x L1 + clamp((1 - SSIM) / 2) with an
  11x11 Gaussian window, no gradient term, no mask) and plain Adam; `loss.item()` once per step, as its
  training loop logs it.
- ours-nchw (`--nchw`): ours with `channels_last: false` (NCHW memory, as before channels_last became the
  default; the port runs NCHW).
- ours-pad32 (`--old`): ours, NCHW, with `pad_multiple=32`, i.e. every side padded to a multiple of 32 as all models
  did before (and checkpoints written before the key still do).

Each timed round runs one step of every variant in turn (the order rotates each round), so machine load hits
them alike; figures are medians over `--repeats` rounds after `--warmup` rounds. `speed vs port` = port's
median step time / ours (> 1: ours is faster; the issue's target is >= 1.1). GFLOP/s = 3 x the forward FLOPs
(torch.utils.flop_counter) / the step time, against the machine's measured peaks: a 2048^2 fp32 matmul and a
3x3 fp32 convolution (256 -> 256 channels, 60x80, batch 4), each the median of 5 at the same thread count.
`--infer`: eval-mode, no-grad forward at batch 1: ours through `transferdepth.inference.core.infer(flip=False)` (the
one inference path: network, DepthNorm to metres, resize to the input size, clamp) against the port's
`model(x)` followed by the same DepthNorm, x2 bilinear resize and clamp.
`--profile`: torch.profiler's top operators (self CPU time) for one step of each variant.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from transferdepth.inference.core import infer
from transferdepth.recipe import PRESETS
from transferdepth.training import TrainStep, build, make_optimizer, set_memory_format
from transferdepth.training.config import TrainConfig
from transferdepth.utils import tune_cpu_allocator

# --- DenseDepth's PyTorch port (PyTorch/model.py, loss.py, train.py), written out plainly ----------------------


class PortUpSample(nn.Module):
    def __init__(self, skip_input: int, output_features: int):
        super().__init__()
        self.convA = nn.Conv2d(skip_input, output_features, kernel_size=3, stride=1, padding=1)
        self.convB = nn.Conv2d(output_features, output_features, kernel_size=3, stride=1, padding=1)
        self.leakyreluB = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, concat_with: torch.Tensor) -> torch.Tensor:
        up_x = F.interpolate(x, size=[concat_with.size(2), concat_with.size(3)], mode="bilinear", align_corners=True)
        return self.leakyreluB(self.convB(self.convA(torch.cat([up_x, concat_with], dim=1))))


class PortDecoder(nn.Module):
    def __init__(self, num_features: int = 1664, decoder_width: float = 1.0):
        super().__init__()
        features = int(num_features * decoder_width)
        self.conv2 = nn.Conv2d(num_features, features, kernel_size=1, stride=1, padding=1)  # padding=1 as the port
        self.up1 = PortUpSample(features // 1 + 256, features // 2)
        self.up2 = PortUpSample(features // 2 + 128, features // 4)
        self.up3 = PortUpSample(features // 4 + 64, features // 8)
        self.up4 = PortUpSample(features // 8 + 64, features // 16)
        self.conv3 = nn.Conv2d(features // 16, 1, kernel_size=3, stride=1, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x_block0, x_block1, x_block2, x_block3, x_block4 = (features[3], features[4], features[6], features[8],
                                                            features[12])
        x_d0 = self.conv2(F.relu(x_block4))
        x_d1 = self.up1(x_d0, x_block3)
        x_d2 = self.up2(x_d1, x_block2)
        x_d3 = self.up3(x_d2, x_block1)
        x_d4 = self.up4(x_d3, x_block0)
        return self.conv3(x_d4)


class PortEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.original_model = torchvision.models.densenet169(weights=None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for _k, v in self.original_model.features._modules.items():
            features.append(v(features[-1]))
        return features


class PortModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = PortEncoder()
        self.decoder = PortDecoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _gaussian_window(window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(window_size, dtype=torch.float32) - window_size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None]
    return (g @ g.t())[None, None]


def port_ssim(img1: torch.Tensor, img2: torch.Tensor, val_range: float, window: torch.Tensor) -> torch.Tensor:
    mu1 = F.conv2d(img1, window, padding=0, groups=1)
    mu2 = F.conv2d(img2, window, padding=0, groups=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=0, groups=1) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=0, groups=1) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=0, groups=1) - mu1_mu2
    c1, c2 = (0.01 * val_range) ** 2, (0.03 * val_range) ** 2
    v1, v2 = 2.0 * sigma12 + c2, sigma1_sq + sigma2_sq + c2
    return (((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)).mean()


class PortStep:
    """train.py's inner loop: forward, 0.1 x L1 + SSIM term on DepthNorm (1000 / depth_cm), Adam."""

    def __init__(self, model: PortModel):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), 1e-4)
        self.l1 = nn.L1Loss()
        self.window = _gaussian_window()

    def __call__(self, x: torch.Tensor, depth_m: torch.Tensor, _valid: torch.Tensor) -> float:
        self.opt.zero_grad()
        depth_n = 1000.0 / (depth_m * 100.0)  # DepthNorm(depth) with maxDepth 1000 cm
        output = self.model(x)
        l_depth = self.l1(output, depth_n)
        l_ssim = torch.clamp((1 - port_ssim(output, depth_n, 1000.0 / 10.0, self.window)) * 0.5, 0, 1)
        loss = (1.0 * l_ssim) + (0.1 * l_depth)
        value = loss.item()
        loss.backward()
        self.opt.step()
        return value


# --- ours -------------------------------------------------------------------------------------------------


def our_step(h: int, w: int, batch: int, pad_multiple: int = 1,
             channels_last: bool = True) -> tuple[TrainStep, nn.Module]:
    cfg = TrainConfig(**{**PRESETS["densedepth-2018"], "recipe": "densedepth-2018", "encoder": "densenet169",
                         "pretrained": False, "height": h, "width": w, "batch_size": batch, "device": "cpu",
                         "channels_last": channels_last})
    model = build(cfg).train()
    model.pad_multiple = pad_multiple
    set_memory_format(model, cfg)  # as training does
    step = TrainStep(model, model, make_optimizer(cfg, model), cfg, torch.device("cpu"), None)

    def run(x, depth, valid):
        applied, _ = step(x, depth, valid)
        assert applied, "a benchmark step was skipped as non-finite"

    return run, model


# --- measuring --------------------------------------------------------------------------------------------


def median_time(fn: Callable[[], object], n: int = 5) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peaks() -> tuple[float, float]:
    """(matmul, 3x3 conv) fp32 GFLOP/s at the current thread count."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    mm = 2 * 2048**3 / median_time(lambda: a @ b) / 1e9
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    x = torch.randn(4, 256, 60, 80)
    with torch.no_grad():
        cv = 2 * 4 * 256 * 256 * 9 * 60 * 80 / median_time(lambda: conv(x)) / 1e9
    return mm, cv


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average n/a"


def compare_training(h: int, w: int, args, peak_mm: float, peak_conv: float) -> None:
    torch.manual_seed(0)
    variants: dict[str, tuple[Callable, nn.Module]] = {"ours": our_step(h, w, args.batch)}
    if args.old:
        variants["ours-pad32"] = our_step(h, w, args.batch, pad_multiple=32, channels_last=False)
    if args.nchw:
        variants["ours-nchw"] = our_step(h, w, args.batch, channels_last=False)
    port = PortModel().train()
    variants["port"] = (PortStep(port), port)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, h, w, generator=g)
    hh, ww = (h + 1) // 2, (w + 1) // 2
    depth = 0.5 + 9 * torch.rand(args.batch, 1, hh, ww, generator=g)
    valid = torch.ones_like(depth, dtype=torch.bool)
    flops = {k: 3 * forward_flops(m, x) for k, (_, m) in variants.items()}
    for k, (_, m) in variants.items():
        with torch.no_grad():
            assert m(x).shape[-2:] == (hh, ww), (k, m(x).shape)
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    print(f"\n{h}x{w}, batch {args.batch}: {load()} (start)", flush=True)
    for r in range(args.warmup + args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            t = time.perf_counter()
            variants[k][0](x, depth, valid)
            dt = time.perf_counter() - t
            if r >= args.warmup:
                times[k].append(dt)
        if args.verbose:
            print(f"  round {r}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in names if times[k]), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{h}x{w}, batch {args.batch}: {load()} (end)")
    print("\n| variant | input | step s (median) | min | max | images/s | speed vs port | GFLOP/s | of matmul peak "
          "| of conv peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in names:
        gf = flops[k] / med[k] / 1e9
        print(f"| {k} | {h}x{w} | {med[k]:.3f} | {min(times[k]):.3f} | {max(times[k]):.3f} | "
              f"{args.batch / med[k]:.2f} | {med['port'] / med[k]:.3f}x | {gf:.1f} | {gf / peak_mm:.0%} | "
              f"{gf / peak_conv:.0%} |")
    paired = [p / o for p, o in zip(times["port"], times["ours"])]
    print(f"ours vs port, per round (port/ours): {', '.join(f'{v:.3f}' for v in paired)}; "
          f"median {statistics.median(paired):.3f}x")
    if args.profile:
        profile_steps(variants, x, depth, valid)


def profile_steps(variants, x, depth, valid) -> None:
    from torch.profiler import ProfilerActivity, profile

    for k, (fn, _) in variants.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn(x, depth, valid)
        print(f"\nprofile: {k} (one step), top operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))


def compare_inference(h: int, w: int, args) -> None:
    torch.manual_seed(0)
    ours = our_step(h, w, 1)[1].eval()
    port = PortModel().eval()
    rgb = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(2))

    def run_ours():
        return infer(ours, rgb, flip=False)

    @torch.no_grad()
    def run_port():
        dn = port(ours.normalize(rgb))
        return F.interpolate(1000.0 / dn / 100.0, size=(h, w), mode="bilinear", align_corners=False).clamp(0.1, 10)

    fns = {"ours (infer)": run_ours, "port": run_port}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.warmup + args.repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            fns[k]()
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\ninference {h}x{w}, batch 1, eval, no grad: {load()}")
    print("\n| variant | input | s (median) | images/s | speed vs port |")
    print("|---|---|---|---|---|")
    for k in fns:
        print(f"| {k} | {h}x{w} | {med[k]:.3f} | {1 / med[k]:.2f} | {med['port'] / med[k]:.3f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="240x320,480x640", help="HxW,... for the training step")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--infer", default="480x640", help="HxW for the inference comparison, or 'none'")
    ap.add_argument("--old", action="store_true", help="also time ours with pad_multiple=32 (before this change)")
    ap.add_argument("--nchw", action="store_true", help="also time ours with `channels_last: false` (NCHW)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one step per variant")
    ap.add_argument("--quick", action="store_true", help="240x320 only, 3 repeats, 1 warm-up, no inference")
    ap.add_argument("--verbose", action="store_true", help="print every round's times")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.warmup, args.infer = "240x320", 3, 1, "none"
    torch.set_num_threads(args.threads)
    allocator = tune_cpu_allocator()  # as the CLI runs (docs/using.md)
    peak_mm, peak_conv = peaks()
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} "
          f"CPUs; DenseNet-169, decoder width 1.0 (densedepth-2018), batch {args.batch}, fp32; median of "
          f"{args.repeats} rounds after {args.warmup} warm-up rounds; malloc tuned: {allocator}")
    print(f"measured peaks at {args.threads} threads: matmul {peak_mm:.1f} GFLOP/s, 3x3 conv {peak_conv:.1f} "
          f"GFLOP/s; {load()}")
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        compare_training(h, w, args, peak_mm, peak_conv)
    if args.infer != "none":
        h, w = (int(v) for v in args.infer.split("x"))
        compare_inference(h, w, args)


if __name__ == "__main__":
    main()
