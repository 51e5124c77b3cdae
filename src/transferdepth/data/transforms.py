"""Sample (numpy, metres) -> network tensors: resize/crop, flip, channel swap, normalisation, half-res target.

Both transforms return a dict
    image       float32 tensor (3, H, W): RGB / 255, then (x - mean) / std with the encoder's mean and std
                (TrainTransform(normalize=False): uint8 RGB (3, H, W); `normalize_images` finishes it)
    depth       float32 tensor (1, H/2, W/2), metres; 0 where not valid
    valid       bool tensor (1, H/2, W/2)
    intrinsics  float64 tensor (3, 3) for the (resized, cropped, flipped) image, all NaN if unknown
    name        str
The image keeps its resolution; the depth target is halved (the DenseDepth decoder predicts at H/2 x W/2).

Depth is always resized mask-aware, so holes never bleed into valid pixels:
  * halving an even-sized map: mean of the valid pixels of each 2x2 block, valid if any of the 4 is valid;
  * any other size: masked bilinear (antialiased when shrinking), resize(depth * valid) / resize(valid),
    valid where the resized valid weight exceeds 0.5.
TrainTransform's `target_resize` picks how the half-resolution target is made: "mask_mean" (the 2x2 rule
above, in metres) or "inverse_antialias" (DenseDepth: DepthNorm, then skimage-style anti-aliased resize,
see `inverse_antialias_half`).
Randomness comes only from the `rng` argument, so augmentation is reproducible; `TransformedDataset`
derives it from (seed, epoch, index) so the same index in the same epoch always gets the same augmentation,
whatever the number of workers or processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from transferdepth.data.base import DatasetError, check_sample
from transferdepth.recipe import (  # DENSEDEPTH_SWAP_P: derivation below; one home: recipe.py
    DENSEDEPTH_SWAP_P,
    MAX_DEPTH_M,
    MIN_DEPTH_M,
    check_depth_range,
    depth_to_depthnorm,
    depthnorm_to_depth,
)

TARGET_RESIZES = ("mask_mean", "inverse_antialias")

# The five permutations of (R, G, B) that change the image; the identity is excluded on purpose.
SWAPS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))

# DenseDepth's effective channel-swap rate, i.e. the fraction of training images whose channels change.
# Keras code (augment.py, BasicPolicy(color_change_ratio=0.50), the code behind the paper's results):
#     indices = list(permutations(range(3), 3)); indices.insert(0, [0, 1, 2])   # 7 entries, 2 identities
#     policy_idx = random.randint(0, len(indices) - 1)                          # uniform over the 7
#     if random.uniform(0, 1) >= color_change_ratio: policy_idx = 0             # keep with prob 0.5
# so P(changed) = 0.5 * 5/7 = 5/14 ~= 0.357. (The PyTorch port, RandomChannelSwap(0.5) over the 6
# permutations including the identity, gives 0.5 * 5/6 = 5/12 ~= 0.417.) No DenseDepth variant gives 0.375.


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> float32 on the same device: (images / 255 - mean) / std per channel.

    Elementwise, so normalising a batch gives bit for bit what normalising each image does (on the CPU).
    """
    x = images.float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x - m) / s


def to_image_tensor(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 HxWx3 -> float32 (3, H, W): (rgb / 255 - mean) / std per channel."""
    return normalize_images(torch.from_numpy(np.require(rgb, np.uint8, ["C", "W"])).permute(2, 0, 1), mean, std)


def to_uint8_chw(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> contiguous uint8 (3, H, W) tensor (no normalisation)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(rgb, np.uint8).transpose(2, 0, 1)))


def masked_resize(depth: np.ndarray, valid: np.ndarray, size: tuple[int, int],
                  threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Resize depth (metres, HxW) to size=(h, w) ignoring invalid pixels: (depth float32, valid bool).

    Masked bilinear: resize(depth * valid) / resize(valid), antialiased when shrinking; an output pixel is
    valid where the resized valid weight is > threshold; invalid outputs are 0.
    """
    stack = np.stack([np.where(valid, depth, 0.0), valid]).astype(np.float32)
    out = F.interpolate(torch.from_numpy(stack)[None], size=tuple(size), mode="bilinear", align_corners=False,
                        antialias=True)[0].numpy()
    ok = out[1] > threshold
    return np.where(ok, out[0] / np.maximum(out[1], 1e-6), 0.0).astype(np.float32), ok


def downsample_half(depth: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Halve a depth map (metres, HxW) mask-aware -> (H//2, W//2) depth float32 (0 where invalid), valid.

    Even sizes: each output is the mean of the valid pixels of its 2x2 block, valid if any of them is.
    Odd sizes: `masked_resize` to (H//2, W//2).
    """
    h, w = depth.shape
    if h % 2 or w % 2:
        return masked_resize(depth, valid, (h // 2, w // 2))
    total = np.where(valid, depth, 0.0).reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    count = valid.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    return (total / np.maximum(count, 1)).astype(np.float32), count > 0


def antialias_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a 2-D float map to size=(h, w) as skimage.transform.resize(image, size, order=1,
    mode="reflect", anti_aliasing=True, preserve_range=True) does (float64 result).

    Per axis with factor f = in / out: a Gaussian blur with sigma = max(0, (f - 1) / 2) (truncated at 4 sigma,
    mirror padding d c b | a b c d | c b a), then linear interpolation at the output pixel centres, input
    coordinate (i + 0.5) * f - 0.5. Only shrinking (or equal sizes) is supported.
    """
    out = np.asarray(image, dtype=np.float64)
    for axis, n_out in enumerate(size):
        n_in = out.shape[axis]
        if not 0 < n_out <= n_in:
            raise ValueError(f"antialias_resize shrinks only: axis {axis} from {n_in} to {n_out}")
        f = n_in / n_out
        sigma = max(0.0, (f - 1) / 2)
        radius = int(4.0 * sigma + 0.5)
        if radius > 0:
            x = np.arange(-radius, radius + 1)
            kernel = np.exp(-0.5 * (x / sigma) ** 2)
            kernel /= kernel.sum()
            pad = [(0, 0)] * out.ndim
            pad[axis] = (radius, radius)
            padded = np.pad(out, pad, mode="reflect")  # = scipy.ndimage mode "mirror"
            out = sum(k * np.take(padded, np.arange(j, j + n_in), axis=axis) for j, k in enumerate(kernel))
        coord = np.clip((np.arange(n_out) + 0.5) * f - 0.5, 0, n_in - 1)
        lo = np.floor(coord).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (coord - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def inverse_antialias_half(depth: np.ndarray, valid: np.ndarray, min_depth: float = MIN_DEPTH_M,
                           max_depth: float = MAX_DEPTH_M) -> tuple[np.ndarray, np.ndarray]:
    """DenseDepth's target: depth (metres, HxW) -> DepthNorm -> anti-aliased resize to (H//2, W//2) -> metres.

    DenseDepth (nyu_resize(DepthNorm(y), 240)) resizes max_depth / clip(depth) with skimage's anti-aliased
    resize (`antialias_resize`); the result is returned in metres (float32, in [min_depth, max_depth]) with
    its valid mask. Holes (DenseDepth's training depth has none): the resize is mask-aware,
    resize(dn * valid) / resize(valid), valid where the resized valid weight exceeds 0.5 (0 m elsewhere);
    without holes this is exactly DenseDepth's computation.
    """
    h, w = depth.shape
    size = (h // 2, w // 2)
    dn = depth_to_depthnorm(torch.from_numpy(depth.astype(np.float64)), max_depth, min_depth).numpy()
    if valid.all():
        out_dn, ok = antialias_resize(dn, size), np.ones(size, bool)
    else:
        num = antialias_resize(np.where(valid, dn, 0.0), size)
        weight = antialias_resize(valid.astype(np.float64), size)
        ok = weight > 0.5
        out_dn = np.where(ok, num / np.maximum(weight, 1e-12), 1.0)
    metres = depthnorm_to_depth(torch.from_numpy(out_dn), max_depth, min_depth).numpy()
    return np.where(ok, metres, 0.0).astype(np.float32), ok


def resize_crop(sample: dict[str, Any], size: tuple[int, int], rng: np.random.Generator | None = None) -> dict:
    """Scale so the image covers size=(H, W) keeping aspect, then crop: random with `rng`, else centred.

    Returns a new sample; intrinsics (if any) are scaled and shifted to match. Unchanged if already HxW.
    """
    h, w = sample["depth"].shape
    th, tw = size
    if (h, w) == (th, tw):
        return sample
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    rgb = np.asarray(Image.fromarray(sample["rgb"]).resize((nw, nh), Image.BILINEAR))
    depth, valid = masked_resize(sample["depth"], sample["valid"], (nh, nw))
    if rng is None:
        y0, x0 = (nh - th) // 2, (nw - tw) // 2
    else:
        y0, x0 = int(rng.integers(0, nh - th + 1)), int(rng.integers(0, nw - tw + 1))
    k = sample.get("intrinsics")
    if k is not None:
        sx, sy = nw / w, nh / h
        k = np.array([[k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] + 0.5) * sx - 0.5 - x0],
                      [0.0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5 - y0], [0.0, 0.0, 1.0]])
    crop = (slice(y0, y0 + th), slice(x0, x0 + tw))
    return {**sample, "rgb": rgb[crop], "depth": depth[crop], "valid": valid[crop], "intrinsics": k}


def hflip(sample: dict[str, Any]) -> dict:
    """Mirror image, depth and mask left-right together (and the intrinsics' principal point)."""
    k = sample.get("intrinsics")
    if k is not None:
        k = k.copy()
        k[0, 2] = sample["depth"].shape[1] - 1 - k[0, 2]
        k[0, 1] = -k[0, 1]
    return {**sample, "rgb": sample["rgb"][:, ::-1], "depth": sample["depth"][:, ::-1],
            "valid": sample["valid"][:, ::-1], "intrinsics": k}


def channel_swap(rgb: np.ndarray, rng: np.random.Generator, p: float = DENSEDEPTH_SWAP_P) -> np.ndarray:
    """With probability p, reorder the RGB channels by one of the 5 non-identity permutations (uniform).

    p is therefore exactly the rate at which the channels change (DenseDepth's rule: DENSEDEPTH_SWAP_P).
    """
    if rng.random() < p:
        return rgb[..., list(SWAPS[int(rng.integers(len(SWAPS)))])]
    return rgb


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise DatasetError("transforms", f"mean and std must be 3 numbers (std > 0), got mean={mean}, std={std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _finish(sample: dict[str, Any], mean, std, half=downsample_half, normalize: bool = True) -> dict[str, Any]:
    depth, valid = half(sample["depth"], sample["valid"])
    k = sample.get("intrinsics")
    image = to_image_tensor(sample["rgb"], mean, std) if normalize else to_uint8_chw(sample["rgb"])
    return {"image": image,
            "depth": torch.from_numpy(depth)[None], "valid": torch.from_numpy(valid)[None],
            "intrinsics": torch.full((3, 3), float("nan"), dtype=torch.float64) if k is None
            else torch.as_tensor(np.asarray(k, dtype=np.float64)),
            "name": sample["name"], **({"skipped": sample["skipped"]} if "skipped" in sample else {})}


class EvalTransform:
    """Deterministic: optional resize + centre crop to size=(H, W), normalise, half-res mask-aware target."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: tuple[int, int] | None = None):
        self.mean, self.std = _check_stats(mean, std)
        self.size = size

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, Any]:
        sample = check_sample(sample, "transforms")
        if self.size is not None:
            sample = resize_crop(sample, self.size)
        return _finish(sample, self.mean, self.std)


class TrainTransform:
    """Optional resize + random crop to size=(H, W), horizontal flip (flip_p), DenseDepth channel swap
    (swap_p = rate at which channels actually change), normalise, half-res target.

    target_resize: "mask_mean" (mean of the valid metres of each 2x2 block, `downsample_half`) or
    "inverse_antialias" (DenseDepth: DepthNorm with min_depth/max_depth in metres, anti-aliased resize,
    back to metres; `inverse_antialias_half`). The target is always returned in metres.
    normalize=False: `image` stays uint8 RGB (3, H, W), a quarter of the float32 bytes to send from a
    DataLoader worker; `normalize_images(batch, mean, std)` later gives bit for bit the normalised image.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: tuple[int, int] | None = None,
                 flip_p: float = 0.5, swap_p: float = DENSEDEPTH_SWAP_P, target_resize: str = "mask_mean",
                 min_depth: float = MIN_DEPTH_M, max_depth: float = MAX_DEPTH_M, normalize: bool = True):
        self.mean, self.std = _check_stats(mean, std)
        for name, p in (("flip_p", flip_p), ("swap_p", swap_p)):
            if not 0.0 <= p <= 1.0:
                raise DatasetError("transforms", f"{name} must be a probability in [0, 1], got {p}")
        if target_resize not in TARGET_RESIZES:
            raise DatasetError("transforms", f"target_resize must be one of {', '.join(TARGET_RESIZES)}, "
                               f"got {target_resize!r}")
        try:
            self.min_depth, self.max_depth = check_depth_range(min_depth, max_depth, "TrainTransform")
        except ValueError as e:
            raise DatasetError("transforms", str(e)) from None
        self.size, self.flip_p, self.swap_p, self.target_resize = size, flip_p, swap_p, target_resize
        self.normalize = bool(normalize)

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        sample = check_sample(sample, "transforms")
        if self.size is not None:
            sample = resize_crop(sample, self.size, rng)
        if rng.random() < self.flip_p:
            sample = hflip(sample)
        sample = {**sample, "rgb": channel_swap(sample["rgb"], rng, self.swap_p)}
        return _finish(sample, self.mean, self.std, self._half, self.normalize)

    def _half(self, depth: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.target_resize == "inverse_antialias":
            return inverse_antialias_half(depth, valid, self.min_depth, self.max_depth)
        return downsample_half(depth, valid)


class TransformedDataset(torch.utils.data.Dataset):
    """`dataset[i]` through `transform(sample, rng)` with rng = default_rng((seed, epoch, i)).

    Call `set_epoch(epoch)` before iterating each epoch (like DistributedSampler.set_epoch); the augmentation
    of an index depends only on (seed, epoch, index). DataLoader workers copy the dataset when an iterator
    starts, so with persistent_workers=True the new epoch does not reach them: use non-persistent workers.
    """

    def __init__(self, dataset: Sequence, transform: Callable[[dict, np.random.Generator], dict], seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        return self.transform(self.dataset[index], rng)
