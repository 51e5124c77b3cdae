"""2D -> 3D: left/right views from one image and its depth (depth-image-based rendering, DIBR).

The input camera sits midway between two virtual eyes `baseline_m` apart (parallel cameras, the same
intrinsics). A pixel at depth Z has disparity ``d = baseline * fx / Z`` pixels between the eyes; a
convergence distance Zc shifts both views so that points at Zc have zero parallax (on the screen
plane), nearer points come out of the screen and farther ones go behind it:

    left:  u_L = u + (d - s) / 2        right: u_R = u - (d - s) / 2,       s = baseline * fx / Zc

(s = 0 for Zc = infinity). Each view is forward-warped (every source pixel to its nearest target column),
nearer surfaces win where several land on the same pixel (a z-buffer), and the holes that disocclusion
leaves are filled along the row from the neighbour that lies farther away (the background side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("sbs", "tab", "anaglyph")
DEFAULT_BASELINE_M = 0.065  # a typical adult interpupillary distance


@dataclass(frozen=True)
class StereoOptions:
    """layout: sbs (left | right, 2W x H), tab (left over right, W x 2H), anaglyph (red-cyan, W x H).
    baseline_m: eye separation in metres. convergence_m: zero-parallax distance in metres; None = the
    median depth of the (first) image, math.inf = parallel cameras (everything in front of the screen)."""

    layout: str = "sbs"
    baseline_m: float = DEFAULT_BASELINE_M
    convergence_m: float | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"--stereo: unknown layout '{self.layout}'; choose from {', '.join(LAYOUTS)}")
        if not (math.isfinite(self.baseline_m) and self.baseline_m > 0):
            raise ValueError(f"--baseline: need a positive number of metres, got {self.baseline_m}")
        if self.convergence_m is not None and not self.convergence_m > 0:
            raise ValueError(f"--convergence: need a positive distance in metres (or inf), got {self.convergence_m}")


def convergence_for(depth_m: np.ndarray, convergence_m: float | None) -> float:
    """The zero-parallax distance used: `convergence_m`, or the median finite depth when None."""
    if convergence_m is not None:
        return float(convergence_m)
    d = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    return float(np.median(d)) if d.size else math.inf


def warp_view(rgb: np.ndarray, depth_m: np.ndarray, shift_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-warp `rgb` (HxWx3) by `shift_px` (HxW, pixels, + = right) with a z-buffer on `depth_m`, then
    fill holes from the background side. Returns (view HxWx3 like rgb, holes HxW bool: pixels that were filled)."""
    h, w = depth_m.shape
    v, u = np.mgrid[0:h, 0:w]
    x = np.rint(u + shift_px).astype(np.int64)
    z = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, np.inf).astype(np.float64)
    inside = (x >= 0) & (x < w)
    target = (v * w + x)[inside]
    src = (v * w + u)[inside]
    order = np.lexsort((z[inside], target))  # by target pixel, nearest first
    first = np.ones(order.size, bool)
    first[1:] = target[order][1:] != target[order][:-1]
    win = order[first]
    flat_rgb = rgb.reshape(h * w, -1)
    out = np.zeros_like(flat_rgb)
    out_z = np.full(h * w, np.nan)
    out[target[win]] = flat_rgb[src[win]]
    out_z[target[win]] = z.ravel()[src[win]]
    holes = np.isnan(out_z).reshape(h, w)
    out = out.reshape(rgb.shape)
    _fill_from_background(out, out_z.reshape(h, w), holes, rgb)
    return out, holes


def _fill_from_background(out: np.ndarray, out_z: np.ndarray, holes: np.ndarray, rgb: np.ndarray) -> None:
    """In place: each hole pixel takes the colour of the nearer-in-the-row filled neighbour (left or right
    end of its run of holes) that lies farther from the camera; at the image border, the only neighbour;
    in a row with no filled pixel at all, the source image's own pixel."""
    h, w = holes.shape
    cols = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(~holes, cols, -1), axis=1)  # last filled column at or before
    right = np.minimum.accumulate(np.where(~holes, cols, w)[:, ::-1], axis=1)[:, ::-1]  # first at or after
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    zl = np.where(left >= 0, out_z[rows, np.clip(left, 0, w - 1)], -np.inf)
    zr = np.where(right < w, out_z[rows, np.clip(right, 0, w - 1)], -np.inf)
    pick = np.where(zl >= zr, left, right)  # the farther neighbour (background); a missing side is -inf
    ok = holes & (pick >= 0) & (pick < w)
    out[ok] = out[rows[ok], pick[ok]]
    empty = holes & ~ok
    out[empty] = rgb[empty]


def render_stereo(rgb: np.ndarray, depth_m: np.ndarray, fx: float, baseline_m: float = DEFAULT_BASELINE_M,
                  convergence_m: float = math.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left and right views (uint8 HxWx3) of `rgb` with depth `depth_m` (HxW metres), focal `fx` pixels.

    Returns (left, right, left_holes, right_holes); the hole masks mark disoccluded pixels that were filled.
    """
    d = baseline_m * fx / np.asarray(depth_m, np.float64)
    s = baseline_m * fx / convergence_m if math.isfinite(convergence_m) else 0.0
    half = (d - s) / 2.0
    left, lh = warp_view(rgb, depth_m, half)
    right, rh = warp_view(rgb, depth_m, -half)
    return left, right, lh, rh


def compose(left: np.ndarray, right: np.ndarray, layout: str) -> np.ndarray:
    """One uint8 image from the two views: sbs (2W x H), tab (W x 2H), anaglyph (red from the left eye,
    green and blue from the right: red-cyan glasses)."""
    if layout == "sbs":
        return np.concatenate([left, right], axis=1)
    if layout == "tab":
        return np.concatenate([left, right], axis=0)
    if layout == "anaglyph":
        return np.concatenate([left[..., :1], right[..., 1:]], axis=2)
    raise ValueError(f"unknown stereo layout '{layout}'; choose from {', '.join(LAYOUTS)}")


def stereo_image(rgb: np.ndarray, depth_m: np.ndarray, fx: float, opts: StereoOptions,
                 convergence_m: float | None = None) -> np.ndarray:
    """The composed stereo image of `opts.layout`; convergence: `convergence_m` if given, else
    `opts.convergence_m`, else this image's median depth."""
    zc = convergence_m if convergence_m is not None else convergence_for(depth_m, opts.convergence_m)
    left, right, _, _ = render_stereo(rgb, depth_m, fx, opts.baseline_m, zc)
    return compose(left, right, opts.layout)


def write_stereo(path, rgb: np.ndarray, depth_m: np.ndarray, fx: float, opts: StereoOptions) -> None:
    """Write the composed stereo image of one photo as PNG (atomically)."""
    from PIL import Image

    from transferdepth.utils import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(stereo_image(rgb, depth_m, fx, opts)).save(tmp, format="PNG")
