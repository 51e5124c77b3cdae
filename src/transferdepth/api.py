"""`DepthEstimator`: a trained network behind one call, image in, depth in metres out.

    est = DepthEstimator.from_pretrained("runs/nyu/best")     # a checkpoint directory
    depth = est.predict("room.jpg")                            # HxW float32 metres, the image's own size

Images are read as 8-bit RGB: EXIF orientation applied (files), greyscale / alpha / palette converted,
16-bit and 32-bit single-channel images scaled by their own maximum to 8 bit. Every problem with an input
raises `ImageError` (a ValueError) naming the file and the reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from transferdepth.checkpoint import load_checkpoint, save_checkpoint
from transferdepth.inference import infer, rgb_to_tensor
from transferdepth.models import DepthNet

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
                _check_pixels(name, im.size, max_pixels)  # from the header, before decoding
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


def _check_pixels(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(name, f"image is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
                               "(raise max_pixels / --max-pixels to allow it)")


class DepthEstimator:
    """A depth network for inference: images -> HxW float32 depth in metres at each image's own size.

    model: a DepthNet (from `build_model` or `load_checkpoint`). device: "cpu", "cuda", ... (default: CUDA
    if available). flip: average with the mirrored image's prediction (as DenseDepth; 2x the compute).
    max_pixels: larger images are refused with ImageError. Depth is clamped to [min_depth, max_depth] m
    (default: the model's own range).
    input_size: (H, W) the network sees (images are resized to it and the depth map resized back to the
    image's size), e.g. the resolution a model was trained at; None = each image at its own size.
    """

    def __init__(self, model: DepthNet, device: str | torch.device | None = None, flip: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, min_depth: float | None = None,
                 max_depth: float | None = None, input_size: tuple[int, int] | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.flip, self.max_pixels = flip, max_pixels
        self.min_depth = model.min_depth if min_depth is None else float(min_depth)
        self.max_depth = model.max_depth if max_depth is None else float(max_depth)
        self.input_size = tuple(input_size) if input_size is not None else None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        **kwargs: Any) -> DepthEstimator:
        """Load a checkpoint directory (or its model.safetensors); raises CheckpointError if unusable."""
        return cls(load_checkpoint(path), device=device, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write `model.safetensors` + `config.json` into `directory`; `from_pretrained` reads it back."""
        return save_checkpoint(self.model, directory, meta)

    def to_rgb(self, image: ImageInput) -> np.ndarray:
        """Any accepted input (path, PIL image, array) -> uint8 HxWx3 RGB, within max_pixels."""
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, self.max_pixels)
        if isinstance(image, Image.Image):
            _check_pixels("<PIL image>", image.size, self.max_pixels)
            return pil_to_rgb(image, "<PIL image>")
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:
                _check_pixels("<array>", (image.shape[1], image.shape[0]), self.max_pixels)
            return array_to_rgb(image)
        raise TypeError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")

    def predict(self, image: ImageInput) -> np.ndarray:
        """One image -> HxW float32 depth in metres at the image's own size."""
        return self.predict_rgb([self.to_rgb(image)])[0]

    def predict_batch(self, images: Sequence[ImageInput], batch_size: int = 8) -> list[np.ndarray]:
        """Several images -> one HxW float32 metres map each, in order; same-size images share a batch."""
        rgbs = [self.to_rgb(im) for im in images]
        out: list[np.ndarray | None] = [None] * len(rgbs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(rgbs):
            by_size.setdefault(rgb.shape[:2], []).append(i)
        for idx in by_size.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                for i, depth in zip(chunk, self.predict_rgb([rgbs[i] for i in chunk])):
                    out[i] = depth
        return out  # type: ignore[return-value]

    def predict_rgb(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Same-size uint8 HxWx3 RGB arrays as one batch -> HxW float32 metres each."""
        x = rgb_to_tensor(rgbs, self.device)
        depth = infer(self.model, x, flip=self.flip, input_size=self.input_size,
                      min_depth=self.min_depth, max_depth=self.max_depth)
        return list(depth[:, 0].float().cpu().numpy())
