"""The contract of an exported graph, shared by export, quantisation and the ONNX engine.

`MetricDepth` is what every export traces: (N,3,H,W) float32 RGB in [0,1] -> (N,1,H,W) float32 depth in metres
at the input's size (the one inference path, `inference.core.infer`). `contract` is what the file says about
itself (ONNX metadata_props, the TorchScript archive's `transferdepth.json`); the ONNX engine refuses a file
without it. Input and output names, `ExportError` (a bad export request, one line) and `quiet` (tracer
warnings silenced) live here too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from transferdepth.inference.core import infer
from transferdepth.models import DepthNet

INPUT_NAME, OUTPUT_NAME = "rgb", "depth_m"


class ExportError(ValueError):
    """A bad export request (precision, calibration set, missing tools); the message is one line."""


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
    from transferdepth._version import __version__

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


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the expected tracer warnings (constants the tracer records, e.g. timm's same-padding arithmetic)."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        yield
