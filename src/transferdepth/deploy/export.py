"""Export a trained network for deployment: ONNX, TorchScript or OpenVINO IR, dynamic height and width.

The exported graph is `MetricDepth`: (N,3,H,W) float32 RGB in [0,1] -> (N,1,H,W) float32 depth in metres
at the input's size, clamped to the model's depth range (metres). Normalisation, the padding a size needs (sides
under 32; see `DepthNet`), DepthNorm inversion and upsampling are inside; flip averaging is inside only with
`flip=True` (the graph runs the image and its mirror as one batch of 2N and averages, as `DepthEstimator`'s
default), else not.
The contract is stored in the ONNX metadata_props / the TorchScript archive's `transferdepth.json`
(`transferdepth.flip`, `transferdepth.precision`, and for int8 the calibration set, method and sizes).

ONNX precisions: fp32; fp16 (weights and activations float16 for GPU execution providers, inputs and
outputs stay float32 metres: onnxruntime's float16 converter with keep_io_types); int8 (onnxruntime static
quantisation, QDQ format, per-channel int8 weights, uint8 activations calibrated on a few images: a dataset
spec, an image folder, or by default a fixed set of procedural rooms; the last convolution, the DepthNorm
inversion and every Resize stay float32 by default, the most accurate setting measured on real data; then
each quantised convolution's bias is corrected on the same images, `transferdepth.deploy.bias_correction`;
docs/using.md; `quantize_onnx`). timm's TensorFlow-"same" convolutions (EfficientNet-Lite) are written as
ONNX Conv with auto_pad=SAME_UPPER (`_SameConv`), not as shape arithmetic and a Pad.

A wrong input: the TorchScript archive checks shape and dtype first (`CheckedInput`; the error's last line
is ours). ONNX declares the input float32 (batch,3,height,width), and onnxruntime refuses anything else
itself: `INVALID_ARGUMENT : Got invalid dimensions for input: rgb for the following indices index: 1
Got: 4 Expected: 3`, or `Unexpected input data type. Actual: (tensor(double)) , expected: (tensor(float))`.

OpenVINO IR (`export_openvino`): the fp32 ONNX graph converted by `openvino.convert_model` and saved as
`NAME.xml` + `NAME.bin` (weights float32, not compressed to float16), the contract in the IR's rt_info under
`transferdepth` (`set_ir_metadata` / `ir_metadata`; the same keys as the ONNX metadata).

ONNX uses the TorchScript-based exporter (`dynamo=False`): it traces tensor shapes as graph values, so
the padding, the decoder's upsampling sizes and the crop follow the input at run time (checked by the
tests at several sizes), and it takes about a second. The torch.export-based exporter also gives a
correct graph, but only after relaxing shape guards that torch.export cannot prove for the padding
arithmetic, and it is about 20x slower.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.deploy.contract import INPUT_NAME, OUTPUT_NAME, ExportError, MetricDepth, contract, quiet
from transferdepth.deploy.quantize import (
    DEFAULT_CALIBRATION,
    DEFAULT_CALIBRATION_SIZE,
    _check_quantization,
    _quantization_tools,
    calibration_batches,
    quantize_onnx,
)
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.models import DepthNet
from transferdepth.utils import atomic_write

FORMATS = ("onnx", "torchscript", "openvino")
EXAMPLE_SIZE = (96, 128)  # (H, W) of the tracing input; any size works afterwards
PRECISIONS = ("fp32", "fp16", "int8")


def _example() -> torch.Tensor:
    return torch.rand(1, 3, *EXAMPLE_SIZE, generator=torch.Generator().manual_seed(0))


def export_onnx(model: DepthNet, path: str | os.PathLike, opset: int = 17, *, flip: bool = False,
                precision: str = "fp32", calibration: str | None = None, calibration_count: int = 16,
                calibration_size: tuple[int, int] = DEFAULT_CALIBRATION_SIZE,
                quantization: dict[str, Any] | None = None) -> Path:
    """Write `model` as an ONNX file (MetricDepth contract, dynamic N/H/W, metadata_props); atomic.

    flip: flip averaging inside the graph. precision: "fp32", "fp16" (float32 inputs/outputs) or "int8"
    (static QDQ quantisation calibrated on `calibration`, see `quantize_onnx`; `calibration_count` images
    resized to `calibration_size` (H, W); `quantization`: keyword arguments of `quantize_onnx`, e.g.
    {"method": "entropy"}). Bad precision / calibration raise `ExportError` (one line)."""
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    import onnx

    calib = None
    if precision == "int8":  # check the tools and the calibration set before the export
        _quantization_tools()
        try:
            _check_quantization(**(quantization or {}))
        except TypeError as e:
            raise ExportError(f"quantization options: {e}") from None
        calib = calibration_batches(calibration or DEFAULT_CALIBRATION, calibration_count, calibration_size)
    wrapper = MetricDepth(model.cpu(), flip=flip).eval()
    proto = _trace_onnx(wrapper, opset)
    meta = contract(model, wrapper, precision)
    if precision == "fp16":
        proto = _to_fp16(proto)
    elif precision == "int8":
        proto, qmeta = quantize_onnx(proto, calib, **(quantization or {}))
        meta |= qmeta | {"transferdepth.calibration": calibration or DEFAULT_CALIBRATION,
                         "transferdepth.calibration_size": f"{len(calib)} images at "
                                                           f"{calibration_size[0]}x{calibration_size[1]} (HxW)"}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    path = Path(path)
    with atomic_write(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


class _SameConv(torch.autograd.Function):
    """timm's TensorFlow-"same" convolution (stride > 1: pad ceil-style, the odd pixel at the end) traced as one
    ONNX Conv with auto_pad=SAME_UPPER, the same arithmetic, instead of shape arithmetic and a Pad. A float
    Pad between quantised convolutions cost EfficientNet-Lite0's int8 export 10 ms of 26 (480x640)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sh: int, sw: int, dh: int,
                dw: int, groups: int) -> torch.Tensor:
        pads = []
        for size, k, st, d in ((x.shape[-1], weight.shape[-1], sw, dw), (x.shape[-2], weight.shape[-2], sh, dh)):
            total = max((math.ceil(int(size) / st) - 1) * st + (int(k) - 1) * d + 1 - int(size), 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), weight, bias, (sh, sw), 0, (dh, dw), groups)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, sh: int, sw: int, dh: int, dw: int, groups: int) -> Any:
        return g.op("Conv", x, weight, bias, auto_pad_s="SAME_UPPER", strides_i=[sh, sw], dilations_i=[dh, dw],
                    group_i=groups)


@contextmanager
def _same_pad_as_attribute(model: torch.nn.Module) -> Iterator[None]:
    """While tracing, run every timm `Conv2dSame` in `model` through `_SameConv`."""
    try:
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:
        yield
        return

    def same(c: Conv2dSame) -> Any:  # a zero bias where there is none (a traced None breaks the exporter)
        bias = c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels)
        return lambda x: _SameConv.apply(x, c.weight, bias, *c.stride, *c.dilation, c.groups)

    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    for m in convs:
        m.forward = same(m)
    try:
        yield
    finally:
        for m in convs:
            del m.forward


def _trace_onnx(wrapper: MetricDepth, opset: int) -> Any:
    import onnx

    buf = io.BytesIO()
    with quiet(), torch.no_grad(), _same_pad_as_attribute(wrapper):
        torch.onnx.export(
            wrapper, (_example(),), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}})
    proto = onnx.load_from_string(buf.getvalue())
    _fix_shapes(proto)
    return proto


def _to_fp16(proto: Any) -> Any:
    """float16 weights and activations, float32 input and output (onnxruntime's converter, keep_io_types).
    Resize keeps float32 (its scales input must stay float32)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise ExportError("--precision fp16 needs onnxruntime's float16 converter "
                          "(onnxruntime.transformers): pip install 'transferdepth[export]'") from None
    with quiet():
        proto = convert_float_to_float16(proto, keep_io_types=True, op_block_list=["Resize"])
    _toposort(proto.graph)  # the converter appends the input casts at the end of the node list
    return proto


def _toposort(graph: Any) -> None:
    """Reorder `graph.node` so every node comes after the producers of its inputs (stable otherwise)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise RuntimeError("ONNX graph has a cycle or a missing input")
        for n in ready:
            known.update(n.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _fix_shapes(proto: Any) -> None:
    """Declare input (batch,3,height,width) and output (batch,1,height,width); fail if H/W got fixed."""
    for value, channels in ((proto.graph.input[0], 3), (proto.graph.output[0], 1)):
        dims = value.type.tensor_type.shape.dim
        for i, name in ((0, "batch"), (2, "height"), (3, "width")):
            if dims[i].HasField("dim_value"):
                raise RuntimeError(f"ONNX export fixed {value.name} dimension {i} to {dims[i].dim_value}")
            dims[i].dim_param = name
        dims[1].Clear()
        dims[1].dim_value = channels


class CheckedInput(nn.Module):
    """A scripted guard in front of the traced graph: a wrong input (shape, dtype) raises a
    `torch.jit.Error` whose last line is our message (`... transferdepth: rgb must be (N,3,H,W) float32 ...`)
    instead of an error from deep inside a convolution. Tracing cannot record such a check (it keeps
    tensor operations only); scripting can."""

    def __init__(self, traced: nn.Module):
        super().__init__()
        self.traced = traced

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.dim() != 4 or rgb.size(1) != 3:
            raise ValueError("transferdepth: rgb must be (N,3,H,W) float32 RGB in [0,1]; got shape "
                             + str(list(rgb.shape)))
        if rgb.dtype != torch.float32:
            raise ValueError("transferdepth: rgb must be float32 (N,3,H,W) RGB in [0,1]; got another dtype "
                             "(convert with .float())")
        if rgb.size(2) < 1 or rgb.size(3) < 1:
            raise ValueError("transferdepth: rgb is empty: shape " + str(list(rgb.shape)))
        return self.traced(rgb)


def export_torchscript(model: DepthNet, path: str | os.PathLike, flip: bool = False) -> Path:
    """Write `model` as a TorchScript archive (MetricDepth contract, dynamic size, input checked); atomic."""
    wrapper = MetricDepth(model.cpu(), flip=flip).eval()
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (_example(),), check_trace=False)
        traced = torch.jit.script(CheckedInput(traced))
    extra = {"transferdepth.json": json.dumps(contract(model, wrapper), indent=2)}
    path = Path(path)
    with atomic_write(path) as tmp, quiet():
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return path


IR_GROUP = "transferdepth"  # the rt_info entry of an OpenVINO IR that holds our contract


def set_ir_metadata(ov_model: Any, meta: dict[str, str]) -> None:
    """Store `meta` (`contract.contract`'s keys, "transferdepth.*") in an openvino.Model's rt_info under
    `transferdepth` (written into the IR's .xml by `openvino.save_model`)."""
    for key, value in meta.items():
        ov_model.set_rt_info(str(value), [IR_GROUP, key.removeprefix(IR_GROUP + ".")])


def ir_metadata(ov_model: Any) -> dict[str, str]:
    """The "transferdepth.*" keys of an openvino.Model read from an IR (`set_ir_metadata`) or from one of our ONNX
    files (OpenVINO's ONNX reader puts metadata_props under rt_info `framework`); {} if there are none."""
    rt, meta = ov_model.get_rt_info(), {}
    for group, prefix in (("framework", ""), (IR_GROUP, IR_GROUP + ".")):
        if group in rt.keys():
            entries = rt[group]
            if isinstance(entries, dict):
                meta |= {prefix + k: v.astype(str) for k, v in entries.items()}
    return {k: v for k, v in meta.items() if k.startswith(IR_GROUP + ".")}


def export_openvino(model: DepthNet, path: str | os.PathLike, *, flip: bool = False, precision: str = "fp32") -> Path:
    """Write `model` as an OpenVINO IR: `path` (.xml) and the .bin beside it (the fp32 ONNX graph converted
    by OpenVINO, float32 weights, our contract in rt_info). Written in a temp folder beside `path` and renamed
    into place (.bin first, then .xml). Returns the .xml path. ExportError (one line) without openvino."""
    if precision != "fp32":
        raise ExportError(f"--precision {precision}: --format openvino writes an fp32 IR (run it in bf16 with "
                          "the openvino-bf16 engine)")
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ExportError(f"--out {path}: an OpenVINO IR is a .xml file (its weights go to a .bin beside it)")
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("--format openvino needs openvino: pip install 'transferdepth[openvino]'") from None
    import tempfile

    wrapper = MetricDepth(model.cpu(), flip=flip).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", dir=path.parent) as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", flip=flip)
        ov_model = ov.convert_model(str(onnx_path))
        set_ir_metadata(ov_model, contract(model, wrapper, precision))
        ov.save_model(ov_model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml, which names the .bin, last (files: 0666 & ~umask, as written)
            os.replace(Path(tmp) / f"model{suffix}", path.with_suffix(suffix))
    return path


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *, flip: bool = False,
                      precision: str = "fp32", **calibration: Any) -> Path:
    """Load a checkpoint directory and export it as `fmt` ("onnx", "torchscript" or "openvino") to the file `out`;
    flip, precision and calibration options as `export_onnx` (TorchScript, OpenVINO: fp32 only)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format '{fmt}': choose one of {', '.join(FORMATS)}")
    if fmt != "onnx" and precision != "fp32":
        raise ExportError(f"--precision {precision}: only for --format onnx ({fmt} is exported as fp32)")
    model = load_checkpoint(checkpoint)
    if fmt == "onnx":
        return export_onnx(model, out, flip=flip, precision=precision, **calibration)
    if fmt == "openvino":
        return export_openvino(model, out, flip=flip)
    return export_torchscript(model, out, flip=flip)
