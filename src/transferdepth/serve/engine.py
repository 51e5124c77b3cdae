"""Inference engines for the server: uint8 HxWx3 RGB -> HxW float32 depth in metres at the image's size.

`TorchEngine` is `DepthEstimator` (so a default request returns what `DepthEstimator.predict` returns).
`OnnxEngine` runs the graph of `transferdepth.export.export_onnx` with onnxruntime; it belongs in the API
(`DepthEstimator.from_onnx`) once the ONNX-engine issue lands, and should then move there.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from transferdepth.api import DEFAULT_MAX_PIXELS, DepthEstimator
from transferdepth.inference import rgb_to_tensor


@dataclass(frozen=True)
class Options:
    """Per-request inference options; None = the engine's default (the same as DepthEstimator's)."""

    flip: bool | None = None
    input_size: tuple[int, int] | None = None  # (H, W) the network sees


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
        self.max_pixels = max_pixels
        self.min_depth, self.max_depth = self.estimator.min_depth, self.estimator.max_depth

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
    """onnxruntime on the `export_onnx` graph (RGB [0,1] -> metres at the input's size, no flip).

    `source`: a checkpoint directory (exported to a temporary .onnx, removed once loaded) or a .onnx file
    written by `transferdepth export`. Flip averaging = the mirrored image's run, mirrored back and averaged
    in metres; `input_size` resizes the image to it (as `infer`) and the depth map back to the image's size.
    Without input_size it equals the torch engine within 1e-4 m; with it the depth map is resized twice
    (inside the graph to the input size, then back), so it differs slightly from `infer`'s single resize.
    """

    name = "onnx"

    def __init__(self, source: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 threads: int | None = None):
        import onnxruntime as ort

        from transferdepth.checkpoint import load_checkpoint
        from transferdepth.export import INPUT_NAME, export_onnx

        self.source, self.max_pixels, self.input_name = str(source), max_pixels, INPUT_NAME
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if Path(source).is_dir():
            with tempfile.TemporaryDirectory(prefix="transferdepth-onnx-") as tmp:
                path = export_onnx(load_checkpoint(source), Path(tmp) / "model.onnx")
                self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        else:
            self.session = ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "transferdepth.max_depth" not in meta:
            raise ValueError(f"{source}: not an ONNX file written by `transferdepth export` (no transferdepth metadata)")
        self.meta = meta
        self.min_depth = float(meta["transferdepth.min_depth"])
        self.max_depth = float(meta["transferdepth.max_depth"])

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.numpy()})[0]
        return torch.from_numpy(out)

    def predict_rgb(self, rgb: np.ndarray, options: Options) -> np.ndarray:
        flip = True if options.flip is None else options.flip  # DepthEstimator's default
        x = rgb_to_tensor([rgb])
        h, w = x.shape[-2:]
        if options.input_size is not None and tuple(x.shape[-2:]) != tuple(options.input_size):
            x = F.interpolate(x, size=tuple(options.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        depth = self._run(x)
        if flip:
            depth = 0.5 * (depth + torch.flip(self._run(torch.flip(x, dims=[-1]).contiguous()), dims=[-1]))
        if tuple(depth.shape[-2:]) != (h, w):
            depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
        return depth.clamp(self.min_depth, self.max_depth)[0, 0].float().numpy()

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "encoder": self.meta.get("transferdepth.encoder"),
                "decoder_width": float(self.meta.get("transferdepth.decoder_width", "nan")),
                "min_depth_m": self.min_depth, "max_depth_m": self.max_depth, "input_size": None,
                "flip": True, "weights": self.source, "device": "cpu (onnxruntime)"}


def load_engine(name: str, source: str | os.PathLike, device: str | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> TorchEngine | OnnxEngine:
    """'torch' or 'onnx' engine for a checkpoint directory (or a .onnx file for 'onnx')."""
    if name == "torch":
        return TorchEngine(source, device=device, max_pixels=max_pixels)
    if name == "onnx":
        try:
            return OnnxEngine(source, max_pixels=max_pixels)
        except ImportError as e:
            raise ValueError(f"--engine onnx needs {e.name}: pip install 'transferdepth[serve,export]'") from None
    raise ValueError(f"--engine: unknown engine '{name}' (choose torch or onnx)")
