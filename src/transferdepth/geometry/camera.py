"""Camera intrinsics for back-projection and stereo: square pixels, from EXIF, a field of view, or given.

`--intrinsics` / `IntrinsicsSpec` modes (all in pixels at the size of the depth map, which is the input
image's size after its EXIF orientation; pixel centres at integer coordinates):

- ``auto`` (default): the photo's EXIF focal length when it has one (``exif``), else the default lens
  (``DEFAULT_FOCAL_35MM`` = 26 mm 35 mm-equivalent, a phone's main camera: 79.5 deg diagonal field of view).
- ``exif``: EXIF only; a file without a usable focal length fails (one line naming it).
- ``fov:DEG``: horizontal field of view across the image width, DEG degrees.
- ``fx,fy,cx,cy``: explicit values (the only mode that may give non-square pixels or an off-centre point);
  fx and fy 1 to 1,000,000 pixels, |cx| and |cy| at most 1,000,000, so back-projected points stay finite.
- ``nyu``: NYU Depth V2's Kinect (`recipe.nyu_intrinsics`, scaled per axis; exact at 640x480).

Every mode but explicit and nyu gives square pixels (fx == fy) and the principal point at the centre,
``cx = (W - 1) / 2, cy = (H - 1) / 2``. A 35 mm-equivalent focal length means the same diagonal angle of
view as on a 36 x 24 mm frame (diagonal 43.27 mm; CIPA DCG-001), so ``f_px = f35 * diag_px / 43.27``:
the same for portrait and landscape orientations of a photo.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from transferdepth.recipe import nyu_intrinsics

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm, the 35 mm film frame
DEFAULT_FOCAL_35MM = 26.0  # mm, 35 mm equivalent: the main camera of most phones since about 2019
MODES = ("auto", "exif", "fov", "explicit", "nyu")
# explicit intrinsics, pixels: with a focal of at least 1 px and the centre within 1e6 px, a point
# (u - cx) * z / fx stays finite in float32 for any image and depth range (no +-inf in a PLY)
FOCAL_RANGE_PX = (1.0, 1e6)
MAX_CENTRE_PX = 1e6

# EXIF tags (Exif sub-IFD 0x8769)
_EXIF_IFD = 0x8769
_FOCAL_LENGTH, _FOCAL_35MM = 0x920A, 0xA405
_FOCAL_PLANE_XRES, _FOCAL_PLANE_YRES, _FOCAL_PLANE_UNIT = 0xA20E, 0xA20F, 0xA210
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # inch, cm, mm, micrometre


class IntrinsicsError(ValueError):
    """Intrinsics that cannot be found or parsed; `str()` names the file or option."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera in pixels for an image of `width` x `height`; `source` says where it came from."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.fx, self.fy, self.cx, self.cy)

    def matrix(self) -> np.ndarray:
        """3x3 float64 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_dict(self) -> dict[str, object]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width,
                "height": self.height, "source": self.source}

    def comment(self) -> str:
        """Header line for PLY files: values and source."""
        return "intrinsics fx fy cx cy {:.4f} {:.4f} {:.4f} {:.4f} ({} at {}x{})".format(
            *self.as_tuple(), self.source, self.width, self.height)


@dataclass(frozen=True)
class IntrinsicsSpec:
    """What `--intrinsics` asked for: mode in MODES, `fov_deg` for fov, `values` (fx, fy, cx, cy) for explicit."""

    mode: str = "auto"
    fov_deg: float | None = None
    values: tuple[float, float, float, float] | None = None


def parse_spec(text: str | None) -> IntrinsicsSpec:
    """'auto' | 'exif' | 'nyu' | 'fov:DEG' | 'fx,fy,cx,cy' -> IntrinsicsSpec; bad text raises IntrinsicsError."""
    if text is None:
        return IntrinsicsSpec()
    t = text.strip().lower()
    if t in ("auto", "exif", "nyu"):
        return IntrinsicsSpec(t)
    if t.startswith("fov:"):
        try:
            deg = float(t[4:])
        except ValueError:
            deg = float("nan")
        if not 0 < deg < 180:
            raise IntrinsicsError(f"--intrinsics fov:DEG needs 0 < DEG < 180 degrees, got '{text}'")
        return IntrinsicsSpec("fov", fov_deg=deg)
    try:
        values = tuple(float(v) for v in t.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise IntrinsicsError(f"--intrinsics expects 4 comma-separated numbers, got '{text}' "
                              "(FX,FY,CX,CY in pixels, or auto, exif, nyu, fov:DEG)")
    return IntrinsicsSpec("explicit", values=check_values(values, text))  # type: ignore[arg-type]


def check_values(values: tuple[float, ...], text: str | None = None) -> tuple[float, float, float, float]:
    """Explicit (fx, fy, cx, cy) in pixels, bounded so back-projected points are always finite: fx, fy in
    FOCAL_RANGE_PX, |cx|, |cy| <= MAX_CENTRE_PX; IntrinsicsError naming `--intrinsics` otherwise."""
    if len(values) != 4:
        raise IntrinsicsError(f"--intrinsics expects 4 numbers (fx, fy, cx, cy in pixels), got {values}")
    fx, fy, cx, cy = (float(v) for v in values)
    lo, hi = FOCAL_RANGE_PX
    shown = text if text is not None else ",".join(f"{v:g}" for v in values)
    if not all(lo <= f <= hi for f in (fx, fy)):  # NaN fails every comparison
        raise IntrinsicsError(f"--intrinsics: fx and fy must be {lo:g} to {hi:,.0f} pixels, got {shown}")
    if not all(abs(c) <= MAX_CENTRE_PX for c in (cx, cy)):
        raise IntrinsicsError(f"--intrinsics: cx and cy must be within +-{MAX_CENTRE_PX:,.0f} pixels, got {shown}")
    return fx, fy, cx, cy


def centre(width: int, height: int) -> tuple[float, float]:
    """Principal point at the image centre, pixel centres at integers: ((W - 1) / 2, (H - 1) / 2)."""
    return (width - 1) / 2.0, (height - 1) / 2.0


def from_focal_35mm(width: int, height: int, focal_35mm: float, source: str) -> Intrinsics:
    """Square pixels from a 35 mm-equivalent focal length (equal diagonal angle of view)."""
    f = focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
    return Intrinsics(f, f, *centre(width, height), width, height, source)


def from_fov(width: int, height: int, hfov_deg: float, source: str | None = None) -> Intrinsics:
    """Square pixels from the horizontal field of view across the image width: f = (W / 2) / tan(fov / 2)."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return Intrinsics(f, f, *centre(width, height), width, height, source or f"fov {hfov_deg:g} deg")


def default_intrinsics(width: int, height: int) -> Intrinsics:
    """The stated default lens: DEFAULT_FOCAL_35MM (26 mm equivalent, 79.5 deg diagonal field of view)."""
    return from_focal_35mm(width, height, DEFAULT_FOCAL_35MM,
                           f"default {DEFAULT_FOCAL_35MM:g} mm (35 mm equivalent), no EXIF focal length")


def nyu(width: int, height: int) -> Intrinsics:
    """NYU Depth V2's Kinect colour camera scaled to width x height (recipe.nyu_intrinsics)."""
    k = nyu_intrinsics(height, width)
    return Intrinsics(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), width, height,
                      "nyu (Kinect, scaled per axis)")


def _number(value: object) -> float | None:
    try:
        v = float(value)  # PIL's IFDRational, int, or a (num, den) tuple below
    except (TypeError, ValueError, ZeroDivisionError):
        if isinstance(value, tuple) and len(value) == 2 and value[1]:
            v = value[0] / value[1]
        else:
            return None
    return v if math.isfinite(v) and v > 0 else None


def exif_focal(path: str | os.PathLike | BinaryIO) -> dict[str, float]:
    """EXIF focal tags of an image file (headers only): focal_35mm, focal_mm, plane_px_per_mm, pixel_x,
    pixel_y (each only when present and positive); {} when the file has none or cannot be read."""
    from PIL import Image

    enable_heif()
    try:
        with Image.open(path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - unreadable metadata is "no EXIF"; the image reader reports bad files
        return {}
    tags = {**{k: v for k, v in exif.items()}, **sub}
    out: dict[str, float] = {}
    for key, tag in (("focal_35mm", _FOCAL_35MM), ("focal_mm", _FOCAL_LENGTH), ("pixel_x", _PIXEL_X),
                     ("pixel_y", _PIXEL_Y)):
        v = _number(tags.get(tag))
        if v is not None:
            out[key] = v
    xres, unit = _number(tags.get(_FOCAL_PLANE_XRES)), tags.get(_FOCAL_PLANE_UNIT, 2)
    if xres is not None and unit in _UNIT_MM:
        out["plane_px_per_mm"] = xres / _UNIT_MM[unit]
    return out


def from_exif(tags: dict[str, float], width: int, height: int) -> Intrinsics | None:
    """Intrinsics from `exif_focal` tags for an image now width x height, or None without a usable focal:
    the 35 mm-equivalent focal first, else focal length x focal-plane resolution (pixels per mm on the
    sensor), scaled by the image's long side over EXIF's PixelX/YDimension long side when present."""
    if "focal_35mm" in tags:
        return from_focal_35mm(width, height, tags["focal_35mm"],
                               f"exif: {tags['focal_35mm']:g} mm (35 mm equivalent)")
    if "focal_mm" in tags and "plane_px_per_mm" in tags:
        scale = 1.0
        if "pixel_x" in tags and "pixel_y" in tags:
            scale = max(width, height) / max(tags["pixel_x"], tags["pixel_y"])
        f = tags["focal_mm"] * tags["plane_px_per_mm"] * scale
        return Intrinsics(f, f, *centre(width, height), width, height,
                          f"exif: {tags['focal_mm']:g} mm focal length x focal-plane resolution")
    return None


def resolve(spec: Intrinsics | IntrinsicsSpec | tuple[float, ...] | str | None, width: int, height: int,
            path: str | os.PathLike | BinaryIO | None = None) -> Intrinsics:
    """The intrinsics for an image (or video frame) of width x height pixels; `path` is read for EXIF.

    spec: an IntrinsicsSpec, its text (see `parse_spec`), explicit (fx, fy, cx, cy), or None (= auto); an
    Intrinsics already resolved for this size is returned as it is. `path`: a file or a binary file object.
    Raises IntrinsicsError (the reason, without the file name) for mode ``exif`` without an EXIF focal length.
    """
    if isinstance(spec, Intrinsics):
        if (spec.width, spec.height) != (width, height):
            raise IntrinsicsError(f"intrinsics were resolved for {spec.width}x{spec.height}, not {width}x{height}")
        return spec
    if spec is None or isinstance(spec, str):
        spec = parse_spec(spec)
    elif not isinstance(spec, IntrinsicsSpec):
        spec = IntrinsicsSpec("explicit", values=check_values(tuple(spec)))
    if spec.mode == "explicit":
        assert spec.values is not None
        return Intrinsics(*spec.values, width, height, "explicit (--intrinsics)")
    if spec.mode == "nyu":
        return nyu(width, height)
    if spec.mode == "fov":
        assert spec.fov_deg is not None
        return from_fov(width, height, spec.fov_deg)
    found = from_exif(exif_focal(path), width, height) if path is not None else None
    if found is not None:
        return found
    if spec.mode == "exif":
        raise IntrinsicsError("no EXIF focal length (35 mm equivalent, or focal length with "
                              "focal-plane resolution); use --intrinsics auto or fov:DEG")
    return default_intrinsics(width, height)


_HEIF: bool | None = None


def enable_heif() -> bool:
    """Let PIL open HEIC/HEIF photos when the optional `pillow-heif` is installed (extra `heif`)."""
    global _HEIF
    if _HEIF is None:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            _HEIF = False
        else:
            register_heif_opener()
            _HEIF = True
    return _HEIF
