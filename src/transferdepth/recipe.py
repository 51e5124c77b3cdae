"""DenseDepth's conventions, in one place: DepthNorm, the depth range, NYU's camera.

Everything else imports these; this module imports nothing of the project (a leaf of the layering).

DepthNorm (internal to training): ``dn = max_depth / clamp(depth, min_depth, max_depth)``. The ratio has no
unit: DenseDepth writes it in centimetres (``1000 / depth_cm``), the same number as ``10 / depth_m`` here.
With NYU's range (0.1-10 m) dn lies in [1, 100]; a model trained for 80 m (KITTI) has dn in [1, 800].
The range is a property of each model (`DepthNet.min_depth`, `.max_depth`, in the checkpoint's config.json).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# DenseDepth's NYU Depth V2 range (their `minDepth=10, maxDepth=1000` in centimetres), in metres.
MIN_DEPTH_M = 0.1
MAX_DEPTH_M = 10.0
KITTI_MAX_DEPTH_M = 80.0

# DenseDepth's effective colour channel swap rate, 0.5 * 5/7 (derivation in data/transforms.py).
DENSEDEPTH_SWAP_P = 5 / 14

# NYU Depth V2 Kinect colour camera at 640x480 (Silberman et al. 2012 toolbox), pixels.
NYU_FX, NYU_FY, NYU_CX, NYU_CY = 518.8579, 519.4696, 325.5824, 253.7362
NYU_SIZE = (640, 480)  # (W, H)


def check_depth_range(min_depth: float, max_depth: float, what: str = "depth range") -> tuple[float, float]:
    """(min_depth, max_depth) as floats if 0 < min < max and both finite; else ValueError naming `what`."""
    try:
        lo, hi = float(min_depth), float(max_depth)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: min_depth and max_depth must be numbers (metres), got "
                         f"{min_depth!r} and {max_depth!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"{what}: need finite 0 < min_depth < max_depth (metres), got min_depth={lo} "
                         f"and max_depth={hi}")
    return lo, hi


def depth_to_depthnorm(depth_m: Tensor, max_depth: float = MAX_DEPTH_M, min_depth: float = MIN_DEPTH_M) -> Tensor:
    """Metres -> DepthNorm ``max_depth / clamp(depth_m, min_depth, max_depth)`` (same shape; 0 m maps to the max)."""
    return max_depth / torch.clamp(depth_m, min_depth, max_depth)


def depthnorm_to_depth(dn: Tensor, max_depth: float = MAX_DEPTH_M, min_depth: float = MIN_DEPTH_M) -> Tensor:
    """DepthNorm -> metres ``max_depth / dn``; dn is clamped to [1, max_depth / min_depth] first."""
    dn = torch.clamp(dn, 1.0, max_depth / min_depth)
    return max_depth / dn


# What a network's output channel holds. depthnorm: DenseDepth's max_depth / depth; metric: metres; log: ln(metres);
# disparity: 1 / metres. The one inference path converts each to metres with `output_to_depth`.
OUTPUT_SPACES = ("depthnorm", "metric", "log", "disparity")


def output_to_depth(v: Tensor, space: str, max_depth: float = MAX_DEPTH_M, min_depth: float = MIN_DEPTH_M) -> Tensor:
    """A network output in `space` -> metres, clamped to [min_depth, max_depth] (differentiable inside it)."""
    if space == "depthnorm":
        return depthnorm_to_depth(v, max_depth, min_depth)
    if space == "metric":
        d = v
    elif space == "log":
        d = torch.exp(torch.clamp(v, math.log(min_depth), math.log(max_depth)))
    elif space == "disparity":
        d = 1.0 / torch.clamp(v, 1.0 / max_depth, 1.0 / min_depth)
    else:
        raise ValueError(f"output space must be one of {', '.join(OUTPUT_SPACES)}, got {space!r}")
    return torch.clamp(d, min_depth, max_depth)


def depth_to_output(depth_m: Tensor, space: str, max_depth: float = MAX_DEPTH_M, min_depth: float = MIN_DEPTH_M
                    ) -> Tensor:
    """Metres -> `space` (the inverse of `output_to_depth` inside the range)."""
    d = torch.clamp(depth_m, min_depth, max_depth)
    if space == "depthnorm":
        return max_depth / d
    if space == "metric":
        return d
    if space == "log":
        return torch.log(d)
    if space == "disparity":
        return 1.0 / d
    raise ValueError(f"output space must be one of {', '.join(OUTPUT_SPACES)}, got {space!r}")


_EPS = 1e-6


def to_space(v: Tensor, space: str, to: str, max_depth: float) -> Tensor:
    """A network output in `space` expressed in `to` (both from OUTPUT_SPACES), differentiably and not clamped
    to the depth range (training's losses: a clamp would stop a gradient); only positivity is guarded."""
    if space == to:
        return v
    metres = {"depthnorm": lambda: max_depth / v.clamp(min=_EPS), "metric": lambda: v.clamp(min=_EPS),
              "log": lambda: torch.exp(v), "disparity": lambda: 1.0 / v.clamp(min=_EPS)}
    if space not in metres:
        raise ValueError(f"unknown output space {space!r}")
    d = metres[space]()
    out = {"depthnorm": lambda: max_depth / d, "metric": lambda: d, "log": lambda: torch.log(d),
           "disparity": lambda: 1.0 / d}
    if to not in out:
        raise ValueError(f"unknown output space {to!r}")
    return out[to]()


def nyu_intrinsics(height: int, width: int) -> np.ndarray:
    """NYU Kinect 3x3 camera matrix (float64, pixels) for NYU frames resized to height x width.

    fx, fy scale with the image (per axis); the principal point is scaled with pixel centres at
    integers: ``c' = (c + 0.5) * s - 0.5``. At 480x640 it is NYU's exactly.
    """
    sx, sy = width / NYU_SIZE[0], height / NYU_SIZE[1]
    return np.array([[NYU_FX * sx, 0.0, (NYU_CX + 0.5) * sx - 0.5],
                     [0.0, NYU_FY * sy, (NYU_CY + 0.5) * sy - 0.5],
                     [0.0, 0.0, 1.0]], dtype=np.float64)


# Training recipes: named sets of `TrainConfig` values (`transferdepth train --recipe NAME`), applied before
# the YAML file and the command line. Every key, and every difference from DenseDepth's code that these
# presets keep or remove, is listed in docs/faithfulness.md with its DenseDepth commit and its effect.
_DENSEDEPTH_COMMON: dict[str, object] = {
    # follows DenseDepth's code
    "lr": 1e-4, "beta1": 0.9, "beta2": 0.999, "adam_amsgrad": True, "adam_eps": 1e-7,
    "batch_size": 8, "w_depth": 0.1, "w_grad": 1.0, "w_ssim": 1.0, "flip_p": 0.5, "swap_p": DENSEDEPTH_SWAP_P,
    "min_depth": MIN_DEPTH_M, "max_depth": MAX_DEPTH_M, "decoder_init": "glorot", "bn_momentum": 0.01,
    "bottleneck_relu": None,  # None: the encoder's registry default (ReLU after DenseNets' norm5, as DenseDepth)
    # keeps ours, deliberately (reasons in docs/faithfulness.md; the "reproduction" column there undoes them)
    "input_norm": "imagenet", "grad_term": "mean", "target_resize": "mask_mean", "shuffle": "epoch", "amp": "auto",
}
PRESETS: dict[str, dict[str, object]] = {
    # DenseDepth's code since March 2019 (ea4a455 "missing ReLU", 10a688f "always use reduced decoder").
    "densedepth": {**_DENSEDEPTH_COMMON, "decoder_width": 0.5, "decoder_act_a": True},
    # The paper and the released nyu.h5 (commit 2124ac9): full decoder (42.6M parameters), no act after convA.
    "densedepth-2018": {**_DENSEDEPTH_COMMON, "decoder_width": 1.0, "decoder_act_a": False},
    # Not DenseDepth's: a short fine-tune of a pretrained encoder on little data (docs/seeds.md, the 5-seed
    # table that chose it). DenseDepth's `densedepth` values plus the keys below.
    "finetune": {**_DENSEDEPTH_COMMON, "decoder_width": 0.5, "decoder_act_a": True,
                 "batchnorm": "frozen", "warmup_ratio": 0.1, "lr_schedule": "cosine"},
}
DEFAULT_PRESET = "densedepth"
