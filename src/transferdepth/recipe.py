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


def nyu_intrinsics(height: int, width: int) -> np.ndarray:
    """NYU Kinect 3x3 camera matrix (float64, pixels) for NYU frames resized to height x width.

    fx, fy scale with the image (per axis); the principal point is scaled with pixel centres at
    integers: ``c' = (c + 0.5) * s - 0.5``. At 480x640 it is NYU's exactly.
    """
    sx, sy = width / NYU_SIZE[0], height / NYU_SIZE[1]
    return np.array([[NYU_FX * sx, 0.0, (NYU_CX + 0.5) * sx - 0.5],
                     [0.0, NYU_FY * sy, (NYU_CY + 0.5) * sy - 0.5],
                     [0.0, 0.0, 1.0]], dtype=np.float64)
