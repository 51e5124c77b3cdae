"""For a lent GPU: the fp16 ONNX export on onnxruntime's CUDA provider against eager PyTorch AMP, same GPU.

    PYTHONPATH=src python benchmarks/deploy/gpu_engines.py [--encoders a,b] [--sizes 480x640,240x320]
        [--batches 1,8] [--rounds 3] [--repeats 20] [--warmup 5] [--checkpoint DIR]

Never a test dependency. Needs a CUDA GPU and `onnxruntime-gpu` (instead of `onnxruntime`; the CPU wheel has no
CUDA provider): each missing piece is one line and a non-zero exit.

Columns per encoder x size x batch (random weights unless --checkpoint; latency does not depend on them):
eager fp32 and eager AMP (`torch.autocast("cuda", float16)`, channels_last) of the one inference path
(`inference.core.infer`, no flip), ORT fp32 and ORT fp16 (`export --precision fp16`: float16 weights and
arithmetic, float32 input and output metres) on `CUDAExecutionProvider`. Every column is timed end to end from a
CPU float32 batch to CPU metres (each engine pays its copies), median of --repeats after --warmup, --rounds
rounds in turn; the ratios are medians of the per-round ratios over eager AMP (> 1: faster than AMP).
With --checkpoint the largest |fp16 ORT - eager AMP| in metres on a real image is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_latency import median_ms  # noqa: E402

from transferdepth.deploy.export import export_onnx  # noqa: E402
from transferdepth.deploy.onnx_engine import OnnxRunner  # noqa: E402
from transferdepth.inference.checkpoint import load_checkpoint  # noqa: E402
from transferdepth.inference.core import infer  # noqa: E402
from transferdepth.models import available_encoders  # noqa: E402
from transferdepth.weights.build import build_model  # noqa: E402

COLUMNS = ("eager fp32", "eager AMP", "ORT fp32", "ORT fp16")


def require_gpu() -> None:
    """Exit 2 with one line unless CUDA and onnxruntime's CUDA provider are both here."""
    if not torch.cuda.is_available():
        raise SystemExit("gpu_engines.py: no CUDA GPU here (this benchmark is for a lent GPU machine)")
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("gpu_engines.py: onnxruntime is not installed: pip install onnxruntime-gpu") from None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("gpu_engines.py: onnxruntime has no CUDAExecutionProvider: pip uninstall onnxruntime; "
                         "pip install onnxruntime-gpu")


def eager_fn(model, x: torch.Tensor, amp: bool):
    def run() -> torch.Tensor:
        with torch.autocast("cuda", torch.float16, enabled=amp):
            out = infer(model, x.cuda(non_blocking=True), flip=False)
        return out.float().cpu()  # .cpu() synchronises
    return run


def ort_fn(runner: OnnxRunner, x: torch.Tensor):
    return lambda: runner.run(x)


def row(model, onnx_paths: dict[str, Path], x: torch.Tensor, args) -> dict[str, list[float]]:
    runners = {p: OnnxRunner(path, providers=["CUDAExecutionProvider"]) for p, path in onnx_paths.items()}
    fns = {"eager fp32": eager_fn(model, x, False), "eager AMP": eager_fn(model, x, True),
           "ORT fp32": ort_fn(runners["fp32"], x), "ORT fp16": ort_fn(runners["fp16"], x)}
    times: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for _ in range(args.rounds):
        for c in COLUMNS:
            times[c].append(median_ms(fns[c], args.warmup, args.repeats))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", default=",".join(available_encoders()))
    ap.add_argument("--sizes", default="480x640,240x320")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint: its encoder, and an agreement check")
    args = ap.parse_args()
    require_gpu()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; end to end (CPU batch -> CPU metres), "
          f"median of {args.repeats} after {args.warmup}, {args.rounds} rounds; ratios over eager AMP")
    print("| encoder | size | batch | " + " | ".join(f"{c} ms" for c in COLUMNS) + " | ORT fp16 / AMP | ORT fp32 / AMP |")
    print("|---" * (5 + len(COLUMNS)) + "|")
    encoders = [None] if args.checkpoint else args.encoders.split(",")
    for enc in encoders:
        model = load_checkpoint(args.checkpoint) if args.checkpoint else build_model(enc, pretrained=False)
        model = model.eval().cuda().to(memory_format=torch.channels_last)
        name = enc or f"{args.checkpoint} (checkpoint)"
        with tempfile.TemporaryDirectory() as tmp:
            cpu_model = model.float().cpu()
            paths = {p: export_onnx(cpu_model, Path(tmp) / f"{p}.onnx", precision=p) for p in ("fp32", "fp16")}
            model = model.cuda()
            for size in args.sizes.split(","):
                h, w = (int(v) for v in size.split("x"))
                for b in (int(v) for v in args.batches.split(",")):
                    t = row(model, paths, torch.rand(b, 3, h, w), args)
                    ratio = {c: statistics.median(a / o for a, o in zip(t["eager AMP"], t[c])) for c in COLUMNS}
                    med = {c: statistics.median(t[c]) for c in COLUMNS}
                    print(f"| {name} | {size} | {b} | " + " | ".join(f"{med[c]:.1f}" for c in COLUMNS)
                          + f" | {ratio['ORT fp16']:.2f}x | {ratio['ORT fp32']:.2f}x |", flush=True)
            if args.checkpoint:
                x = torch.rand(1, 3, 480, 640)
                runner = OnnxRunner(paths["fp16"], providers=["CUDAExecutionProvider"])
                diff = (runner.run(x) - eager_fn(model, x, True)()).abs().max().item()
                print(f"largest |ORT fp16 - eager AMP| at 480x640: {diff:.4f} m")


if __name__ == "__main__":
    main()
