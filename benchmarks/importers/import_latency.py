"""CPU latency of an imported DenseDepth model (PyTorch) next to DenseDepth's Keras model (eager TF).

    python benchmarks/importers/import_latency.py [--variant 2124ac9|10a688f] [--size 480x640] [--repeats 5] [--threads N]

Needs the [keras-parity] extra (tensorflow, tf-keras). Builds DenseDepth's Keras architecture
(tests/importers/keras_reference.py, random weights: latency does not depend on them), saves it as HDF5 the way
DenseDepth's files are saved, imports it with `transferdepth.importers.import_densedepth`, then times batch 1,
fp32, no flip: PyTorch = `transferdepth.inference.core.infer` (normalise, forward, DepthNorm -> metres, clamp);
Keras = `model(x, training=False)` eagerly plus DenseDepth's clip(maxDepth / y) in numpy. Same thread count
for both. Median of --repeats after --warmup runs. Prints the machine's load and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from transferdepth.importers import import_densedepth  # torchvision before tensorflow (see keras_reference)
from transferdepth.inference.core import infer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "importers"))


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="2124ac9", choices=("2124ac9", "10a688f"),
                    help="DenseDepth model.py commit: 2124ac9 = the released nyu.h5's architecture")
    ap.add_argument("--size", default="480x640", help="HxW")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_reference as kr

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, tensorflow {tf.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {args.threads} threads; load average (1/5/15 min) at start: {load}; "
          f"DenseDepth {args.variant}, {h}x{w}, batch 1, fp32, no flip, median of {args.repeats} after "
          f"{args.warmup} warm-up\n")
    kmodel = kr.build_densedepth(args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "densedepth.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            kmodel.save(path, save_format="h5")
        t = time.perf_counter()
        model, _ = import_densedepth(path, dataset="nyu")
        import_s = time.perf_counter() - t
        size_mb = path.stat().st_size / 1e6
    rgb = np.random.default_rng(0).random((1, h, w, 3), dtype=np.float32)
    x_torch = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    x_tf = tf.constant(rgb)
    torch_ms = median_ms(lambda: infer(model, x_torch, flip=False), args.warmup, args.repeats)
    keras_ms = median_ms(lambda: kr.keras_depth_m(kmodel, x_tf), args.warmup, args.repeats)
    print(f"| model | CPU ms at {h}x{w} | / PyTorch |")
    print("|---|---|---|")
    print(f"| imported DepthNet, PyTorch eager (`infer`) | {torch_ms:.0f} | 1.00 |")
    print(f"| DenseDepth Keras model, TF eager | {keras_ms:.0f} | {keras_ms / torch_ms:.2f} |")
    print(f"\nimport of the {size_mb:.0f} MB HDF5 (read, map, build): {import_s:.1f} s")
    print(f"load average (1/5/15 min) at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
