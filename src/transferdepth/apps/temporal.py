"""Steady video depth: per-frame scale alignment to a running reference (`predict --temporal`).

A monocular network guesses each frame's scale afresh, so a clip's depth "breathes": the whole frame gets
nearer or farther from one frame to the next although the scene did not move. `ScaleStabiliser` removes
most of that jitter, one frame at a time (causal: frame t uses frames <= t only):

1. The reference is the previous stabilised frame (HxW metres), so its scale is the running average of
   the clip's scales so far.
2. Given the frames' pixels (`rgb`), the dominant image translation from the previous frame to this one
   (a camera pan) is measured by phase correlation (`image_shift`, on greyscale scaled to at most 320
   pixels a side) and the reference is shifted by it, so that a pixel is compared with the same surface;
   whichever of "shifted" and "not shifted" makes the two agree better (the smaller median absolute
   deviation of the log ratio of step 3) is used.
3. r = log(reference) - log(depth_t) per pixel (both finite and > 0, in the overlap; a frame of more
   than SAMPLE_PIXELS pixels is sampled on a regular grid of about that many). The pixels that
   stay consistent are those with |r - median(r)| < `band` (default 0.1, i.e. within about 10 % of the
   frame's typical ratio): moving objects, disocclusions and edges the shift does not explain are left out.
4. m = median(r) over the consistent pixels: the log scale that would align frame t to the reference.
5. The output is depth_t * exp(strength * m): strength 0 = per-frame prediction unchanged, towards 1 the
   scale follows the reference more. In scale this is an exponential moving average,
   log s_out_t = strength * log s_out_{t-1} + (1 - strength) * log s_pred_t (+ the true scale change
   between the frames, damped the same way), so i.i.d. jitter of the log scale with standard deviation
   sigma leaves frame-to-frame changes of (1 - strength) / sqrt(1 + strength) of what they were
   (0.23 at the default 0.7), while a real steady change of the scene's depth (the camera walking
   towards a wall by a fraction g per frame) is followed with a lag of about strength / (1 - strength) * g.
6. Fewer than `min_fraction` consistent pixels (a cut, or a frame with no usable pixel): the frame is
   left as predicted and becomes the new reference.

Only the global scale is changed (one factor per frame): the per-pixel structure of each prediction is
the network's. Depth may leave the model's clamp range by the factor. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_STRENGTH = 0.7
STRENGTH_RANGE = (0.0, 0.95)  # 1 would freeze the first frame's scale for the whole clip
SAMPLE_PIXELS = 1 << 16  # the scale is measured on at most about this many pixels of a frame (a regular grid)


def _grey(rgb: np.ndarray, factor: int) -> np.ndarray:
    """HxW(x3) -> float32 greyscale, block-averaged by `factor` (the edge rows / columns that do not fill a
    block are dropped)."""
    g = rgb.mean(axis=2, dtype=np.float32) if rgb.ndim == 3 else np.asarray(rgb, np.float32)
    h, w = (g.shape[0] // factor) * factor, (g.shape[1] // factor) * factor
    return g[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def image_shift(prev: np.ndarray, cur: np.ndarray, max_side: int = 320) -> tuple[int, int]:
    """(dy, dx) pixels with cur(y, x) ~ prev(y - dy, x - dx): the dominant translation between two frames of
    the same size (HxW or HxWx3), by phase correlation (Hann window) on greyscale block-averaged to at
    most `max_side` pixels a side (so the shift is a multiple of that factor)."""
    if prev.shape[:2] != cur.shape[:2]:
        raise ValueError(f"image_shift: frames of different sizes {prev.shape[:2]} and {cur.shape[:2]}")
    factor = max(1, math.ceil(max(cur.shape[:2]) / max_side))
    a, b = _grey(prev, factor), _grey(cur, factor)
    window = np.hanning(a.shape[0])[:, None] * np.hanning(a.shape[1])[None, :]
    cross = np.fft.fft2((b - b.mean()) * window) * np.conj(np.fft.fft2((a - a.mean()) * window))
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-12)).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = corr.shape
    return int(dy if dy <= h // 2 else dy - h) * factor, int(dx if dx <= w // 2 else dx - w) * factor


def _overlap(ref: np.ndarray, depth: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """The parts of ref and depth that show the same pixels when depth(y, x) ~ ref(y - dy, x - dx)."""
    h, w = depth.shape
    cur = depth[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    return ref[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)], cur


def check_strength(value: object, name: str = "temporal strength") -> float:
    """`value` as a float in STRENGTH_RANGE, else ValueError naming `name` (one line)."""
    lo, hi = STRENGTH_RANGE
    try:
        strength = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        strength = math.nan
    if not lo <= strength <= hi:  # also NaN
        raise ValueError(f"{name}: expected a number from {lo:g} (off) to {hi:g} (steadiest), got {value!r}")
    return strength


@dataclass
class ScaleStabiliser:
    """Call with each frame's depth (HxW float metres) in order; returns it rescaled (HxW float32 metres).

    strength: in [0, 0.95] (`check_strength`), default 0.7. band: log-ratio half-width of the consistent
    pixels. min_fraction: fewer consistent pixels (of the compared ones) restart the reference.
    `factors` holds the factor applied to each frame so far (1.0 for the first frame and restarts)."""

    strength: float = DEFAULT_STRENGTH
    band: float = 0.1
    min_fraction: float = 0.2
    factors: list[float] = field(default_factory=list)
    _ref: np.ndarray | None = field(default=None, repr=False)
    _rgb: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.strength = check_strength(self.strength)
        if not self.band > 0 or not 0 <= self.min_fraction <= 1:
            raise ValueError(f"band must be > 0 and min_fraction in [0, 1], got {self.band}, {self.min_fraction}")

    def _consistent(self, ref: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, float]:
        """(log(ref) - log(depth) on the consistent pixels (step 3 of the module docstring), 1-D; the median
        absolute deviation of that ratio over all compared pixels: how well ref and depth agree up to scale).
        Large frames are sampled on a regular grid of about SAMPLE_PIXELS pixels."""
        step = max(1, math.ceil(math.sqrt(depth.size / SAMPLE_PIXELS)))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(ref[::step, ::step]) - np.log(depth[::step, ::step])
        r = r[np.isfinite(r)]
        if r.size == 0:
            return r, math.inf
        deviation = np.abs(r - np.median(r))
        consistent = r[deviation < self.band]
        ok = consistent.size >= max(1.0, self.min_fraction * r.size)
        return (consistent if ok else r[:0]), float(np.median(deviation))

    def log_offset(self, depth: np.ndarray, shift: tuple[int, int] = (0, 0)) -> float | None:
        """median(log reference - log depth) over the consistent pixels, the reference shifted by `shift`
        (dy, dx) when the two agree better so (a smaller median absolute deviation of the log ratio) than
        unshifted; None when there is no reference of this shape or too few consistent pixels
        (`min_fraction` of the compared ones)."""
        ref = self._ref
        if ref is None or ref.shape != depth.shape:
            return None
        best, spread = self._consistent(ref, depth)
        if shift != (0, 0) and abs(shift[0]) < depth.shape[0] and abs(shift[1]) < depth.shape[1]:
            moved, moved_spread = self._consistent(*_overlap(ref, depth, *shift))
            best = moved if moved_spread < spread else best
        return float(np.median(best)) if best.size else None

    def __call__(self, depth: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
        """depth: HxW metres; rgb: the frame it was predicted from (HxWx3, any size ratio; None: no pan
        compensation)."""
        depth = np.asarray(depth, np.float32)
        if depth.ndim != 2:
            raise ValueError(f"depth: expected an HxW array (metres), got shape {depth.shape}")
        shift = (0, 0)
        if rgb is not None and self._rgb is not None and self._rgb.shape == rgb.shape:
            dy, dx = image_shift(self._rgb, rgb)
            shift = (round(dy * depth.shape[0] / rgb.shape[0]), round(dx * depth.shape[1] / rgb.shape[1]))
        self._rgb = None if rgb is None else np.asarray(rgb)
        m = self.log_offset(depth, shift)
        factor = 1.0 if m is None else math.exp(self.strength * m)
        out = depth * np.float32(factor) if factor != 1.0 else depth.copy()
        self.factors.append(factor)
        self._ref = out
        return out

    def reset(self) -> None:
        """Forget the reference (the next frame is used as predicted)."""
        self._ref, self._rgb = None, None
