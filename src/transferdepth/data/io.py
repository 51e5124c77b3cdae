"""Shared decoding helpers for the readers: images to arrays, raw depth to metres, errors wrapped.

Every function takes the reader's `source`, the sample `index` and the file `path` only to name them in a
`DatasetError`; decoding problems (truncated file, wrong bit depth, wrong mode) never escape as bare
PIL/OSError tracebacks.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferdepth.data.base import DatasetError

_16BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}

ImageSource = str | Path | bytes


def open_image(data: ImageSource, source: str, index: int | None, path: str) -> Image.Image:
    """Open and fully decode an image from a path or bytes; any failure of the decoder -> DatasetError.

    Any exception from PIL counts (OSError, SyntaxError, DecompressionBombError, struct.error, ...): a
    decoder given hostile bytes can raise almost anything, and each is a bad sample, not a bug of ours.
    """
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        im.load()  # decode now: truncation only shows up here
        return im
    except FileNotFoundError as e:
        raise DatasetError(source, "file not found", index, path) from e
    except UnidentifiedImageError as e:
        raise DatasetError(source, "not a readable image (unknown format, empty or cut short)", index, path) from e
    except Image.DecompressionBombError as e:
        raise DatasetError(source, f"image too large to decode (PIL's decompression-bomb limit): {e}",
                           index, path) from e
    except MemoryError as e:
        raise DatasetError(source, "image too large to decode (out of memory)", index, path) from e
    except Exception as e:  # noqa: BLE001 - see docstring
        raise DatasetError(source, f"cannot decode image (truncated or corrupt?): {type(e).__name__}: {e}",
                           index, path) from e


def _pixels(im: Image.Image, source: str, index: int | None, path: str, mode: str | None = None) -> np.ndarray:
    """The decoded image's pixels (converted to `mode` first if given); any failure -> DatasetError."""
    try:
        return np.asarray(im.convert(mode) if mode and im.mode != mode else im)
    except Exception as e:  # noqa: BLE001 - a lazy plugin can still fail here
        raise DatasetError(source, f"cannot decode image pixels: {type(e).__name__}: {e}", index, path) from e


def decode_rgb(data: ImageSource, source: str, index: int | None, path: str) -> np.ndarray:
    """Decode a colour image to uint8 HxWx3 RGB (greyscale/palette/alpha are converted)."""
    im = open_image(data, source, index, path)
    if im.mode not in ("RGB", "RGBA", "L", "P", "LA", "CMYK", "YCbCr"):
        raise DatasetError(source, f"expected an 8-bit colour image, got PIL mode {im.mode}", index, path)
    return _pixels(im, source, index, path, "RGB").astype(np.uint8, copy=False)


def image_bits(im: Image.Image) -> int | None:
    """8 or 16 for a single-channel integer image, None for anything else (colour, float, 1-bit)."""
    if im.mode == "L":
        return 8
    if im.mode in _16BIT_MODES or im.mode == "I":  # Pillow opens 16-bit PGM (and some PNGs) as "I"
        return 16
    return None


def decode_depth_raw(
    data: ImageSource, source: str, index: int | None, path: str, bits: int | None = 16
) -> np.ndarray:
    """Decode a single-channel depth image to its raw integer values (HxW, uint8 or uint16).

    `bits` is the bit depth the format promises (8 or 16); None accepts either.
    """
    im = open_image(data, source, index, path)
    got = image_bits(im)
    if got is None:
        raise DatasetError(
            source, f"expected a single-channel {bits or '8- or 16'}-bit depth image, got PIL mode {im.mode}",
            index, path)
    if bits is not None and got != bits:
        raise DatasetError(
            source, f"expected {bits}-bit depth, got {got}-bit (PIL mode {im.mode})", index, path)
    raw = _pixels(im, source, index, path)
    if got == 16:
        if raw.dtype != np.uint16:
            if raw.size and (raw.min() < 0 or raw.max() > 65535):
                raise DatasetError(source, f"16-bit depth values out of range [{raw.min()}, {raw.max()}]",
                                   index, path)
            raw = raw.astype(np.uint16)
    return raw


def raw_to_metres(
    raw: np.ndarray, scale: float, invalid: Iterable[float] = (0,), max_depth: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw depth values -> (depth float32 metres, valid bool), both HxW.

    metres = raw * scale. A pixel is valid when its raw value is not in `invalid`, metres > 0 and, if given,
    metres <= max_depth. Invalid pixels get depth 0.0.
    """
    depth = (raw.astype(np.float64) * scale).astype(np.float32)  # float64 product: 255 * 10/255 -> 10.0
    valid = np.isfinite(depth) & (depth > 0)
    for v in invalid:
        valid &= raw != v
    if max_depth is not None:
        valid &= depth <= max_depth
    depth[~valid] = 0.0
    return depth, valid


def metres_valid(depth: np.ndarray, max_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float depth in metres -> (float32 copy with invalid pixels set to 0, valid = finite, > 0, <= max)."""
    depth = np.array(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if max_depth is not None:
        valid &= depth <= max_depth
    depth[~valid] = 0.0
    return depth, valid


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 float64 pinhole camera matrix in pixels."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def check_same_size(
    rgb: np.ndarray, depth: np.ndarray, source: str, index: int | None, rgb_path: str, depth_path: str
) -> None:
    """Raise a DatasetError naming both files when RGB and depth sizes differ."""
    if rgb.shape[:2] != depth.shape[:2]:
        raise DatasetError(
            source, f"RGB is {rgb.shape[1]}x{rgb.shape[0]} but depth {depth_path} is "
            f"{depth.shape[1]}x{depth.shape[0]} (WxH); expected the same size", index, rgb_path)


def find_under(root: Path, subfolders: Iterable[str], rel: str) -> Path:
    """The first existing `root/sub/rel` over `subfolders` (list files name paths relative to one of them);
    if none exists, `root/rel`, so the decoder's error names that path."""
    rel = rel.lstrip("/")
    for sub in subfolders:
        p = root / sub / rel
        if p.exists():
            return p
    return root / rel
