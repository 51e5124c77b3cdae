"""Depth maps to 3D points: back-projection through pinhole intrinsics, metres in the camera frame."""

from __future__ import annotations

import numpy as np


def depth_to_points(depth_m: np.ndarray, rgb: np.ndarray, intrinsics: tuple[float, ...],
                    stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every `stride`-th pixel (u, v) with depth d to the camera frame, metres:
    x = (u - cx) d / fx, y = (v - cy) d / fy, z = d (x right, y down, z forward; u, v = column, row).

    Returns float32 (N,3) points and uint8 (N,3) colours; pixels with non-finite or non-positive depth are left out.
    """
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:depth_m.shape[0]:stride, 0:depth_m.shape[1]:stride]
    d = np.asarray(depth_m, dtype=np.float64)[v, u]
    ok = np.isfinite(d) & (d > 0)
    u, v, d = u[ok], v[ok], d[ok]
    xyz = np.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], axis=1).astype(np.float32)
    return xyz, rgb[v, u].astype(np.uint8)
