"""`transferdepth export --checkpoint DIR --format onnx|torchscript|openvino --out FILE [--precision fp32|fp16|int8] [--flip]`.

The exported graph takes (N,3,H,W) float32 RGB in [0,1] of any size and returns (N,1,H,W) depth in metres.
openvino: an OpenVINO IR, FILE.xml and FILE.bin beside it (fp32; our metadata in its rt_info).
int8: onnxruntime static quantisation (QDQ, per-channel weights) calibrated on --calibration (a dataset
spec or an image folder; default: a fixed set of procedural rooms), biases corrected on the same images
unless --no-bias-correction, recorded in the model's metadata; --quantizer nncf: NNCF's post-training
quantisation with its fast bias correction instead.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from transferdepth.cli import COMMANDS, add_progress_flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=COMMANDS["export"],
                       description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript", "openvino"), dest="fmt",
                   help="onnx, torchscript, or openvino (an IR: .xml + .bin; needs transferdepth[openvino])")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx, model.pt or model.xml (openvino: "
                   "model.bin is written beside it)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="ONNX: fp32 (default), fp16 (for GPU execution providers; input and output stay "
                        "float32 metres) or int8 (static QDQ quantisation, calibrated; fast on CPUs)")
    p.add_argument("--flip", action="store_true",
                   help="flip averaging inside the graph (image and mirror as one batch), as predict's default")
    p.add_argument("--calibration", default=None, metavar="SPEC|FOLDER",
                   help="int8: calibration images, a dataset spec (e.g. rgbd:7scenes-redkitchen?index=0:800) "
                        "or an image folder (default: 16 fixed procedural rooms)")
    p.add_argument("--calibration-count", type=int, default=16, metavar="N",
                   help="int8: at most N calibration images, spread over the set (1-10000; default 16)")
    p.add_argument("--calibration-size", default="240x320", metavar="HEIGHTxWIDTH",
                   help="int8: calibration images are resized to this (each side 16-4096 pixels; default 240x320)")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="int8: skip the bias correction (one pass per convolution over the calibration images; the "
                        "export takes 10 s for EfficientNet-Lite0, 2.4 min for DenseNet-161 at the defaults)")
    p.add_argument("--quantizer", choices=("ours", "nncf"), default="ours",
                   help="int8: ours (default: onnxruntime quantize_static + our bias correction, the more accurate on "
                        "real data, docs/using.md) or nncf (NNCF post-training quantisation with its fast bias "
                        "correction; needs transferdepth[openvino])")
    add_progress_flag(p)  # int8: calibration and bias correction
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transferdepth.cli import UserError, parse_size
    from transferdepth.deploy.export import ExportError, export_checkpoint
    from transferdepth.deploy.quantize import check_calibration

    if args.precision != "int8" and args.calibration is not None:
        raise UserError("--calibration: only for --precision int8")
    if args.precision != "int8" and not args.bias_correction:
        raise UserError("--no-bias-correction: only for --precision int8")
    if args.precision != "int8" and args.quantizer != "ours":
        raise UserError(f"--quantizer {args.quantizer}: only for --precision int8")
    if args.precision != "fp32" and args.fmt != "onnx":
        raise UserError(f"--precision {args.precision}: only for --format onnx ({args.fmt} is exported as fp32)")
    calib_size = parse_size(args.calibration_size, "--calibration-size")
    try:  # before anything is loaded: a 100000x100000 calibration size would allocate 120 GB
        check_calibration(args.calibration_count, calib_size)
    except ExportError as e:
        raise UserError(str(e)) from None

    out = Path(args.out)
    if args.out.endswith(("/", os.sep)) or out.is_dir():
        raise UserError(f"--out {args.out}: is a folder; give the file to write, e.g. "
                        f"{out / {'onnx': 'model.onnx', 'openvino': 'model.xml'}.get(args.fmt, 'model.pt')}")
    if args.fmt == "openvino" and out.suffix.lower() != ".xml":
        raise UserError(f"--out {args.out}: an OpenVINO IR is a .xml file (model.bin is written beside it), "
                        f"e.g. {out.with_suffix('.xml')}")
    try:  # fail before the (slow) export if the output cannot be written
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    calib = ({"calibration": args.calibration, "calibration_count": args.calibration_count,
              "calibration_size": calib_size,
              "quantization": {"bias_correction": args.bias_correction, "quantizer": args.quantizer}}
             if args.precision == "int8" else {})
    try:
        path = export_checkpoint(args.checkpoint, args.fmt, out, flip=args.flip, precision=args.precision, **calib)
    except ExportError as e:
        raise UserError(str(e)) from None
    extra = f" and {path.with_suffix('.bin')}" if args.fmt == "openvino" else ""
    print(f"wrote {path}{extra} ({args.precision}{', flip averaging inside' if args.flip else ''}): input rgb float32 "
          "(N,3,H,W) RGB in [0,1] -> output depth_m float32 (N,1,H,W) metres")
    return 0
