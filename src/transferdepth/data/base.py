"""The one sample contract every data source yields, and the error every reader raises.

A sample is a dict:
    rgb         uint8 array, HxWx3
    depth       float32 array, HxW, metres
    valid       bool array, HxW (False at holes, saturation and out-of-range values)
    intrinsics  float64 3x3 camera matrix in pixels for this image size, or None
    name        str, a stable identifier of the sample inside its source
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np


class Sample(TypedDict):
    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    intrinsics: np.ndarray | None
    name: str


class DatasetError(ValueError):
    """Bad data: says which source, which sample index, which path, and what was expected."""

    def __init__(self, source: str, message: str, index: int | None = None, path: str | None = None):
        self.source, self.index, self.path, self.reason = source, index, path, message
        where = source
        if index is not None:
            where += f" [index {index}]"
        if path is not None:
            where += f" ({path})"
        super().__init__(f"{where}: {message}")


def normalize_index(index: int, n: int, source: str) -> int:
    """`index` in [0, n) (negative indices count from the end); IndexError naming the source otherwise."""
    if not -n <= index < n:
        raise IndexError(f"{source}: index {index} out of range for {n} samples")
    return index % n


def check_sample(sample: dict[str, Any], source: str, index: int | None = None) -> Sample:
    """Validate the contract (dtypes, shapes, matching sizes); raise DatasetError otherwise."""
    name = sample.get("name")
    rgb, depth, valid = sample.get("rgb"), sample.get("depth"), sample.get("valid")
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(source, f"rgb must be uint8 HxWx3, got {_desc(rgb)}", index, name)
    if not isinstance(depth, np.ndarray) or depth.dtype != np.float32 or depth.ndim != 2:
        raise DatasetError(source, f"depth must be float32 HxW metres, got {_desc(depth)}", index, name)
    if not isinstance(valid, np.ndarray) or valid.dtype != np.bool_ or valid.shape != depth.shape:
        raise DatasetError(source, f"valid must be bool {depth.shape}, got {_desc(valid)}", index, name)
    if rgb.shape[:2] != depth.shape:
        raise DatasetError(
            source, f"RGB size {rgb.shape[1]}x{rgb.shape[0]} does not match depth size "
            f"{depth.shape[1]}x{depth.shape[0]} (WxH)", index, name)
    k = sample.get("intrinsics")
    if k is not None and (not isinstance(k, np.ndarray) or k.shape != (3, 3)):
        raise DatasetError(source, f"intrinsics must be a 3x3 array or None, got {_desc(k)}", index, name)
    return sample  # type: ignore[return-value]


def _desc(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__
