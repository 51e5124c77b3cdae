"""Export a trained network for deployment: ONNX or TorchScript, dynamic height and width.

The exported graph is `MetricDepth`: (N,3,H,W) float32 RGB in [0,1] -> (N,1,H,W) float32 depth in metres
at the input's size, clamped to the model's depth range (metres). Normalisation, padding to a multiple of 32, DepthNorm
inversion and upsampling are inside; flip averaging is not (run it twice and average if wanted).
The contract is stored in the ONNX metadata_props / the TorchScript archive's `transferdepth.json`.

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
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferdepth.checkpoint import load_checkpoint
from transferdepth.inference import infer
from transferdepth.models import DepthNet
from transferdepth.utils import atomic_write

FORMATS = ("onnx", "torchscript")
INPUT_NAME, OUTPUT_NAME = "rgb", "depth_m"
EXAMPLE_SIZE = (96, 128)  # (H, W) of the tracing input; any size works afterwards


class MetricDepth(nn.Module):
    """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) metres: `transferdepth.inference.infer(model, rgb, flip=False)`."""

    def __init__(self, model: DepthNet, min_depth: float | None = None, max_depth: float | None = None):
        super().__init__()
        self.model = model.eval()
        self.min_depth = model.min_depth if min_depth is None else min_depth
        self.max_depth = model.max_depth if max_depth is None else max_depth

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return infer(self.model, rgb, flip=False, min_depth=self.min_depth, max_depth=self.max_depth)


def contract(model: DepthNet, wrapper: MetricDepth) -> dict[str, str]:
    """What the exported graph expects and returns, as string key/values (ONNX metadata_props)."""
    from transferdepth import __version__

    return {
        "transferdepth.version": __version__,
        "transferdepth.input": f"{INPUT_NAME}: float32 (N,3,H,W), RGB (not BGR) in [0,1], any H and W; "
                               "normalisation is inside the graph",
        "transferdepth.output": f"{OUTPUT_NAME}: float32 (N,1,H,W), depth in metres at the input's size, "
                                f"clamped to [{wrapper.min_depth}, {wrapper.max_depth}]; no flip averaging",
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
    """Silence the expected tracer warnings: DepthNet's `if pad` is always False behind MetricDepth."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        yield


def export_onnx(model: DepthNet, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write `model` as an ONNX file (MetricDepth contract, dynamic N/H/W, metadata_props); atomic."""
    import onnx

    wrapper = MetricDepth(model.cpu()).eval()
    buf = io.BytesIO()
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            wrapper, (_example(),), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}})
    proto = onnx.load_from_string(buf.getvalue())
    _fix_shapes(proto)
    onnx.helper.set_model_props(proto, contract(model, wrapper))
    onnx.checker.check_model(proto)
    path = Path(path)
    with atomic_write(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


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


def export_torchscript(model: DepthNet, path: str | os.PathLike) -> Path:
    """Write `model` as a TorchScript archive (MetricDepth contract, dynamic size, input checked); atomic."""
    wrapper = MetricDepth(model.cpu()).eval()
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (_example(),), check_trace=False)
        traced = torch.jit.script(CheckedInput(traced))
    extra = {"transferdepth.json": json.dumps(contract(model, wrapper), indent=2)}
    path = Path(path)
    with atomic_write(path) as tmp, _quiet():
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return path


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike) -> Path:
    """Load a checkpoint directory and export it as `fmt` ("onnx" or "torchscript") to the file `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"export format '{fmt}': choose one of {', '.join(FORMATS)}")
    model = load_checkpoint(checkpoint)
    return (export_onnx if fmt == "onnx" else export_torchscript)(model, out)
