"""Metres from a few known points: fit a predicted depth map to sparse known depths, then apply the fit.

The known points (a "target") come from
  - a 16-bit PNG in millimetres at the image's size, 0 = unknown (the format `predict --format png16` writes);
  - a CSV of `x,y,metres` rows (a header row is allowed; `#` comments and blank lines are skipped), x the
    column and y the row of the pixel in the input image as displayed (EXIF orientation applied), (0, 0)
    the top-left pixel; decimals are rounded to the nearest pixel;
  - a JSON list of `[x, y, metres]` or `{"x": .., "y": .., "metres": ..}` (the server's `align_points`);
  - in Python also an (N, 3) array of x, y, metres or an (H, W) map in metres with 0 (or NaN) = unknown.

Fits (`fit_alignment`), each in a stated space (`space`, an explicit parameter; the default per mode in
DEFAULT_SPACE):
  - `scale`: target = s * pred, least squares, in DEPTH (metres) by default. (In disparity the same model
    is target = pred / s with the residuals weighted differently; both give the exact s for exact data.)
  - `scale-shift`: target = s * pred + t, least squares, in DISPARITY (1 / metres) by default: the MiDaS
    zero-shot protocol (Ranftl et al. 2020), where an affine ambiguity of a relative model lives in inverse
    depth. `space="depth"` fits the shift in metres instead.
  - `robust=True`: the same model fitted by RANSAC (scikit-learn's RANSACRegressor, fixed random_state, so
    deterministic), a point an inlier when its relative residual |target - fit| / target in the fit's space
    is below `threshold` (default 0.1, i.e. about 10% of its depth); the final fit is least squares on the
    inliers. It needs MIN_POINTS + ROBUST_EXTRA_POINTS points.
Median scaling (median(gt) / median(pred)) is evaluation's (`evaluation.metrics.median_scale`).

Applying a fit (`Alignment.apply`) gives metres clamped to [min_depth, max_depth] (default ALIGN_RANGE_M);
where a shift makes the depth or disparity non-positive, the pixel takes the near or far bound.
Every problem raises `AlignError` (a ValueError) with one line naming the target and what was expected.
Pure numpy (scikit-learn only for `robust`); imports the root only.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ALIGN_MODES = ("scale", "scale-shift")
SPACES = ("depth", "disparity")  # metres, or 1 / metres (inverse depth)
DEFAULT_SPACE = {"scale": "depth", "scale-shift": "disparity"}
MIN_POINTS = {"scale": 1, "scale-shift": 2}  # what the least-squares fit needs
ROBUST_EXTRA_POINTS = 2  # RANSAC needs points beyond its minimal sample to tell outliers from inliers
ROBUST_THRESHOLD = 0.1  # relative residual below which a point is a RANSAC inlier
ALIGN_RANGE_M = (1e-3, 1000.0)  # aligned depth is clamped to this range (metres) unless told otherwise
MAX_TARGET_BYTES = 256 * 2**20  # a target file larger than this is refused before it is read
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class AlignError(ValueError):
    """A target that cannot be used, or a fit that cannot be made: one line naming the target."""


@dataclass(frozen=True)
class KnownPoints:
    """Known depths at pixels: x (column) and y (row), (N,) int64, metres (N,) float64, all > 0 and finite.
    size: (H, W) of a map target (a PNG or an (H, W) array), None for a list of points."""

    x: np.ndarray
    y: np.ndarray
    metres: np.ndarray
    source: str
    size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.metres)


# --- reading targets ------------------------------------------------------------------------------


def read_target(path: str | os.PathLike) -> KnownPoints:
    """A target file: a 16-bit PNG in millimetres (0 = unknown) or a CSV of x,y,metres (see the module doc)."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise AlignError(f"{name}: no such file (expected a 16-bit PNG in mm or a CSV of x,y,metres)")
    if not p.is_file():
        raise AlignError(f"{name}: not a regular file (expected a 16-bit PNG in mm or a CSV of x,y,metres)")
    if p.stat().st_size > MAX_TARGET_BYTES:
        raise AlignError(f"{name}: larger than {MAX_TARGET_BYTES:,} bytes, too large for a target")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise AlignError(f"{name}: cannot read ({e.strerror or e})") from None
    return parse_target(data, name)


def parse_target(data: bytes, name: str, size: tuple[int, int] | None = None) -> KnownPoints:
    """A target's bytes: a PNG (by its signature) or CSV text; `name` is used in messages. size: the image's
    (H, W), if known: a PNG of another size is refused from its header, before it is decoded."""
    if not data:
        raise AlignError(f"{name}: empty file (expected a 16-bit PNG in mm or a CSV of x,y,metres)")
    if data.startswith(PNG_MAGIC):
        return _parse_png(data, name, size)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AlignError(f"{name}: neither a PNG nor UTF-8 text (expected a 16-bit PNG in mm or a CSV of "
                         "x,y,metres)") from None
    return parse_csv(text, name)


def _parse_png(data: bytes, name: str, size: tuple[int, int] | None = None) -> KnownPoints:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if size is not None and (im.height, im.width) != tuple(size):
                raise AlignError(f"{name}: is {im.width}x{im.height} pixels, the image is {size[1]}x{size[0]}: a "
                                 "depth map target must have the image's size (as displayed)")
            mode = im.mode
            if mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise AlignError(f"{name}: a PNG of mode {mode}; expected a 16-bit greyscale PNG in millimetres "
                                 "(0 = unknown)")
            mm = np.asarray(im, dtype=np.int64)
    except AlignError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file: one line
        raise AlignError(f"{name}: cannot decode the PNG ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                         ) from None
    return map_points(mm.astype(np.float64) / 1000.0, name)


def map_points(depth_m: np.ndarray, name: str = "<map>") -> KnownPoints:
    """An (H, W) map in metres, 0 / NaN / negative = unknown -> its known pixels."""
    depth_m = np.asarray(depth_m, dtype=np.float64)
    if depth_m.ndim != 2:
        raise AlignError(f"{name}: expected an (H, W) depth map in metres, got shape {depth_m.shape}")
    known = np.isfinite(depth_m) & (depth_m > 0)
    y, x = np.nonzero(known)
    return KnownPoints(x.astype(np.int64), y.astype(np.int64), depth_m[known], name, depth_m.shape)


def parse_csv(text: str, name: str) -> KnownPoints:
    """CSV text of x,y,metres rows (header row allowed, `#` comments and blank lines skipped)."""
    rows: list[tuple[float, ...]] = []
    lines: list[int] = []
    first = True
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.replace(";", ",").split(",")]
        try:
            values = tuple(float(f) for f in fields)
        except ValueError:
            if first and not any(_is_number(f) for f in fields):  # a header row (x,y,metres): no numbers
                first = False
                continue
            raise AlignError(f"{name}: line {number}: expected three numbers x,y,metres, got '{line[:60]}'") from None
        first = False
        if len(values) != 3:
            raise AlignError(f"{name}: line {number}: expected three numbers x,y,metres, got {len(values)} fields")
        rows.append(values)
        lines.append(number)
    return _points(rows, lines, name, "line")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def points_from_json(text: str | bytes, name: str = "align_points") -> KnownPoints:
    """A JSON list of [x, y, metres] or {"x": .., "y": .., "metres": ..} (pixels of the input image)."""
    try:
        items = json.loads(text)
    except RecursionError:
        raise AlignError(f"{name}: JSON nested too deeply; expected a list of [x, y, metres]") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise AlignError(f"{name}: not JSON ({str(e).splitlines()[0]}); expected a list of [x, y, metres]") from None
    if not isinstance(items, list):
        raise AlignError(f"{name}: expected a JSON list of [x, y, metres], got {type(items).__name__}")
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = [item.get("x"), item.get("y"), item.get("metres", item.get("m"))]
        if (not isinstance(item, list) or len(item) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)):
            raise AlignError(f"{name}: item {i}: expected [x, y, metres] (three numbers), got {str(item)[:60]}")
        try:
            rows.append(tuple(float(v) for v in item))
        except OverflowError:
            raise AlignError(f"{name}: item {i}: a number too large for a pixel or a depth") from None
    return _points(rows, list(range(len(rows))), name, "item")


def array_points(a: Any, name: str = "<points>") -> KnownPoints:
    """An (N, 3) array of x, y, metres."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise AlignError(f"{name}: expected an (N, 3) array of x, y, metres, got shape {a.shape}")
    return _points([tuple(r) for r in a], list(range(len(a))), name, "row")


def _points(rows: list, where: list[int], name: str, unit: str) -> KnownPoints:
    """Rows of (x, y, metres) -> KnownPoints; x, y rounded to pixels; unknown (metres <= 0) rows dropped."""
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    bad = ~np.isfinite(a[:, :2]).all(axis=1)
    if bad.any():
        raise AlignError(f"{name}: {unit} {where[int(np.argmax(bad))]}: x and y must be finite pixel coordinates")
    keep = np.isfinite(a[:, 2]) & (a[:, 2] > 0)
    xy = np.rint(np.clip(a[keep, :2], -2**40, 2**40)).astype(np.int64)  # far outside stays outside
    return KnownPoints(xy[:, 0], xy[:, 1], a[keep, 2], name)


def as_points(target: Any, size: tuple[int, int], name: str | None = None) -> KnownPoints:
    """Any target (a path, KnownPoints, an (N, 3) array, an (H, W) map in metres) checked against the image's
    (H, W): a map must have the image's size and every point must lie inside it."""
    if isinstance(target, KnownPoints):
        points = target
    elif isinstance(target, (str, os.PathLike)):
        points = read_target(target)
    else:
        a = np.asarray(target)
        label = name or "align_to"
        points = array_points(a, label) if a.ndim == 2 and a.shape[1] == 3 else map_points(a, label)
    return check_inside(points, size)


def check_inside(points: KnownPoints, size: tuple[int, int]) -> KnownPoints:
    """AlignError unless a map target has the image's (H, W) and every point lies inside the image."""
    h, w = size
    if points.size is not None and tuple(points.size) != (h, w):
        ph, pw = points.size
        raise AlignError(f"{points.source}: is {pw}x{ph} pixels, the image is {w}x{h}: a depth map target must "
                         "have the image's size (as displayed)")
    outside = (points.x < 0) | (points.x >= w) | (points.y < 0) | (points.y >= h)
    if outside.any():
        i = int(np.argmax(outside))
        raise AlignError(f"{points.source}: point ({points.x[i]}, {points.y[i]}) is outside the {w}x{h} image "
                         f"(x 0..{w - 1}, y 0..{h - 1}; {int(outside.sum())} points outside)")
    return points


# --- fitting --------------------------------------------------------------------------------------


def check_mode(mode: str, space: str | None = None, what: str = "align") -> str:
    """The fit's space for `mode` (DEFAULT_SPACE unless `space` is given); AlignError for unknown names."""
    if mode not in ALIGN_MODES:
        raise AlignError(f"{what}: unknown mode '{mode}'; choose {' or '.join(ALIGN_MODES)}")
    space = DEFAULT_SPACE[mode] if space is None else space
    if space not in SPACES:
        raise AlignError(f"{what} space: unknown space '{space}'; choose depth (metres) or disparity (1 / metres)")
    return space


def needed_points(mode: str, robust: bool = False) -> int:
    """The fewest valid points a fit of `mode` needs (RANSAC: ROBUST_EXTRA_POINTS more)."""
    return MIN_POINTS[mode] + (ROBUST_EXTRA_POINTS if robust else 0)


def fit_scale(pred: np.ndarray, target: np.ndarray) -> float:
    """Least-squares s minimising sum (s * pred - target)^2 over (N,) values: sum(p t) / sum(p p)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    denom = float(np.dot(pred, pred))
    if denom == 0.0:
        raise AlignError("scale fit: every prediction at the known points is 0")
    return float(np.dot(pred, target)) / denom


def fit_scale_shift(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares (s, t) minimising sum (s * pred + t - target)^2 over (N,) values (the normal equations
    of MiDaS's `compute_scale_and_shift`, solved on centred values)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    _check_spread(pred)
    pm, tm = pred.mean(), target.mean()
    dp = pred - pm
    s = float(np.dot(dp, target - tm)) / float(np.dot(dp, dp))
    return s, float(tm - s * pm)


def _check_spread(pred: np.ndarray) -> None:
    if len(pred) == 0 or np.ptp(pred) <= 1e-9 * float(np.abs(pred).max()):
        raise AlignError("scale-shift fit: the prediction has the same value at every known point, so a shift "
                         "cannot be told from a scale; use the scale fit or points at other depths")


def fit_robust(pred: np.ndarray, target: np.ndarray, shift: bool, threshold: float = ROBUST_THRESHOLD,
               random_state: int = 0) -> tuple[float, float, np.ndarray]:
    """RANSAC (scikit-learn, deterministic for a fixed random_state) of target = s * pred (+ t if shift):
    inliers have |target - fit| / |target| < threshold; returns (s, t, inlier mask (N,) bool)."""
    try:
        from sklearn.linear_model import LinearRegression, RANSACRegressor
    except ImportError:
        raise AlignError("the robust fit needs scikit-learn: pip install 'transferdepth[3d]'") from None

    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if shift:
        _check_spread(pred)
    ransac = RANSACRegressor(LinearRegression(fit_intercept=shift), min_samples=2 if shift else 1,
                             residual_threshold=threshold, loss=_relative_residual, max_trials=1000,
                             random_state=random_state)
    try:
        ransac.fit(pred[:, None], target)
    except ValueError as e:
        raise AlignError(f"robust fit: no consensus within {threshold:g} relative residual "
                         f"({str(e).splitlines()[0]})") from None
    inliers = np.asarray(ransac.inlier_mask_, bool)
    if shift:
        s, t = fit_scale_shift(pred[inliers], target[inliers])
    else:
        s, t = fit_scale(pred[inliers], target[inliers]), 0.0
    return s, t, inliers


def _relative_residual(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return np.abs(y_true - y_pred) / np.maximum(np.abs(y_true), 1e-12)


@dataclass(frozen=True)
class Alignment:
    """A fit: in `space` (depth: metres; disparity: 1 / metres), aligned = scale * pred + shift.
    n_points: valid points used; n_inliers: RANSAC's inliers (= n_points without robust)."""

    mode: str
    space: str
    scale: float
    shift: float
    n_points: int
    n_inliers: int
    robust: bool = False

    def apply(self, depth_m: np.ndarray, min_depth: float = ALIGN_RANGE_M[0],
              max_depth: float = ALIGN_RANGE_M[1]) -> np.ndarray:
        """HxW (or any shape) metres -> aligned float32 metres clamped to [min_depth, max_depth]."""
        d = np.asarray(depth_m, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.space == "depth":
                out = self.scale * d + self.shift
                out = np.where(out > 0, out, min_depth)  # a shift past zero: the near bound
            else:
                disp = self.scale / d + self.shift
                out = np.where(disp > 0, 1.0 / disp, max_depth)  # disparity past zero: the far bound
        out = np.where(np.isfinite(d), out, np.nan)
        return np.clip(out, min_depth, max_depth).astype(np.float32)

    def describe(self) -> str:
        """One line: the fit, its space and units, points used."""
        unit = "m" if self.space == "depth" else "1/m"
        shift = f", shift {self.shift:+.6g} {unit}" if self.mode == "scale-shift" else ""
        robust = f" (RANSAC: {self.n_inliers} inliers)" if self.robust else ""
        return f"{self.mode} in {self.space}: scale {self.scale:.6g}{shift}, {self.n_points} points{robust}"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "space": self.space, "scale": self.scale, "shift": self.shift,
                "shift_units": "metres" if self.space == "depth" else "1/metres", "n_points": self.n_points,
                "n_inliers": self.n_inliers, "robust": self.robust}


def fit_alignment(pred_m: np.ndarray, target_m: np.ndarray, mode: str = "scale", *, space: str | None = None,
                  robust: bool = False, threshold: float = ROBUST_THRESHOLD, name: str = "align_to") -> Alignment:
    """Fit (N,) predicted metres to (N,) known metres (pairs where either is not finite and > 0 are dropped)
    with `mode` in `space` (default DEFAULT_SPACE[mode]); AlignError (naming `name`) with too few points."""
    space = check_mode(mode, space)
    pred = np.asarray(pred_m, np.float64).ravel()
    target = np.asarray(target_m, np.float64).ravel()
    ok = np.isfinite(pred) & (pred > 0) & np.isfinite(target) & (target > 0)
    pred, target = pred[ok], target[ok]
    need = needed_points(mode, robust)
    if len(pred) < need:
        fit = f"the {'robust ' if robust else ''}{mode} fit"
        raise AlignError(f"{name}: {len(pred)} valid point{'' if len(pred) == 1 else 's'} (known metres > 0), "
                         f"{fit} needs at least {need}")
    if space == "disparity":
        pred, target = 1.0 / pred, 1.0 / target
    try:
        if robust:
            s, t, inliers = fit_robust(pred, target, mode == "scale-shift", threshold)
            n_in = int(inliers.sum())
        else:
            s, t = fit_scale_shift(pred, target) if mode == "scale-shift" else (fit_scale(pred, target), 0.0)
            n_in = len(pred)
    except AlignError as e:
        raise AlignError(f"{name}: {e}") from None
    if not (math.isfinite(s) and math.isfinite(t)):
        raise AlignError(f"{name}: the {mode} fit is not finite (scale {s}, shift {t})")
    return Alignment(mode, space, s, t, len(pred), n_in, robust)


def prepare_target(target: Any, size: tuple[int, int], mode: str = "scale", *, robust: bool = False,
                   space: str | None = None) -> KnownPoints:
    """Check a target before any prediction: the mode and space, the points inside the (H, W) image, and at
    least as many known points as the fit needs. Returns its KnownPoints; AlignError (one line) otherwise."""
    check_mode(mode, space)
    return check_count(as_points(target, size), mode, robust)


def check_count(points: KnownPoints, mode: str, robust: bool = False) -> KnownPoints:
    """AlignError (one line) when `points` holds fewer known points than the fit of `mode` needs."""
    need, n = needed_points(mode, robust), len(points)
    if n < need:
        raise AlignError(f"{points.source}: {n} valid point{'' if n == 1 else 's'} (known metres > 0), the "
                         f"{'robust ' if robust else ''}{mode} fit needs at least {need}")
    return points


def align_depth(depth_m: np.ndarray, target: Any, mode: str = "scale", *, robust: bool = False,
                space: str | None = None, threshold: float = ROBUST_THRESHOLD,
                clamp_m: tuple[float, float] = ALIGN_RANGE_M) -> tuple[np.ndarray, Alignment]:
    """A predicted HxW metres map at the input image's size, aligned to `target` (any `as_points` target):
    (aligned HxW float32 metres, the fit). AlignError (one line) for a bad target, too few points, or a fit
    whose scale is not positive (the known points contradict the prediction's ordering)."""
    points = prepare_target(target, depth_m.shape[:2], mode, robust=robust, space=space)
    fit = fit_alignment(depth_m[points.y, points.x], points.metres, mode, space=space, robust=robust,
                        threshold=threshold, name=points.source)
    if fit.scale <= 0:
        raise AlignError(f"{points.source}: the {mode} fit has scale {fit.scale:.3g} <= 0: the known depths "
                         "order the points opposite to the prediction")
    return fit.apply(depth_m, *clamp_m), fit
