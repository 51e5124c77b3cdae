"""Feature pyramid decoder (segmentation_models_pytorch's `FPNDecoder` and head, merge "add").

Laterals: conv1x1 (bias) to 256 x width channels at strides 32..4, top-down nearest upsampling and sum.
Segmentation blocks: conv3x3 (no bias) + GroupNorm + ReLU to 128 x width channels, upsampled (bilinear,
align_corners) step by step to stride 4 (3, 2, 1, 0 upsamplings); sum; Dropout2d(0.2); conv1x1 (bias) to one
channel; bilinear upsampling to H/2 (the reference upsamples x4 to H: parameter-free, see faithfulness.md).
GroupNorm has gcd(32, channels) groups (32 at width 1.0, as the reference).
Reference: qubvel/segmentation_models.pytorch `decoders/fpn/decoder.py` (v0.6.0 on PyPI; bd7f877).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders.common import scaled, size_at
from transferdepth.models.decoders.registry import DecoderSpec, register_decoder

LEVELS = (32, 16, 8, 4)


class _ConvGNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(32, cout), cout),
                         nn.ReLU(inplace=True))


class _SegBlock(nn.Module):
    """max(n, 1) conv blocks; after each, with n > 0, bilinear upsampling to the next finer level."""

    def __init__(self, cin: int, cout: int, n_up: int):
        super().__init__()
        self.n_up = n_up
        self.convs = nn.ModuleList(_ConvGNReLU(cin if i == 0 else cout, cout) for i in range(max(n_up, 1)))

    def forward(self, x: torch.Tensor, sizes: list[tuple]) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.n_up:
                x = F.interpolate(x, size=sizes[i], mode="bilinear", align_corners=True)
        return x


class FPNDecoder(nn.Module):
    """feats at strides 4, 8, 16, 32 -> (N,1,ceil(H/2),ceil(W/2))."""

    def __init__(self, channels: dict[int, int], width: float = 1.0):
        super().__init__()
        pyr, seg = scaled(256, width), scaled(128, width)
        self.laterals = nn.ModuleList(nn.Conv2d(channels[s], pyr, 1) for s in LEVELS)
        self.seg_blocks = nn.ModuleList(_SegBlock(pyr, seg, n) for n in (3, 2, 1, 0))
        self.dropout = nn.Dropout2d(0.2)
        self.head = nn.Conv2d(seg, 1, 1)

    def forward(self, feats: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        pyramid = []
        p = None
        for lateral, s in zip(self.laterals, LEVELS):
            lat = lateral(feats[s])
            p = lat if p is None else F.interpolate(p, size=lat.shape[-2:], mode="nearest") + lat
            pyramid.append(p)
        finer = [size_at(feats, s, size) for s in (16, 8, 4)]
        x = sum(block(p, finer[i:]) for i, (block, p) in enumerate(zip(self.seg_blocks, pyramid)))
        x = self.head(self.dropout(x))
        return F.interpolate(x, size=size_at({}, 2, size), mode="bilinear", align_corners=True)

    @torch.no_grad()
    def init_output_(self, value: float) -> None:
        """Start the output at `value` (in the output space): the head's bias."""
        self.head.bias.fill_(value)


def _build(channels: dict[int, int], *, width: float, max_depth: float) -> FPNDecoder:
    return FPNDecoder(channels, width)


register_decoder(DecoderSpec(
    "fpn", _build, needs=frozenset(LEVELS), uses=frozenset(LEVELS), output_space="depthnorm", output_stride=2,
    reference="qubvel/segmentation_models.pytorch decoders/fpn/decoder.py (PyPI 0.6.0; bd7f877)",
))
