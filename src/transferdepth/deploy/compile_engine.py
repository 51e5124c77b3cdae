"""The compile engine: `torch.compile` (inductor, CPU, frozen weights) of the graph every export traces.

`CompiledRunner(source, threads)` compiles `contract.MetricDepth` (the one inference path, `infer`, without
flip) of a checkpoint directory or a DepthNet, with channels_last weights and inductor's `freezing` (weights
folded in as constants: valid because the engine never trains), and runs it under `torch.no_grad`. The first
call at each new input shape compiles (about a minute for MobileNetV2 on a loaded 2-core CPU; inductor caches
compiled code on disk, under `TORCHINDUCTOR_CACHE_DIR` or /tmp/torchinductor_$USER, so later processes start
faster); after a second shape it compiles a dynamic-shape graph that serves every size. It needs a C++
compiler (inductor generates C++). `OnnxRunner`'s interface, so `api.estimator` puts it behind the same
estimator; equal to the torch engine within 1e-4 m.
"""

from __future__ import annotations

import os
import shutil
import time

import torch

from transferdepth.deploy.contract import MetricDepth, quiet
from transferdepth.deploy.onnx_engine import OnnxRunner
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.models import DepthNet


def compiler() -> str | None:
    """The C++ compiler inductor would use ($CXX, else c++, g++ or clang++ on PATH), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((found for n in names if (found := shutil.which(n))), None)


class CompiledRunner:
    """torch.compile (inductor, frozen weights) on `MetricDepth` of `source` (a checkpoint directory, Hub name or
    DepthNet). threads: torch's intra-op threads, process-wide (None: leave them). `first_call_s`: seconds the
    first call took (compilation included). Raises ValueError (one line) without a C++ compiler."""

    name = "compile"

    def __init__(self, source: str | os.PathLike | DepthNet, threads: int | None = None):
        if compiler() is None:
            raise ValueError("the compile engine needs a C++ compiler for torch inductor (g++ or clang++ on PATH, "
                             "or $CXX); install one or choose another engine")
        model = source if isinstance(source, DepthNet) else load_checkpoint(source)
        self.source = "a DepthNet" if isinstance(source, DepthNet) else str(source)
        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.cpu().eval().to(memory_format=torch.channels_last)
        self.wrapper = MetricDepth(self.model).eval()
        self.compiled = torch.compile(self.wrapper, backend="inductor", options={"freezing": True})
        self.meta: dict[str, str] = {}
        self.graph_flip, self.precision = False, "fp32"
        self.min_depth, self.max_depth = self.model.min_depth, self.model.max_depth
        self.first_call_s: float | None = None

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) float32 RGB in [0,1] -> (N,1,H,W) metres (the first call per shape compiles)."""
        start = time.perf_counter()
        with torch.no_grad(), quiet():
            out = self.compiled(x.contiguous(memory_format=torch.channels_last))
        if self.first_call_s is None:
            self.first_call_s = time.perf_counter() - start
        return out.contiguous()

    predict = OnnxRunner.predict  # resize, flip-average in metres, resize back, clamp: as the ONNX engine

    def stand_in(self) -> DepthNet:
        """The DepthNet itself (its encoder, width and depth range)."""
        return self.model
