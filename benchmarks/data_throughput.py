"""Throughput of the nyu-zip reader through a torch DataLoader vs a bare PIL decode loop.

Writes (into a temp dir) a DenseDepth-format nyu_data.zip of N 640x480 pairs: JPEG RGB (quality 95) and
8-bit PNG depth, with smooth gradients and shapes. Then measures samples/s:
  - bare: one process reads each member from the zip and decodes it with PIL (no metres, no checks);
  - DataLoader over `open_dataset("nyu-zip:...")`, num_workers 0/1/2, batch_size 8, a stacking collate;
  - the same DataLoader over a dataset that returns one pre-decoded sample (no decoding at all): the cost
    of moving full-resolution samples from worker processes to the main process (the IPC ceiling).
Prints a Markdown table (median of --repeats runs; worker start-up is included in the timing).

    python benchmarks/data_throughput.py --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from transferdepth.data import open_dataset


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


def stack(samples: list[dict]) -> dict:
    """Collate: stack arrays into tensors (B,H,W,3 uint8 / B,H,W float32 / bool), names as a list."""
    return {
        "rgb": torch.from_numpy(np.stack([s["rgb"] for s in samples])),
        "depth": torch.from_numpy(np.stack([s["depth"] for s in samples])),
        "valid": torch.from_numpy(np.stack([s["valid"] for s in samples])),
        "name": [s["name"] for s in samples],
    }


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


def loader(ds: torch.utils.data.Dataset, workers: int, batch_size: int) -> float:
    t = time.perf_counter()
    n = 0
    for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=stack):
        n += len(batch["name"])
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="number of 640x480 pairs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nyu_data.zip"
        rows = write_zip(path, args.n)
        print(f"{args.n} pairs, zip {path.stat().st_size / 1e6:.1f} MB, median of {args.repeats} runs\n")
        base = statistics.median(bare(path, rows) for _ in range(args.repeats))
        table = [("bare PIL decode loop", "-", base)]
        ds = open_dataset(f"nyu-zip:{path}")
        for w in args.workers:
            rate = statistics.median(loader(ds, w, args.batch_size) for _ in range(args.repeats))
            table.append((f"DataLoader(nyu-zip), batch {args.batch_size}", str(w), rate))
        fixed = Predecoded(ds[0], len(ds))
        for w in args.workers:
            rate = statistics.median(loader(fixed, w, args.batch_size) for _ in range(args.repeats))
            table.append((f"DataLoader(pre-decoded, no I/O), batch {args.batch_size}", str(w), rate))
    print("| pipeline | workers | samples/s | vs bare decode |")
    print("|---|---|---|---|")
    for name, w, rate in table:
        print(f"| {name} | {w} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
