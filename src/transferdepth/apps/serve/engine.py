"""Inference engines for the server: uint8 HxWx3 RGB -> HxW float32 depth in metres at the image's size.

`TorchEngine` is `DepthEstimator` (so a default request returns what `DepthEstimator.predict` returns).
`OnnxEngine` is `DepthEstimator.from_onnx` (onnxruntime on the graph of `transferdepth.deploy.export.export_onnx`),
so predict, serve and video share one ONNX path; with engine="compile" / "openvino" / "openvino-bf16" it is
`DepthEstimator.from_engine` (the same estimator on that runner, `transferdepth.deploy.engines`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from transferdepth.api.estimator import DEFAULT_MAX_PIXELS, DepthEstimator


@dataclass(frozen=True)
class Options:
    """Per-request inference options; None = the engine's default (the same as DepthEstimator's)."""

    flip: bool | None = None
    input_size: tuple[int, int] | None = None  # (H, W) the network sees


class OptionsError(ValueError):
    """Per-request options this engine cannot honour (answered 422 before the body is read)."""


class Engine(Protocol):
    """What the server needs from an engine."""

    max_pixels: int | None
    min_depth: float
    max_depth: float

    def predict_rgb(self, rgb: np.ndarray, options: Options) -> np.ndarray:
        """uint8 HxWx3 RGB -> HxW float32 metres."""

    def info(self) -> dict[str, Any]:
        """Model description for GET /v1/model."""


class TorchEngine:
    """`DepthEstimator` from a checkpoint directory; per-request options share the one loaded model."""

    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.checkpoint = str(checkpoint)
        self.estimator = DepthEstimator.from_pretrained(checkpoint, device=device, max_pixels=max_pixels)
        self.max_pixels, self.max_side = max_pixels, self.estimator.max_side
        self.min_depth, self.max_depth = self.estimator.min_depth, self.estimator.max_depth

    def check_options(self, options: Options) -> None:
        """Every option is honoured by the torch engine."""

    def _estimator(self, options: Options) -> DepthEstimator:
        est = self.estimator
        flip = est.flip if options.flip is None else options.flip
        size = options.input_size if options.input_size is not None else est.input_size
        if flip == est.flip and size == est.input_size:
            return est
        return DepthEstimator(est.model, est.device, flip=flip, max_pixels=est.max_pixels,
                              min_depth=est.min_depth, max_depth=est.max_depth, input_size=size)

    def predict_rgb(self, rgb: np.ndarray, options: Options) -> np.ndarray:
        return self._estimator(options).predict_rgb([rgb])[0]

    def info(self) -> dict[str, Any]:
        m = self.estimator.model
        return {"engine": self.name, "encoder": m.encoder_name, "decoder_width": m.decoder_width,
                "min_depth_m": self.min_depth, "max_depth_m": self.max_depth,
                "input_size": list(self.estimator.input_size) if self.estimator.input_size else None,
                "flip": self.estimator.flip, "weights": self.checkpoint, "device": str(self.estimator.device)}


class OnnxEngine:
    """onnxruntime on the `export_onnx` graph: `DepthEstimator.from_onnx` (the API's ONNX engine), with
    per-request options. `source`: a checkpoint directory (exported to a temporary .onnx, removed once
    loaded) or a .onnx file written by `transferdepth export` (a `--flip` export averages inside the graph
    and refuses flip=false). Without resizing it equals the torch engine within 1e-4 m (fp32 exports).
    """

    name = "onnx"

    def __init__(self, source: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 threads: int | None = None, engine: str = "onnx"):
        self.source, self.max_pixels = str(source), max_pixels
        self.estimator = DepthEstimator.from_engine(engine, source, threads=threads, max_pixels=max_pixels)
        self.name = self.estimator.engine
        self.meta, self.max_side = self.estimator.meta, self.estimator.max_side
        self.min_depth, self.max_depth = self.estimator.min_depth, self.estimator.max_depth

    def check_options(self, options: Options) -> None:
        """OptionsError for flip=false on a `--flip` export (it averages inside its graph)."""
        if options.flip is False and self.estimator.graph_flip:
            raise OptionsError("flip=false: this model was exported with --flip (flip averaging inside the "
                               "graph); omit flip or serve an export without --flip")

    def predict_rgb(self, rgb: np.ndarray, options: Options) -> np.ndarray:
        est = self.estimator
        if (options.flip is not None and options.flip != est.flip) or options.input_size is not None:
            est = copy.copy(est)  # shares the session; only the per-request options differ
            if options.flip is not None:
                self.check_options(options)
                est.flip = options.flip
            est.input_size = options.input_size if options.input_size is not None else est.input_size
        return est.predict_rgb([rgb])[0]

    def info(self) -> dict[str, Any]:
        m = self.estimator.model  # the graph's description (GraphInfo), or the compiled DepthNet
        return {"engine": self.name, "encoder": m.encoder_name, "decoder_width": float(m.decoder_width),
                "min_depth_m": self.min_depth, "max_depth_m": self.max_depth, "input_size": None,
                "flip": self.estimator.flip, "precision": self.estimator.precision, "weights": self.source,
                "device": "cpu (onnxruntime)" if self.name == "onnx" else f"cpu ({self.name})"}


def load_engine(name: str, source: str | os.PathLike, device: str | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> TorchEngine | OnnxEngine:
    """An engine of `transferdepth.deploy.engines.CHOICES` for a checkpoint directory (or a .onnx file for onnx and
    openvino, an IR .xml for openvino). auto: the fastest here (measured once, cached; torch on a GPU `device`)."""
    from transferdepth.deploy.engines import CHOICES, choose_engine

    if name == "auto":
        name = "torch" if device not in (None, "cpu") else choose_engine(source)
    if name == "torch":
        return TorchEngine(source, device=device, max_pixels=max_pixels)
    if name in CHOICES:
        return OnnxEngine(source, max_pixels=max_pixels, engine=name)
    raise ValueError(f"--engine: unknown engine '{name}' (choose one of {', '.join(CHOICES)})")
