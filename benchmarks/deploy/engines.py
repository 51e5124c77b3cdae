"""The engine race on the CPU: every engine `--engine` offers, and int8, against channels_last eager PyTorch.

    PYTHONPATH=src python benchmarks/deploy/engines.py [--encoders a,b] [--sizes 480x640,240x320] [--batches 1,8]
        [--threads 2] [--rounds 3] [--repeats 5] [--warmup 2] [--columns eager,compile,...]
        [--checkpoint DIR ...] [--image FILE] [--int8-encoders all|a,b]

Columns (each runs `transferdepth.deploy.contract.MetricDepth`'s maths: RGB in [0,1] -> metres at the input size,
no flip; the engines' own `run`, so what `predict` runs per batch):
eager = `inference.core.infer` on channels_last weights and input (`DepthEstimator` on the CPU); compile =
`deploy.compile_engine.CompiledRunner` (torch.compile, inductor, frozen weights; compiled afresh for each row, a
static shape, its first call reported apart as "compile s"); ORT fp32 = `OnnxRunner` on the fp32 export; OV fp32 /
OV bf16 = `OpenVinoRunner` (precision f32 / bf16, bf16 only where the CPU has AVX-512 BF16 or AMX); ORT int8 /
OV int8 = the default `--precision int8` export (QDQ, 4 procedural rooms, no bias correction: the time does not
depend on bias values) on onnxruntime / on OpenVINO (which runs the QDQ graph's convolutions in int8).

Timing as `infer_latency.py` (its helpers): random weights (latency does not depend on them), one process,
allocator tuned as the CLI does; each column's first call is made before the rounds; then with --rounds R every
column of a row is timed R times in turn (median of --repeats after --warmup each), and the table shows the median
time over the rounds and the median of the per-round ratios eager / column. "best float" is the fastest fp32 or
bf16 engine and its ratio (issue 23's target: >= 2x at 480x640).

Agreement: with --checkpoint (a trained checkpoint; repeatable, its encoder is read from it) each engine runs the
checkpoint on a real image (--image, default the 7-Scenes kitchen frame under ../shared/data/rgbd) at every size,
batch 1, and the table gives the largest and mean |engine - eager| in metres and the share of eager's pixels at
the clamp limits (a random-weight model sits at the limits, where every engine agrees trivially). fp32 engines
must agree within --tolerance (1e-4 m); bf16 and int8 are reported, not judged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_latency import FLAGS, cpu_flags, cpu_name, median_ms  # noqa: E402

from transferdepth.deploy.engines import missing  # noqa: E402
from transferdepth.deploy.export import export_onnx  # noqa: E402
from transferdepth.inference.checkpoint import load_checkpoint  # noqa: E402
from transferdepth.inference.core import infer, rgb_to_tensor  # noqa: E402
from transferdepth.models import available_encoders  # noqa: E402
from transferdepth.utils import tune_cpu_allocator  # noqa: E402
from transferdepth.weights.build import build_model  # noqa: E402

COLUMNS = ("eager", "compile", "ORT fp32", "OV fp32", "OV bf16", "ORT int8", "OV int8")
FLOAT = ("compile", "ORT fp32", "OV fp32", "OV bf16")  # the columns "best float" chooses from
EXACT = ("compile", "ORT fp32", "OV fp32")  # must equal eager within --tolerance
ENGINE_OF = {"compile": "compile", "ORT fp32": "onnx", "OV fp32": "openvino", "OV bf16": "openvino-bf16",
             "ORT int8": "onnx", "OV int8": "openvino"}
KITCHEN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rgbd" / "7scenes-redkitchen" / \
    "frame-000000.color.jpg"

Run = Callable[[torch.Tensor], Any]


def _sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]  # type: ignore[misc]


def runners(model: Any, tmp: Path, columns: list[str], threads: int, int8: bool) -> dict[str, Run]:
    """{column: x -> metres} for `model` (channels_last after this); the compile column is built per row."""
    from transferdepth.deploy.onnx_engine import OnnxRunner

    model = model.eval().to(memory_format=torch.channels_last)
    out: dict[str, Run] = {"eager": lambda x: infer(model, x, flip=False)}
    fp32 = export_onnx(model, tmp / "fp32.onnx")
    q = None
    if int8 and {"ORT int8", "OV int8"} & set(columns):
        q = export_onnx(model, tmp / "int8.onnx", precision="int8", calibration_count=4,
                        quantization={"bias_correction": False})
    for col in columns:
        if col in ("eager", "compile") or (q is None and col.endswith("int8")):
            continue
        reason = missing(ENGINE_OF[col])
        if reason:
            print(f"  {col}: not run ({reason})")
            continue
        path = q if col.endswith("int8") else fp32
        if col.startswith("ORT"):
            out[col] = OnnxRunner(path, threads=threads).run
        else:
            from transferdepth.deploy.openvino_engine import OpenVinoRunner

            out[col] = OpenVinoRunner(path, threads=threads, precision="bf16" if col == "OV bf16" else "f32").run
    return out


def compiled(model: Any, threads: int) -> tuple[Run | None, str | None]:
    """A fresh CompiledRunner (dynamo reset: this row's shape compiles as a static graph), or the reason not."""
    reason = missing("compile")
    if reason:
        return None, reason
    from transferdepth.deploy.compile_engine import CompiledRunner

    torch._dynamo.reset()
    return CompiledRunner(model, threads=threads).run, None


def race_row(runs: dict[str, Run], x: torch.Tensor, rounds: int, warmup: int, repeats: int
             ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(median ms over rounds, median per-round ratio eager / column, first-call seconds) for one input."""
    first = {}
    with torch.no_grad():
        for col, fn in runs.items():
            start = time.perf_counter()
            fn(x)
            first[col] = time.perf_counter() - start
        times: dict[str, list[float]] = {c: [] for c in runs}
        for _ in range(rounds):
            for col, fn in runs.items():
                times[col].append(median_ms(lambda f=fn: f(x), warmup, repeats))
    ms = {c: statistics.median(v) for c, v in times.items()}
    ratio = {c: statistics.median(e / t for e, t in zip(times["eager"], v)) for c, v in times.items()}
    return ms, ratio, first


def race(args: argparse.Namespace, columns: list[str], tmp: Path) -> None:
    """The speed table: one row per encoder x size x batch."""
    shown = [c for c in COLUMNS if c in columns]
    print("| encoder | size | batch | " + " | ".join(f"{c} ms" for c in shown) + " | "
          + " | ".join(f"{c} x" for c in shown[1:]) + " | best float | compile s |")
    print("|---" * (4 + 2 * len(shown)) + "|")
    int8_for = available_encoders() if args.int8_encoders == "all" else args.int8_encoders.split(",")
    for name in args.encoders.split(","):
        torch.manual_seed(0)
        model = build_model(name, decoder_width=args.width, pretrained=False).eval()
        runs = runners(model, tmp, columns, args.threads, name in int8_for)
        for h, w in _sizes(args.sizes):
            for batch in (int(b) for b in args.batches.split(",")):
                row = dict(runs)
                if "compile" in columns:
                    fn, reason = compiled(model, args.threads)
                    if fn is None:
                        print(f"  compile: not run ({reason})")
                    else:
                        row = {"eager": runs["eager"], "compile": fn} | {c: f for c, f in runs.items() if c != "eager"}
                x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
                ms, ratio, first = race_row(row, x, args.rounds, args.warmup, args.repeats)
                best = max((c for c in FLOAT if c in ratio), key=ratio.get, default=None)
                cells = [f"{ms[c]:.1f}" if c in ms else "-" for c in shown]
                ups = [f"{ratio[c]:.2f}" if c in ratio else "-" for c in shown[1:]]
                best_cell = f"{best} {ratio[best]:.2f}x" if best else "-"
                comp = f"{first['compile']:.0f}" if "compile" in first else "-"
                print(f"| {name} | {h}x{w} | {batch} | " + " | ".join(cells + ups) + f" | {best_cell} | {comp} |",
                      flush=True)


def agreement(args: argparse.Namespace, columns: list[str], tmp: Path) -> None:
    """Each engine against eager on trained checkpoints and a real image (batch 1, every size)."""
    from PIL import Image

    with Image.open(args.image) as im:
        rgb = im.convert("RGB")
    cols = [c for c in COLUMNS[1:] if c in columns]
    print(f"\nAgreement with eager on a trained model, real image {args.image} (metres: max |diff| / mean |diff|; "
          f"fp32 engines must be within {args.tolerance:g} m):\n")
    print("| checkpoint | encoder | size | eager at clamp | " + " | ".join(cols) + " |")
    print("|---" * (4 + len(cols)) + "|")
    failures = []
    for ckpt in args.checkpoint:
        model = load_checkpoint(ckpt)
        runs = runners(model, tmp, columns, args.threads, True)
        for h, w in _sizes(args.sizes):
            x = rgb_to_tensor([np.asarray(rgb.resize((w, h), Image.BILINEAR))])
            if "compile" in columns and missing("compile") is None:
                runs["compile"] = compiled(model, args.threads)[0]
            with torch.no_grad():
                ref = runs["eager"](x)
                got = {c: runs[c](x) for c in cols if c in runs}
            at_clamp = ((ref <= model.min_depth + 1e-6) | (ref >= model.max_depth - 1e-6)).float().mean().item()
            cells = []
            for c in cols:
                if c not in got:
                    cells.append("-")
                    continue
                d = (got[c] - ref).abs()
                cells.append(f"{d.max().item():.1e} / {d.mean().item():.1e}")
                if c in EXACT and d.max().item() > args.tolerance:
                    failures.append(f"{ckpt} {h}x{w} {c}: max |diff| {d.max().item():.2e} m")
            print(f"| {ckpt} | {model.encoder_name} | {h}x{w} | {at_clamp:.1%} | " + " | ".join(cells) + " |",
                  flush=True)
    print("\nfp32 engines equal to eager within tolerance: " + ("yes" if not failures else "NO: " + "; ".join(failures)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", default=",".join(available_encoders()))
    ap.add_argument("--int8-encoders", default="all", help="encoders to time int8 for (all or a list)")
    ap.add_argument("--width", type=float, default=0.5, help="decoder width")
    ap.add_argument("--sizes", default="480x640,240x320", help="HxW,HxW")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--columns", default=",".join(COLUMNS), help="a subset of " + ",".join(COLUMNS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="times each row's columns are timed in turn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", action="append", default=[], help="trained checkpoint for the agreement table")
    ap.add_argument("--image", default=str(KITCHEN), help="real image for the agreement table")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="metres, fp32 engines against eager")
    ap.add_argument("--no-race", dest="race", action="store_false", help="only the agreement table")
    args = ap.parse_args()
    columns = ["eager"] + [c for c in args.columns.split(",") if c in COLUMNS and c != "eager"]
    torch.set_num_threads(args.threads)
    allocator = tune_cpu_allocator()
    flags = cpu_flags()
    versions = {m: missing(e) is None for m, e in (("onnxruntime", "onnx"), ("openvino", "openvino"))}
    import importlib.metadata as md

    print(f"{cpu_name()}; CPU flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS))
    print(f"torch {torch.__version__}, " + ", ".join(f"{m} {md.version(m) if ok else 'absent'}"
                                                   for m, ok in versions.items())
          + f"; {os.cpu_count()} cores, {args.threads} threads; load average (1/5/15 min) at start: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; median of {args.repeats} after {args.warmup} warm-up, "
          f"{args.rounds} round(s); malloc tuned (`tune_cpu_allocator`): {allocator}\n")
    with tempfile.TemporaryDirectory() as tmp:
        if args.race:
            race(args, columns, Path(tmp))
        if args.checkpoint:
            agreement(args, columns, Path(tmp))
    print(f"\nload average (1/5/15 min) at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
