"""Inference latency on the CPU: PyTorch eager fp32, PyTorch bf16 autocast, onnxruntime fp32 and int8.

    python benchmarks/deploy/infer_latency.py [--encoders a,b] [--size 480x640] [--repeats 5] [--rounds 3] [--threads 2]
        [--ort-levels basic,extended,all] [--int8-encoders mobilenetv2,efficientnet_lite0]

Every column runs the same thing, `transferdepth.deploy.export.MetricDepth` (RGB in [0,1] -> metres at the input
size, no flip), batch 1, random weights (latency does not depend on them), all in one process one after the
other so ratios are fair: eager = PyTorch fp32; bf16 = `infer(..., amp=torch.bfloat16)` (CPU autocast; only
where the CPU has AVX-512 BF16 or AMX); ORT fp32 = the fp32 export under each --ort-levels graph optimisation
level (the last one is the engine's, ORT_ENABLE_ALL); ORT int8 = the `--precision int8` export (QDQ,
per-channel weights; calibrated on 4 procedural rooms, enough for timing; no bias correction, which changes
bias values, not the time). Median of --repeats after
--warmup runs. The process first calls `transferdepth.utils.tune_cpu_allocator` as the CLI does (eager
PyTorch reuses freed tensor memory; onnxruntime has its own arena either way; TRANSFERDEPTH_MALLOC=0 to time
glibc's defaults). With --rounds R every column of a row is timed R times in turn (eager, bf16, ORT..., eager,
...), and the table shows the median time over the rounds and the median of the per-round speed-ups, so a
change in the machine's speed during a row (a shared host) moves both sides of a ratio alike. Prints the CPU flags that matter, the load average (other work on the CPU slows every
column) and a Markdown table with speed-ups over eager.
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

from transferdepth.deploy.export import MetricDepth, export_onnx
from transferdepth.inference.core import infer
from transferdepth.models import available_encoders
from transferdepth.utils import tune_cpu_allocator
from transferdepth.weights.build import build_model

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    ap.add_argument("--int8-encoders", default="all", help="encoders to time int8 for (all or a list)")
    ap.add_argument("--width", type=float, default=0.5, help="decoder width")
    ap.add_argument("--size", default="480x640", help="HxW")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="times each row's columns are timed in turn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ort-levels", default="extended,all", help="graph optimisation levels to time (fp32)")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    allocator = tune_cpu_allocator()  # as the CLI runs (docs/using.md)
    flags = cpu_flags()
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    ort_levels = args.ort_levels.split(",")
    int8_for = available_encoders() if args.int8_encoders == "all" else args.int8_encoders.split(",")
    print(f"{cpu_name()}; CPU flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS))
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} cores, {args.threads} threads; "
          f"load average (1/5/15 min) at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{h}x{w}, batch 1, median of {args.repeats} after {args.warmup} warm-up, {args.rounds} round(s); malloc "
          f"tuned for eager (`tune_cpu_allocator`, as the CLI): {allocator}\n")
    cols = ["eager fp32"] + (["torch bf16 autocast"] if bf16 else []) + [f"ORT fp32 ({lv})" for lv in ort_levels] \
        + ["ORT int8"]
    print("| encoder | " + " | ".join(f"{c} ms" for c in cols) + " | " + " | ".join(f"{c} speed-up" for c in cols[1:]) + " |")
    print("|---" * (2 * len(cols)) + "|")
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    feed = {"rgb": x.numpy()}

    def session(path: Path, level: str) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[level]
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            torch.manual_seed(0)
            model = build_model(name, decoder_width=args.width, pretrained=False).eval()
            wrapper = MetricDepth(model).eval()
            path = export_onnx(model, Path(tmp) / "fp32.onnx")
            runs: dict[str, Callable[[], object]] = {"eager fp32": lambda: wrapper(x)}  # noqa: B023
            if bf16:
                runs["torch bf16 autocast"] = lambda: infer(model, x, flip=False, amp=torch.bfloat16)  # noqa: B023
            sessions = {f"ORT fp32 ({lv})": session(path, lv) for lv in ort_levels}
            if name in int8_for:
                # bias values do not change the time; the correction would add minutes per encoder
                q = export_onnx(model, Path(tmp) / "int8.onnx", precision="int8", calibration_count=4,
                                quantization={"bias_correction": False})
                sessions["ORT int8"] = session(q, "all")
            for col, sess in sessions.items():
                runs[col] = lambda s=sess: s.run(None, feed)
            rounds: dict[str, list[float]] = {c: [] for c in runs}
            with torch.no_grad():
                for _ in range(args.rounds):
                    for col, fn in runs.items():
                        rounds[col].append(median_ms(fn, args.warmup, args.repeats))
            ms = {c: statistics.median(v) for c, v in rounds.items()}
            speedup = {c: statistics.median(e / t for e, t in zip(rounds["eager fp32"], v)) for c, v in rounds.items()}
            cells = [f"{ms[c]:.0f}" if c in ms else "-" for c in cols]
            ups = [f"{speedup[c]:.2f}x" if c in speedup else "-" for c in cols[1:]]
            print(f"| {name} | " + " | ".join(cells + ups) + " |", flush=True)
    print(f"\nload average (1/5/15 min) at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
