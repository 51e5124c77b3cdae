"""Image files in and depth files out: the one home of reading images and writing depth maps.

Reading: any image file, PIL image or array -> uint8 HxWx3 RGB. Files get EXIF orientation applied;
greyscale / alpha / palette are converted; 16-bit and 32-bit single-channel images are scaled by their own
maximum to 8 bit. Every problem raises `ImageError` (a ValueError) naming the input and the reason.

Writing (atomic, `utils.atomic_write`): depth in metres -> 16-bit PNG in millimetres (`write_png16`),
float32 .npy in metres (`write_npy`), a colour PNG (`colorize`, `write_color`), a PLY point cloud
(`write_ply`). No torch here.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferdepth.utils import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                    ".pgm", ".ppm", ".pnm", ".pbm", ".heic", ".heif")  # what a folder of images holds
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP; larger images are refused (decompression bombs, memory)

ImageInput = str | os.PathLike | Image.Image | np.ndarray


class ImageError(ValueError):
    """An input image that cannot be used; `str()` is `"<file>: <reason>"`."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB, EXIF orientation applied; bad files raise ImageError."""
    name = str(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except OSError as e:
        raise ImageError(name, f"cannot read ({e.strerror or e})") from None
    if os.path.isdir(path):
        raise ImageError(name, "is a folder, not an image file")
    if size == 0:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # our own max_pixels is the policy; PIL's warning is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_pixels(name, im.size, max_pixels)  # from the header, before decoding
                im.load()  # decode now: truncation only shows up here
                im = ImageOps.exif_transpose(im)
                return pil_to_rgb(im, name)
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large for PIL's decompression-bomb limit "
                               f"({2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels): {e}") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (unknown format or not an image file)") from None
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(name, f"cannot decode image (truncated or corrupt?): {e}") from None


def pil_to_rgb(im: Image.Image, name: str = "<image>") -> np.ndarray:
    """A PIL image of any mode -> uint8 HxWx3 RGB (16-bit / 32-bit / float: scaled by the image's max)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb(np.asarray(im), name)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")  # L, LA, P, PA, RGBA, CMYK, YCbCr, 1, ...: PIL's conversions
        except ValueError as e:
            raise ImageError(name, f"cannot convert PIL mode {im.mode} to RGB: {e}") from None
    return np.asarray(im, dtype=np.uint8)


def array_to_rgb(a: np.ndarray, name: str = "<array>") -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 (alpha dropped) array -> uint8 HxWx3 RGB.

    uint8 is used as is; other integer and float arrays are scaled by their maximum to 0..255.
    """
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., :3] if a.shape[2] != 1 else a[..., 0]
    elif a.ndim != 2:
        raise ImageError(name, f"expected an HxWx3 RGB (or HxW, HxWx4) array, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ImageError(name, f"expected a uint8 (or uint16) image array, got dtype {a.dtype}")
        f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
        top = f.max() if f.size else 0.0
        a = np.zeros(f.shape, np.uint8) if top <= 0 else np.rint(f * (255.0 / top)).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(name, f"empty image (shape {a.shape})")
    return np.ascontiguousarray(a)


def check_pixels(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise ImageError if a (W, H) image has more than max_pixels pixels (None: no limit)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(name, f"image is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
                               "(raise max_pixels / --max-pixels to allow it)")



# --- writing depth ------------------------------------------------------------------------------


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres, round(d * 1000) clipped to [1, 65535]; 0 only where depth is not finite."""
    d = np.asarray(depth_m, dtype=np.float64)
    finite = np.isfinite(d)
    mm = np.clip(np.rint(np.where(finite, d, 0.0) * 1000.0), 1, 65535).astype(np.uint16)
    mm[~finite] = 0
    return mm


def write_png16(path: Path, depth_m: np.ndarray) -> None:
    """16-bit greyscale PNG of depth in millimetres (see `depth_to_mm`)."""
    with atomic_write(path) as tmp:
        Image.fromarray(depth_to_mm(depth_m)).save(tmp, format="PNG")


def write_npy(path: Path, depth_m: np.ndarray) -> None:
    """float32 HxW metres as .npy."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would append .npy
        np.save(f, np.asarray(depth_m, dtype=np.float32))


def colorize(depth_m: np.ndarray, cmap: str = "plasma",
             range_m: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Depth (metres) -> uint8 HxWx3 through a matplotlib colormap; returns the image and the range used."""
    import matplotlib

    d = np.asarray(depth_m, dtype=np.float64)
    if range_m is None:
        finite = d[np.isfinite(d)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        lo, hi = range_m
    t = np.clip((np.nan_to_num(d, nan=lo) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)
    return lut[np.rint(t * 255).astype(np.int64)], (lo, hi)


def write_color(path: Path, depth_m: np.ndarray, cmap: str = "plasma",
                range_m: tuple[float, float] | None = None, colorbar: bool = False) -> None:
    """Colourised depth PNG, HxW pixels; with `colorbar`, a figure with a labelled bar (metres) beside it."""
    rgb, (lo, hi) = colorize(depth_m, cmap, range_m)
    with atomic_write(path) as tmp:
        if not colorbar:
            Image.fromarray(rgb).save(tmp, format="PNG")
            return
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure

        h, w = rgb.shape[:2]
        dpi, margin = 100, 110  # the image keeps its pixels; the bar and its labels go in a right margin
        total_w = w + margin
        fig = Figure(figsize=(total_w / dpi, h / dpi), dpi=dpi)
        ax = fig.add_axes((0.0, 0.0, w / total_w, 1.0))
        ax.imshow(rgb, aspect="auto", interpolation="nearest")
        ax.set_axis_off()
        cax = fig.add_axes(((w + 8) / total_w, 0.05, 14 / total_w, 0.9))
        bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap), cax=cax)
        bar.set_label("depth (m)")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        tmp.write_bytes(buf.getvalue())


def write_ply(path: Path, xyz: np.ndarray, colors: np.ndarray, ascii: bool = False, comment: str = "") -> None:
    """PLY point cloud: float x, y, z (metres) + uchar red, green, blue; binary little-endian or ASCII."""
    fmt = "ascii" if ascii else "binary_little_endian"
    header = ["ply", f"format {fmt} 1.0"] + [f"comment {c}" for c in comment.splitlines() if c]
    header += [f"element vertex {len(xyz)}", "property float x", "property float y", "property float z",
               "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if ascii:
            for (x, y, z), (r, g, b) in zip(xyz.tolist(), colors.tolist()):
                f.write(f"{x:.6g} {y:.6g} {z:.6g} {r} {g} {b}\n".encode("ascii"))
        else:
            rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("r", "u1"), ("g", "u1"), ("b", "u1")])
            rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
            rec["r"], rec["g"], rec["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
            f.write(rec.tobytes())
