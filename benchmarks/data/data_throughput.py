"""Throughput of the nyu-zip reader through a torch DataLoader vs a bare PIL decode loop, and the training
loader's share of a training step.

Writes (into a temp dir) a DenseDepth-format nyu_data.zip of N 640x480 pairs: JPEG RGB (quality 95) and
8-bit PNG depth, with smooth gradients and shapes. Then:

1. Full resolution (640x480 samples as the reader returns them), samples/s:
  - bare: one process reads each member from the zip and decodes it with PIL (no metres, no checks);
  - DataLoader over `open_dataset("nyu-zip:...")`, num_workers 0/1/2, batch_size 8, with our collate
    (`transferdepth.data.collate.SharedCollate`, the training loader's: a worker stacks into shared-memory
    buffers it reuses once the main process has dropped a batch), and, for comparison, with 2 workers: a
    collate that stacks into fresh shared memory per batch (one copy, as torch's default_collate does) and
    one that stacks with numpy so that torch copies the batch again into shared memory to send it;
  - the same DataLoader over a dataset that returns one pre-decoded sample (no decoding at all): the cost
    of moving full-resolution samples from worker processes to the main process (the IPC ceiling).
  Variants alternate inside each repeat (the machine may be shared); median of --repeats runs, worker
  start-up included, and again counting only after the first batch (start-up excluded: what most of a long
  epoch sees). The line `2 workers / bare` (start-up included) is the ratio the issue asks to be >= 0.9.
2. Training (--train-steps > 0): MobileNetV2 (random init), the default recipe's `TrainStep`, batch 8,
   240x320, the real training loader (`train.data.open_train_data` + `epoch_loader`, 2 workers, TrainTransform
   in the workers, uint8 images normalised in the main process) against the same step on one pre-made batch
   held in memory, with torch using 2 and 1 threads in the main process; also the same loader with torch's
   default_collate (fresh shared memory per batch), and "before": the loader as it first was (float32
   images normalised in the workers, stacked with torch.stack and copied again into shared memory). Prints images/s, the time the main process waited in next(loader) per step (the loader's share)
   and the step time. On a machine with few cores the workers compete with the training threads for the
   same cores: that cost shows as a slower step, not as waiting, so compare images/s with the pre-made batch.

Prints the CPU count and the load average before and after, since a busy machine moves every figure.

    python benchmarks/data/data_throughput.py --n 200 --repeats 3 --train-steps 8
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DistributedSampler

from transferdepth.data import open_dataset
from transferdepth.data.collate import SharedCollate
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.training import TrainStep, build, make_optimizer, set_memory_format
from transferdepth.training import data as tdata
from transferdepth.training.config import TrainConfig


def scene(i: int, w: int = 640, h: int = 480) -> tuple[bytes, bytes]:
    """One synthetic pair: JPEG RGB bytes and 8-bit PNG depth bytes (v = metres / 10 * 255)."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 1 - x / w], -1) * rng.uniform(120, 255, 3)
    rgb = Image.fromarray(base.astype(np.uint8))
    depth = Image.fromarray((40 + 200 * y / h).astype(np.uint8))  # floor-like ramp, 1.6 .. 9.4 m
    draw_rgb, draw_depth = ImageDraw.Draw(rgb), ImageDraw.Draw(depth)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 120)), int(rng.integers(0, h - 120))
        box = [x0, y0, x0 + int(rng.integers(40, 120)), y0 + int(rng.integers(40, 120))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shade = int(rng.integers(30, 250))
        if rng.random() < 0.5:
            draw_rgb.ellipse(box, fill=colour)
            draw_depth.ellipse(box, fill=shade)
        else:
            draw_rgb.rectangle(box, fill=colour)
            draw_depth.rectangle(box, fill=shade)
    jpg, png = io.BytesIO(), io.BytesIO()
    rgb.save(jpg, "JPEG", quality=95)
    depth.save(png, "PNG")
    return jpg.getvalue(), png.getvalue()


def write_zip(path: Path, n: int) -> list[tuple[str, str]]:
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            stem = f"data/nyu2_train/bench_scene_{i // 50:04d}_out/{i}"
            jpg, png = scene(i)
            zf.writestr(f"{stem}.jpg", jpg)
            zf.writestr(f"{stem}.png", png)
            rows.append((f"{stem}.jpg", f"{stem}.png"))
        zf.writestr("data/nyu2_train.csv", "".join(f"{a},{b}\n" for a, b in rows))
    return rows


def fresh_shared_stack(samples: list[dict]) -> dict:
    """Collate as torch's default_collate does: stack arrays into tensors (B,H,W,3 uint8 / B,H,W float32 /
    bool), names as a list; inside a DataLoader worker into fresh shared memory for every batch."""
    out: dict = {"name": [s["name"] for s in samples]}
    worker = torch.utils.data.get_worker_info() is not None
    for key in ("rgb", "depth", "valid"):
        arrays = [s[key] for s in samples]
        shape, dtype = (len(arrays), *arrays[0].shape), torch.from_numpy(np.zeros(0, arrays[0].dtype)).dtype
        if worker:
            storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * arrays[0].itemsize)
            t = torch.empty(0, dtype=dtype).set_(storage).view(shape)
        else:
            t = torch.empty(shape, dtype=dtype)
        np.stack(arrays, out=t.numpy())
        out[key] = t
    return out


def stack_then_copy(samples: list[dict]) -> dict:
    """Collate as this benchmark first did: numpy stack, then torch copies the batch into shared memory."""
    return {"rgb": torch.from_numpy(np.stack([s["rgb"] for s in samples])),
            "depth": torch.from_numpy(np.stack([s["depth"] for s in samples])),
            "valid": torch.from_numpy(np.stack([s["valid"] for s in samples])),
            "name": [s["name"] for s in samples]}


def bare(path: Path, rows: list[tuple[str, str]]) -> float:
    t = time.perf_counter()
    with zipfile.ZipFile(path) as zf:
        for a, b in rows:
            np.asarray(Image.open(io.BytesIO(zf.read(a))).convert("RGB"))
            np.asarray(Image.open(io.BytesIO(zf.read(b))))
    return len(rows) / (time.perf_counter() - t)


class Predecoded(torch.utils.data.Dataset):
    """Returns copies of one already decoded sample: what is left is DataLoader and IPC overhead."""

    def __init__(self, sample: dict, n: int):
        self.sample, self.n = sample, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.sample.items()}


def loader(ds: torch.utils.data.Dataset, workers: int, batch_size: int, collate=None) -> tuple[float, float]:
    """Samples/s of one pass with worker start-up included, and after the first batch (what most of a long
    epoch sees); collate None: ours (SharedCollate)."""
    collate = collate or SharedCollate(("rgb", "depth", "valid"), {"name": None})
    t = time.perf_counter()
    n = n_first = 0
    t_first = None
    for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate):
        n += len(batch["name"])
        if t_first is None:
            t_first, n_first = time.perf_counter(), n
    end = time.perf_counter()
    return n / (end - t), (n - n_first) / (end - t_first) if n > n_first else float("nan")


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min)"


def full_resolution(path: Path, rows: list[tuple[str, str]], args: argparse.Namespace) -> None:
    ds = open_dataset(f"nyu-zip:{path}")
    fixed = Predecoded(ds[0], len(ds))
    variants: list[tuple[str, str, Callable[[], tuple[float, float]]]] = [
        ("bare PIL decode loop", "-", lambda: (bare(path, rows),) * 2)]
    for w in args.workers:
        variants.append((f"DataLoader(nyu-zip), batch {args.batch_size}", str(w),
                         functools.partial(loader, ds, w, args.batch_size)))
    variants.append((f"DataLoader(nyu-zip), batch {args.batch_size}, fresh shared memory per batch "
                     "(default_collate's way)", "2", functools.partial(loader, ds, 2, args.batch_size,
                                                                      fresh_shared_stack)))
    variants.append((f"DataLoader(nyu-zip), batch {args.batch_size}, numpy stack + copy to shared memory", "2",
                     functools.partial(loader, ds, 2, args.batch_size, stack_then_copy)))
    for w in args.workers:
        variants.append((f"DataLoader(pre-decoded, no I/O), batch {args.batch_size}", str(w),
                         functools.partial(loader, fixed, w, args.batch_size)))
    rates: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    steady: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    for _ in range(args.repeats):  # alternate the variants so that a change in load hits them all alike
        for i, (_, _, run) in enumerate(variants):
            total, after_first = run()
            rates[i].append(total)
            steady[i].append(after_first)
    base = statistics.median(rates[0])
    print("| pipeline | workers | samples/s | vs bare decode | samples/s after the first batch | vs bare decode |")
    print("|---|---|---|---|---|---|")
    for i, (name, w, _) in enumerate(variants):
        rate, rate2 = statistics.median(rates[i]), statistics.median(steady[i])
        print(f"| {name} | {w} | {rate:.1f} | {rate / base:.2f}x | {rate2:.1f} | {rate2 / base:.2f}x |")
    if 2 in args.workers:
        two = statistics.median(rates[1 + args.workers.index(2)])
        print(f"\n2 workers / bare = {two / base:.2f} (target >= 0.9); per-repeat ratios: "
              + ", ".join(f"{a / b:.2f}" for a, b in zip(rates[1 + args.workers.index(2)], rates[0])))


class FloatImages(torch.utils.data.Dataset):
    """The training set as it was before: float32 normalised images made in the workers."""

    def __init__(self, ds: TransformedDataset):
        t = ds.transform
        self.ds = TransformedDataset(ds.dataset, TrainTransform(
            t.mean, t.std, t.size, t.flip_p, t.swap_p, t.target_resize, t.min_depth, t.max_depth), ds.seed)

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.ds[i]


def collate_then_copy(items: list[dict]) -> dict:
    """The training collate as it was before: torch.stack, then torch copies it into shared memory to send."""
    batch = {k: torch.stack([it[k] for it in items]) for k in tdata.TENSOR_KEYS}
    batch["name"] = [it["name"] for it in items]
    batch["skipped"] = [it.get("skipped", "") for it in items]
    return batch


def default_collate_batch(items: list[dict]) -> dict:
    """The training collate before SharedCollate: torch's default_collate, fresh shared memory per batch."""
    batch = {k: torch.utils.data.default_collate([it[k] for it in items]) for k in tdata.TENSOR_KEYS}
    batch["name"] = [it["name"] for it in items]
    batch["skipped"] = [it.get("skipped", "") for it in items]
    return batch


def train_steps(run_step, make_batches, norm, device, n_warm: int, n: int) -> tuple[float, ...]:
    """(images/s, ms waiting for the batch per step, ms in the step per step) over n steps after n_warm, and
    ms from iter(loader) to the first batch (worker start-up: what persistent workers would save per epoch)."""
    t_first = time.perf_counter()
    it = iter(make_batches())
    wait = busy = first = 0.0
    images = 0
    t_all = None
    for k in range(n_warm + n):
        if k == n_warm:
            t_all, wait, busy, images = time.perf_counter(), 0.0, 0.0, 0
        t0 = time.perf_counter()
        batch = next(it)
        x = tdata.batch_images(batch["image"], norm, device)  # uint8 -> normalised float, as training does
        t1 = time.perf_counter()
        if k == 0:
            first = t1 - t_first
        applied, _ = run_step(x, batch["depth"], batch["valid"])
        assert applied, "a benchmark step was skipped as non-finite"
        t2 = time.perf_counter()
        wait, busy, images = wait + t1 - t0, busy + t2 - t1, images + x.shape[0]
    return images / (time.perf_counter() - t_all), wait / n * 1e3, busy / n * 1e3, first * 1e3


def training(path: Path, args: argparse.Namespace) -> None:
    device = torch.device("cpu")
    cfg = TrainConfig(encoder="mobilenetv2", pretrained=False, height=240, width=320, batch_size=8,
                      num_workers=2, train_data=f"nyu-zip:{path}", seed=0)
    torch.manual_seed(0)
    model = set_memory_format(build(cfg).to(device).train(), cfg)  # as training does (channels_last)
    step = TrainStep(model, model, make_optimizer(cfg, model), cfg, device, None)
    norm = tdata.normalization(model)
    train_ds, _ = tdata.open_train_data(cfg, model)
    sampler = DistributedSampler(train_ds, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed, drop_last=True)
    n_warm, n = 2, args.train_steps
    if (n_warm + n) * cfg.batch_size > len(train_ds):
        raise SystemExit(f"--train-steps {n} needs --n >= {(n_warm + n) * cfg.batch_size}")
    fixed = tdata.collate([train_ds[i] for i in range(cfg.batch_size)])
    fixed["image"] = tdata.batch_images(fixed["image"], norm, device)  # final form: no loader work at all

    t = time.perf_counter()
    for i in range(len(train_ds)):
        train_ds[i]
    per_sample = (time.perf_counter() - t) / len(train_ds) * 1e3
    mb = sum(v.numel() * v.element_size() for k, v in train_ds[0].items() if k in tdata.TENSOR_KEYS) / 1e6
    mb_float = sum(v.numel() * v.element_size() for k, v in FloatImages(train_ds)[0].items()
                   if k in tdata.TENSOR_KEYS) / 1e6
    print(f"\nTraining: MobileNetV2 (random init), batch {cfg.batch_size}, {cfg.height}x{cfg.width}, "
          f"{cfg.num_workers} workers; decode + TrainTransform in one process: {per_sample:.1f} ms/sample; "
          f"a sample sent by a worker: {mb:.3f} MB (before: {mb_float:.3f} MB with float32 images)")

    def real(ds, collate, epoch):
        def make():
            loader = tdata.epoch_loader(ds, sampler, cfg, epoch, 0, 0, pin_memory=False)
            if collate is not None:
                loader = torch.utils.data.DataLoader(loader.dataset, batch_size=cfg.batch_size, drop_last=True,
                                                     num_workers=cfg.num_workers, sampler=loader.sampler,
                                                     collate_fn=collate, generator=loader.generator)
            return loader
        return make

    def premade():
        while True:
            yield fixed

    variants = [("pre-made batch in memory (no loader)", lambda: premade()),
                ("real loader (uint8 images, reused shared buffers)", real(train_ds, None, 0)),
                ("real loader, fresh shared memory per batch (default_collate)",
                 real(train_ds, default_collate_batch, 0)),
                ("real loader before (float32 images, stack + copy)", real(FloatImages(train_ds), collate_then_copy, 0))]
    results: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.repeats):
        for threads in (2, 1):
            torch.set_num_threads(threads)
            for i, (_, make) in enumerate(variants):
                results.setdefault((threads, i), []).append(train_steps(step, make, norm, device, n_warm, n))
    print(f"{n} steps after {n_warm} warm-up steps, median of {args.repeats} runs (variants alternate)\n")
    print("| torch threads | batches from | images/s | vs pre-made | wait for batch ms/step | step ms | "
          "loader share of a step | first batch ms |")
    print("|---|---|---|---|---|---|---|---|")
    for threads in (2, 1):
        base = statistics.median(r[0] for r in results[(threads, 0)])
        for i, (name, _) in enumerate(variants):
            rs = results[(threads, i)]
            ips, wait, busy, first = (statistics.median(r[j] for r in rs) for j in range(4))
            print(f"| {threads} | {name} | {ips:.2f} | {ips / base:.2f}x | {wait:.1f} | {busy:.0f} | "
                  f"{wait / (wait + busy):.1%} | {first:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of 640x480 pairs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-steps", type=int, default=8, help="timed training steps per variant (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{machine()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s) for the data part")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nyu_data.zip"
        rows = write_zip(path, args.n)
        print(f"{args.n} pairs, zip {path.stat().st_size / 1e6:.1f} MB, median of {args.repeats} runs\n")
        full_resolution(path, rows, args)
        if args.train_steps > 0:
            training(path, args)
    print(f"\nafter: {machine()}")


if __name__ == "__main__":
    main()
