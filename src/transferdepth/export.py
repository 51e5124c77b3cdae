"""Export a trained network for deployment: ONNX or TorchScript, dynamic height and width.

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
each quantised convolution's bias is corrected on the same images, `transferdepth.bias_correction`;
docs/using.md; `quantize_onnx`). timm's TensorFlow-"same" convolutions (EfficientNet-Lite) are written as
ONNX Conv with auto_pad=SAME_UPPER (`_SameConv`), not as shape arithmetic and a Pad.

A wrong input: the TorchScript archive checks shape and dtype first (`CheckedInput`; the error's last line
is ours). ONNX declares the input float32 (batch,3,height,width), and onnxruntime refuses anything else
itself: `INVALID_ARGUMENT : Got invalid dimensions for input: rgb for the following indices index: 1
Got: 4 Expected: 3`, or `Unexpected input data type. Actual: (tensor(double)) , expected: (tensor(float))`.

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
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.bias_correction import correct_biases
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.inference.core import infer
from transferdepth.models import DepthNet
from transferdepth.utils import atomic_write

FORMATS = ("onnx", "torchscript")
INPUT_NAME, OUTPUT_NAME = "rgb", "depth_m"
EXAMPLE_SIZE = (96, 128)  # (H, W) of the tracing input; any size works afterwards


PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIBRATION = "procedural:n=16&seed=1234&height=240&width=320"
DEFAULT_CALIBRATION_SIZE = (240, 320)  # (H, W) calibration images are resized to


class MetricDepth(nn.Module):
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) metres: `transferdepth.inference.core.infer(model, rgb, flip=flip)`."""

    def __init__(self, model: DepthNet, min_depth: float | None = None, max_depth: float | None = None,
                 flip: bool = False):
        super().__init__()
        self.model = model.eval()
        self.min_depth = model.min_depth if min_depth is None else min_depth
        self.max_depth = model.max_depth if max_depth is None else max_depth
        self.flip = flip

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return infer(self.model, rgb, flip=self.flip, min_depth=self.min_depth, max_depth=self.max_depth)


def contract(model: DepthNet, wrapper: MetricDepth, precision: str = "fp32") -> dict[str, str]:
    """What the exported graph expects and returns, as string key/values (ONNX metadata_props)."""
    from transferdepth import __version__

    flip = ("averaged with the mirrored image's prediction inside the graph" if wrapper.flip
            else "no flip averaging")
    return {
        "transferdepth.version": __version__,
        "transferdepth.input": f"{INPUT_NAME}: float32 (N,3,H,W), RGB (not BGR) in [0,1], any H and W; "
                               "normalisation is inside the graph",
        "transferdepth.output": f"{OUTPUT_NAME}: float32 (N,1,H,W), depth in metres at the input's size, "
                                f"clamped to [{wrapper.min_depth}, {wrapper.max_depth}]; {flip}",
        "transferdepth.flip": "true" if wrapper.flip else "false",
        "transferdepth.precision": precision,
        "transferdepth.encoder": model.encoder_name,
        "transferdepth.decoder_width": str(model.decoder_width),
        "transferdepth.min_depth": str(model.min_depth),
        "transferdepth.max_depth": str(model.max_depth),
        "transferdepth.max_depth_cm": str(model.max_depth_cm),
        "transferdepth.mean": json.dumps(model.mean.flatten().tolist()),
        "transferdepth.std": json.dumps(model.std.flatten().tolist()),
    }


def _example() -> torch.Tensor:
    return torch.rand(1, 3, *EXAMPLE_SIZE, generator=torch.Generator().manual_seed(0))


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the expected tracer warnings (constants the tracer records, e.g. timm's same-padding arithmetic)."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        yield


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


class ExportError(ValueError):
    """A bad export request (precision, calibration set, missing tools); the message is one line."""


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
    with _quiet(), torch.no_grad(), _same_pad_as_attribute(wrapper):
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
    with _quiet():
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


def _quantization_tools() -> Any:
    try:
        import onnxruntime.quantization as q
    except ImportError:
        raise ExportError("--precision int8 needs onnxruntime's quantisation tools (onnxruntime.quantization): "
                          "pip install 'transferdepth[export]'") from None
    return q


def calibration_batches(spec: str, count: int = 16, size: tuple[int, int] = DEFAULT_CALIBRATION_SIZE
                        ) -> list[np.ndarray]:
    """Up to `count` calibration inputs, each (1,3,H,W) float32 RGB in [0,1] at `size` (H, W), from a dataset
    spec (`transferdepth.data.open_dataset`) or a folder of images (evenly spaced over the set).
    An empty set or one that fails to open raises ExportError naming the spec."""
    from PIL import Image

    from transferdepth.data import open_dataset
    from transferdepth.inference.imageio import IMAGE_EXTENSIONS, load_image

    if count < 1:
        raise ExportError(f"--calibration-count must be at least 1, got {count}")
    rgbs: list[np.ndarray] = []
    try:
        if Path(spec).is_dir():
            files = sorted(f for f in Path(spec).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            pick = [files[i] for i in _spread(len(files), count)]
            rgbs = [load_image(f) for f in pick]
        else:
            data = open_dataset(spec)
            rgbs = [data[i]["rgb"] for i in _spread(len(data), count)]
    except (ValueError, OSError) as e:  # DatasetError, ImageError are ValueErrors
        raise ExportError(f"--calibration {spec}: cannot open it ({str(e).splitlines()[0]})") from None
    if not rgbs:
        raise ExportError(f"--calibration {spec}: no images to calibrate on (an empty set)")
    h, w = size
    out = []
    for rgb in rgbs:
        im = Image.fromarray(rgb)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        out.append(np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1)[None], dtype=np.float32) / 255.0)
    return out


def _spread(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n) (all of them when n <= count)."""
    if n <= count:
        return list(range(n))
    return sorted({int(i * n / count) for i in range(count)})


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_EXCLUDES = ("none", "head", "last-conv", "last-conv+resize")
ACTIVATION_TYPES = ("uint8", "int8")
DEFAULT_CALIBRATION_METHOD = "minmax"
# uint8 activations: onnxruntime's CPU QDQ fusion turns every Conv into QLinearConv (U8S8, the VNNI
# kernels); with int8 activations it left a Conv fed by (or feeding) a shared tensor in float32 between
# DequantizeLinear/QuantizeLinear with layout transposes around it (MobileNetV2 480x640: 77 ms -> 36 ms)
DEFAULT_ACTIVATIONS = "uint8"
DEFAULT_QUANT_EXCLUDE = "last-conv+resize"  # the best of those tried on real data (docs/using.md)


def quant_method(method: str = DEFAULT_CALIBRATION_METHOD, per_channel: bool = True,
                 exclude: str = DEFAULT_QUANT_EXCLUDE, activations: str = DEFAULT_ACTIVATIONS,
                 bias_correction: bool = True) -> str:
    """The `transferdepth.quantization` metadata line for these settings."""
    kept = {"none": "every supported op quantised",
            "head": "float32 after the last convolution (DepthNorm inversion, resize, clamps)",
            "last-conv": "float32 from the last convolution on (it, the DepthNorm inversion, resize, clamps)",
            "last-conv+resize": "float32 from the last convolution on and every Resize (the decoder's upsampling)"
            }[exclude]
    return (f"onnxruntime quantize_static: QDQ, {activations} activations (per tensor, asymmetric, {method}), "
            f"int8 weights (symmetric) "
            f"{'per channel' if per_channel else 'per tensor'}; {kept}"
            + ("; biases corrected on the calibration images (empirical bias correction)" if bias_correction else ""))


def _excluded_nodes(model: Any, exclude: str) -> list[str]:
    """Names of the nodes left in float32: none; the head (every node fed, directly or not, by the last Conv's
    output); the last Conv and its head; or those and every Resize node."""
    if exclude == "none":
        return []
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    last = convs[-1]
    tainted, names = set(last.output), [] if exclude == "head" else [last.name]
    for n in model.graph.node:  # topologically sorted (checked by onnx.checker)
        if n is not last and any(i in tainted for i in n.input):
            tainted.update(n.output)
            names.append(n.name)
    if exclude == "last-conv+resize":
        names += [n.name for n in model.graph.node if n.op_type == "Resize" and n.name not in names]
    return names


def _check_quantization(method: str = DEFAULT_CALIBRATION_METHOD, exclude: str = DEFAULT_QUANT_EXCLUDE,
                        per_channel: bool = True, activations: str = DEFAULT_ACTIVATIONS,
                        bias_correction: bool = True) -> None:
    if not isinstance(bias_correction, bool):
        raise ExportError(f"bias_correction must be True or False, got {bias_correction!r}")
    if activations not in ACTIVATION_TYPES:
        raise ExportError(f"quantisation activations {activations}: choose one of {', '.join(ACTIVATION_TYPES)}")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method {method}: choose one of {', '.join(CALIBRATION_METHODS)}")
    if exclude not in QUANT_EXCLUDES:
        raise ExportError(f"quantisation exclude {exclude}: choose one of {', '.join(QUANT_EXCLUDES)}")


def quantize_onnx(proto: Any, batches: list[np.ndarray], *, method: str = DEFAULT_CALIBRATION_METHOD,
                  per_channel: bool = True, exclude: str = DEFAULT_QUANT_EXCLUDE,
                  activations: str = DEFAULT_ACTIVATIONS, bias_correction: bool = True
                  ) -> tuple[Any, dict[str, str]]:
    """A float32 graph -> its 8-bit QDQ graph (int8 weights, per channel by default; `activations` "uint8"
    (default) or "int8", per tensor, calibrated with `method` ("minmax", "entropy", "percentile") on `batches`
    of (1,3,H,W) float32 RGB in [0,1]), and metadata describing the method. exclude: which nodes stay float32
    ("none"; "head": those after the last convolution; "last-conv": that convolution too; "last-conv+resize":
    also every Resize). bias_correction: shift each quantised convolution's bias so that its mean output on
    `batches` matches the float graph's (`transferdepth.bias_correction`; per convolution one pass of the
    part of the graph it depends on)."""
    import tempfile

    import onnx

    _check_quantization(method, exclude, per_channel, activations, bias_correction)
    q = _quantization_tools()

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    calib = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
             "percentile": q.CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="transferdepth-int8-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, str(src))
        with _quiet():
            try:
                q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # pre-processing is an optimisation; quantise the plain graph if it fails
                pre = src
            excluded = _excluded_nodes(onnx.load(str(pre)), exclude)
            q.quantize_static(str(pre), str(dst), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                              activation_type={"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}[activations],
                              weight_type=q.QuantType.QInt8,
                              calibrate_method=calib, nodes_to_exclude=excluded,
                              extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        out = onnx.load(str(dst))
        if bias_correction:
            correct_biases(out, onnx.load(str(pre)), [{INPUT_NAME: b} for b in batches])
    return out, {"transferdepth.quantization": quant_method(method, per_channel, exclude, activations,
                                                            bias_correction)}


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
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (_example(),), check_trace=False)
        traced = torch.jit.script(CheckedInput(traced))
    extra = {"transferdepth.json": json.dumps(contract(model, wrapper), indent=2)}
    path = Path(path)
    with atomic_write(path) as tmp, _quiet():
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return path


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, *, flip: bool = False,
                      precision: str = "fp32", **calibration: Any) -> Path:
    """Load a checkpoint directory and export it as `fmt` ("onnx" or "torchscript") to the file `out`;
    flip, precision and calibration options as `export_onnx` (TorchScript: fp32 only)."""
    if fmt not in FORMATS:
        raise ValueError(f"export format '{fmt}': choose one of {', '.join(FORMATS)}")
    if fmt == "torchscript" and precision != "fp32":
        raise ExportError(f"--precision {precision}: only for --format onnx (TorchScript is exported as fp32)")
    model = load_checkpoint(checkpoint)
    if fmt == "onnx":
        return export_onnx(model, out, flip=flip, precision=precision, **calibration)
    return export_torchscript(model, out, flip=flip)
