"""The ONNX engine: onnxruntime on a graph written by `export.export_onnx` (any precision).

`OnnxRunner(source)` opens a `.onnx` file, or exports a checkpoint directory to a temporary fp32 file first,
and refuses a file that does not carry our contract (`contract.contract`: metadata, the input `rgb`). `predict`
is the engine's side of the one inference path: RGB in [0,1] at the network's size -> metres, flip-averaged
(inside the graph for a `--flip` export, else here, in metres, as `infer`) and clamped. `api.estimator`'s
`OnnxDepthEstimator` puts it behind the same `predict` / `predict_batch` / `predict_rgb` as the torch engine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from transferdepth.deploy.contract import INPUT_NAME, OUTPUT_NAME
from transferdepth.deploy.export import export_onnx
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.inference.hub import is_hub_name


class OnnxRunner:
    """An onnxruntime session on one of our exports. threads: intra-op threads (None: onnxruntime's default);
    providers: onnxruntime execution providers (default CPU). Raises ValueError (one line) for a file that is
    not one of our exports, or a missing onnxruntime."""

    def __init__(self, source: str | os.PathLike, threads: int | None = None,
                 providers: Sequence[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("the onnx engine needs onnxruntime: pip install 'transferdepth[export]'") from None
        self.source = str(source)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        if Path(source).is_dir() or (is_hub_name(source) and not str(source).endswith(".onnx")):  # org/name
            with tempfile.TemporaryDirectory(prefix="transferdepth-onnx-") as tmp:
                path = export_onnx(load_checkpoint(source), Path(tmp) / "model.onnx")
                self.session = ort.InferenceSession(str(path), opts, providers=providers)
        else:
            if not Path(source).is_file():
                raise ValueError(f"{source}: no such ONNX file or checkpoint directory")
            try:
                self.session = ort.InferenceSession(str(source), opts, providers=providers)
            except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
                raise ValueError(f"{source}: not an ONNX model onnxruntime can load "
                                 f"({str(e).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "transferdepth.max_depth" not in meta or [i.name for i in self.session.get_inputs()] != [INPUT_NAME]:
            raise ValueError(f"{source}: not an ONNX file written by `transferdepth export` "
                             "(no transferdepth metadata)")
        _check_output(self.session, source)
        self.meta, self.input_name = meta, INPUT_NAME
        self.graph_flip = meta.get("transferdepth.flip") == "true"
        self.precision = meta.get("transferdepth.precision", "fp32")
        self.min_depth = float(meta["transferdepth.min_depth"])
        self.max_depth = float(meta["transferdepth.max_depth"])

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) float32 RGB in [0,1] -> the graph's (N,1,H,W) metres, as it is."""
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])

    def predict(self, x: torch.Tensor, size: tuple[int, int], flip: bool, min_depth: float,
                max_depth: float) -> torch.Tensor:
        """(N,3,H,W) RGB in [0,1] -> (N,1,H,W) metres: resized to `size` (H, W) for the graph (bilinear,
        antialiased, as `infer`), flip-averaged unless the graph does it, resized back, clamped."""
        h, w = x.shape[-2:]
        if tuple(size) != (h, w):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        depth = self.run(x)
        if flip and not self.graph_flip:
            depth = 0.5 * (depth + torch.flip(self.run(torch.flip(x, dims=[-1]).contiguous()), dims=[-1]))
        if tuple(depth.shape[-2:]) != (h, w):
            depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
        return depth.clamp(min_depth, max_depth)

    def stand_in(self) -> torch.nn.Module:
        """A module describing the graph (encoder, width, depth range) where a DepthNet is expected."""
        return GraphInfo(self.meta)


class GraphInfo(torch.nn.Module):
    """Stands in for the DepthNet an ONNX engine does not have: the exported graph's description."""

    def __init__(self, meta: dict[str, str]):
        super().__init__()
        self.encoder_name = meta.get("transferdepth.encoder", "?")
        self.decoder_width = float(meta.get("transferdepth.decoder_width", "nan"))
        self.min_depth = float(meta["transferdepth.min_depth"])
        self.max_depth = float(meta["transferdepth.max_depth"])


def _check_output(session, source: str | os.PathLike) -> None:
    """The graph must have one output `depth_m`, float32 (N,1,H,W) (the contract); else ValueError, one line.
    A symbolic dimension (batch, height, width) passes; a fixed channel count other than 1 does not."""
    outs = session.get_outputs()
    if len(outs) != 1:
        raise ValueError(f"{source}: the graph has {len(outs)} outputs ({', '.join(o.name for o in outs)}), "
                         f"expected one, {OUTPUT_NAME} float32 (N,1,H,W) metres")
    out = outs[0]
    shape = list(out.shape) if out.shape is not None else []
    if out.name != OUTPUT_NAME or out.type != "tensor(float)" or len(shape) != 4 or shape[1] != 1:
        raise ValueError(f"{source}: the graph's output is {out.name} {out.type} {shape}, expected {OUTPUT_NAME} "
                         "tensor(float) (N,1,H,W) metres; not a depth graph of `transferdepth export`")
