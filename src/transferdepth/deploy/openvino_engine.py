"""The OpenVINO engine: OpenVINO Runtime (CPU) on our IR (`export.export_openvino`) or our ONNX export.

`OpenVinoRunner(path, threads, precision)` reads an IR (`.xml` with its `.bin` beside it), one of our `.onnx`
files, or a checkpoint directory (exported to a temporary fp32 ONNX file first), refuses a model without our
contract (`export.ir_metadata`: the "transferdepth.*" keys, input `rgb`, output `depth_m` (N,1,H,W)), and
compiles it for the CPU with `threads` inference threads and an inference precision hint: "f32" (the same
metres as the torch engine within 1e-4 m) or "bf16" (bfloat16 arithmetic where the CPU has AVX-512 BF16 or
AMX; input and output stay float32 metres). It has `OnnxRunner`'s interface (`run`, `predict`, `stand_in`,
`meta`, `graph_flip`, `precision`), so `api.estimator` puts it behind the same estimator.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferdepth.deploy.contract import INPUT_NAME, OUTPUT_NAME
from transferdepth.deploy.export import export_onnx, ir_metadata
from transferdepth.deploy.onnx_engine import OnnxRunner
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.inference.hub import is_hub_name

PRECISIONS = ("f32", "bf16")  # OpenVINO's INFERENCE_PRECISION_HINT values we accept
INSTALL = "pip install 'transferdepth[openvino]'"
STATIC_SHAPES = 4  # int8 models: compiled input sizes kept at once


def import_openvino() -> Any:
    """The openvino module, or ValueError (one line) naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise ValueError(f"the openvino engine needs openvino: {INSTALL}") from None
    return openvino


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Put back the calling thread's alternate signal stack (sigaltstack) after the block (Linux only).

    OpenVINO 2026.4's CPU plugin installs a 20 KB alternate signal stack on the thread that compiles a model
    and puts the previous one back when that model is destroyed. Destroyed in another order than created (two
    estimators, the first one freed first), the thread is left with an unmapped stack, and the next signal
    handled on it (Python's handlers use SA_ONSTACK: Ctrl-C, or the SIGCHLD handler of torch's DataLoader
    workers when any child process exits) kills the process with SIGSEGV. Keeping the caller's stack avoids
    that; OpenVINO's signal handling then uses the caller's (Python's faulthandler's is 58 KB).
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    saved = libc.sigaltstack(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        if saved:
            if before.ss_flags & 2:  # SS_DISABLE: there was none
                before = _SignalStack(None, 2, 0)
            libc.sigaltstack(ctypes.byref(before), None)


def has_bf16(core: Any = None) -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 natively here (AVX-512 BF16 or AMX)."""
    core = core or import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """OpenVINO on one of our exports (IR .xml, .onnx) or a checkpoint directory. threads: CPU inference threads
    (None: OpenVINO's default); precision: "f32" or "bf16" (refused where the CPU lacks it). Raises ValueError
    (one line) for a file that is not one of our exports, a missing openvino, or an unknown precision."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str = "f32"):
        ov = import_openvino()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: the openvino engine runs {' or '.join(PRECISIONS)}")
        core = ov.Core()
        if precision == "bf16" and not has_bf16(core):
            raise ValueError("precision bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); use f32")
        self.source, self.threads = str(path), threads
        self.name = "openvino" if precision == "f32" else "openvino-bf16"
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if Path(path).is_dir() or (is_hub_name(path) and not str(path).endswith((".onnx", ".xml"))):
            with tempfile.TemporaryDirectory(prefix="transferdepth-openvino-") as tmp:
                onnx_path = export_onnx(load_checkpoint(path), Path(tmp) / "model.onnx")
                model = core.read_model(str(onnx_path))
                self.meta = self._check(model)
        else:
            model = self._read(core, Path(path))
            self.meta = self._check(model)
        # OpenVINO 2026.4 runs an int8 (QDQ) graph wrongly when height and width are dynamic (fine-tuned
        # MobileNetV2: depth 0.57-0.62x the fp32 graph's; static shapes: 0.999-1.009x). So an int8 model is
        # compiled once per input height x width (batch stays dynamic), the last STATIC_SHAPES kept.
        self.static = self.meta.get("transferdepth.precision") == "int8"
        self._ov, self._core, self._config, self._model = ov, core, config, model
        self._by_shape: dict[tuple[int, int], Any] = {}
        if not self.static:
            with keep_signal_stack():
                self.compiled = core.compile_model(model, "CPU", config)
            self.request = self.compiled.create_infer_request()
        self.input_name = INPUT_NAME
        self.graph_flip = self.meta.get("transferdepth.flip") == "true"
        self.precision = self.meta.get("transferdepth.precision", "fp32") + ("" if precision == "f32" else
                                                                              " weights, bf16 inference")
        self.min_depth = float(self.meta["transferdepth.min_depth"])
        self.max_depth = float(self.meta["transferdepth.max_depth"])

    def _read(self, core: Any, path: Path) -> Any:
        if not path.is_file():
            raise ValueError(f"{path}: no such OpenVINO IR (.xml), ONNX file or checkpoint directory")
        if path.suffix.lower() not in (".xml", ".onnx"):
            raise ValueError(f"{path}: the openvino engine reads an IR (.xml + .bin), a .onnx file or a checkpoint "
                             "directory")
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise ValueError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing beside it")
        try:
            return core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError / GeneralFailure with long messages
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(f"{path}: not a model OpenVINO can read ({first})") from None

    def _check(self, model: Any) -> dict[str, str]:
        """Our contract: metadata, input `rgb`, one output `depth_m` (N,1,H,W) float32; else ValueError."""
        meta = ir_metadata(model)
        inputs = [i.get_any_name() for i in model.inputs]
        if "transferdepth.max_depth" not in meta or inputs != [INPUT_NAME]:
            raise ValueError(f"{self.source}: not a model written by `transferdepth export` (no transferdepth "
                             "metadata)")
        outs = model.outputs
        shape = outs[0].get_partial_shape() if len(outs) == 1 else None
        if (len(outs) != 1 or OUTPUT_NAME not in outs[0].get_names() or shape.rank.get_length() != 4
                or str(shape[1]) != "1" or outs[0].get_element_type().get_type_name() != "f32"):
            raise ValueError(f"{self.source}: expected one output {OUTPUT_NAME} float32 (N,1,H,W) metres; not a "
                             "depth graph of `transferdepth export`")
        return meta

    def _request_for(self, height: int, width: int) -> Any:
        """An int8 model's infer request compiled for (height, width), batch dynamic."""
        key = (int(height), int(width))
        if key not in self._by_shape:
            if len(self._by_shape) >= STATIC_SHAPES:
                self._by_shape.pop(next(iter(self._by_shape)))
            model = self._model.clone()
            model.reshape({self.input_name: self._ov.PartialShape([-1, 3, key[0], key[1]])})
            with keep_signal_stack():
                self._by_shape[key] = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        return self._by_shape[key]

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) float32 RGB in [0,1] -> the graph's (N,1,H,W) metres, as it is."""
        request = self._request_for(*x.shape[-2:]) if self.static else self.request
        request.infer({self.input_name: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    # RGB [0,1] -> metres around `run` (resize, flip unless in the graph, resize back, clamp) and the
    # description of the graph are the ONNX engine's, shared
    predict = OnnxRunner.predict
    stand_in = OnnxRunner.stand_in
