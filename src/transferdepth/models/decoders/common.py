"""Small pieces the decoders share: channel scaling and the size a stride gives."""

from __future__ import annotations

import torch


def scaled(channels: int, width: float, minimum: int = 1) -> int:
    """`channels` of a reference decoder at `width` (1.0 = the reference's own size), at least `minimum`."""
    return max(minimum, int(round(channels * width)))


def size_at(feats: dict[int, torch.Tensor], stride: int, size: tuple[int, int]) -> tuple:
    """(h, w) of the feature at `stride`: the encoder's own when it has one, else ceil(H/stride) x ceil(W/stride)
    (what a padded stride-s layer gives). Sizes come from shapes, so tracing keeps them dynamic."""
    if stride in feats:
        return tuple(feats[stride].shape[-2:])
    h, w = size
    return ((h + stride - 1) // stride, (w + stride - 1) // stride)
