"""The one inference path: RGB in [0,1] -> depth in metres. Every caller uses `infer`.

`DepthEstimator` (API, predict, serve), `evaluate`, the export wrapper, training validation and the demo
all call `infer`, so they give the same metres for the same image:

    resize to input_size (optional) -> normalise -> forward at that size (N,1,ceil(H/2),ceil(W/2))
    -> DepthNorm to metres (the model's range) -> average with the mirrored prediction (optional)
    -> bilinear resize to output_size (default: the input's size) -> clamp to the model's range

The network runs any size as it is (its decoder upsamples to each skip's size); `DepthNet.forward` pads
only where a size needs it (a side under 32; every side to a multiple of 32 for checkpoints written before
`pad_multiple`) and crops back. Sizes come from tensor shapes, so tracing (ONNX / TorchScript export) keeps
H and W dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from transferdepth.models.depthnet import DepthNet
from transferdepth.recipe import output_to_depth

CHANNELS_LAST_DEVICES = ("cpu", "cuda")  # where inference runs the network in channels_last memory


def rgb_to_tensor(rgbs: Sequence[np.ndarray] | np.ndarray, device: str | torch.device = "cpu") -> Tensor:
    """Same-size uint8 HxWx3 RGB arrays -> (N,3,H,W) float32 in [0,1] on `device`."""
    a = torch.from_numpy(np.ascontiguousarray(np.stack(rgbs) if not isinstance(rgbs, np.ndarray) else rgbs))
    if a.ndim == 3:
        a = a[None]
    return a.to(device).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _metres(model: DepthNet, x: Tensor, amp: torch.dtype | None) -> Tensor:
    """Normalised (N,3,H,W) -> (N,1,ceil(H/2),ceil(W/2)) metres, unclamped beyond DepthNorm's range.

    The network sees channels_last (NHWC) memory on CPU and CUDA: the same maths, and on a 2-core CPU 1.2-1.3x
    faster (480x640; 1.4x with the model's weights channels_last too, as `DepthEstimator` keeps them)."""
    if x.device.type in CHANNELS_LAST_DEVICES:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(x.device.type, dtype=amp) if amp is not None else nullcontext()
    with ctx:
        out = model(x)
    return output_to_depth(out.float(), getattr(model, "output_space", "depthnorm"), model.max_depth, model.min_depth)


@torch.no_grad()
def infer(model: DepthNet, rgb: Tensor, *, flip: bool = True, input_size: tuple[int, int] | None = None,
          output_size: tuple[int, int] | None = None, normalized: bool = False,
          min_depth: float | None = None, max_depth: float | None = None,
          amp: torch.dtype | None = None) -> Tensor:
    """(N,3,H,W) RGB in [0,1] -> (N,1,H',W') float32 depth in metres; (H',W') = output_size or (H,W).

    flip: average with the mirrored image's prediction (DenseDepth's test, in metres).
    input_size: (H, W) the network sees (bilinear, antialiased resize), e.g. its training resolution.
    normalized: `rgb` is already normalised with the encoder's mean/std (training batches).
    min_depth, max_depth: clamp range in metres (default: the model's own range).
    amp: autocast dtype for the forward pass (e.g. torch.bfloat16 on CUDA); the output is float32.
    """
    out_size = tuple(output_size) if output_size is not None else (rgb.shape[-2], rgb.shape[-1])
    x = rgb
    if input_size is not None and tuple(x.shape[-2:]) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False, antialias=True)
    if not normalized:
        x = model.normalize(x)
    depth = _metres(model, x, amp)
    if flip:
        mirrored = _metres(model, torch.flip(x, dims=[-1]), amp)
        depth = 0.5 * (depth + torch.flip(mirrored, dims=[-1]))
    depth = F.interpolate(depth, size=out_size, mode="bilinear", align_corners=False)
    lo = model.min_depth if min_depth is None else min_depth
    hi = model.max_depth if max_depth is None else max_depth
    return depth.clamp(lo, hi)
