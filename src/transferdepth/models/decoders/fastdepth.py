"""FastDepth's NNConv5 decoder with additive skips (`MobileNetSkipAdd`).

Five depthwise-separable 5x5 blocks (depthwise conv + BN + ReLU, pointwise conv + BN + ReLU, no biases),
channels (512, 256, 128, 64, 32) x width, each followed by nearest upsampling to the next finer stride, with
the encoder's features added at strides 8, 4 and 2 (a bias-free 1x1 projection where the encoder's channels
differ from the decoder's; none for the reference's MobileNet); then a pointwise conv + BN + ReLU to one
channel. The reference upsamples once more before that last pointwise block; a pointwise block commutes with
nearest upsampling, so running it at H/2 gives exactly the reference's output averaged 2x2 (faithfulness.md).
Initialisation as the reference: conv weights normal(0, sqrt(2 / (k*k*out))), BatchNorm 1 and 0.
Reference: dwofk/fast-depth `models.py` (commit 83eeed5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders.common import scaled, size_at
from transferdepth.models.decoders.registry import DecoderSpec, register_decoder

CHANNELS = (512, 256, 128, 64, 32)
UP_TO = (16, 8, 4, 2, 2)  # the stride each block's output is upsampled to (the last stays at H/2)
SKIP_AT = {1: 8, 2: 4, 3: 2}  # block index -> the encoder stride added after its upsampling


def _separable(cin: int, cout: int, k: int = 5) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FastDepthDecoder(nn.Module):
    """feats at strides 2, 4, 8, 32 -> (N,1,ceil(H/2),ceil(W/2)), non-negative (final ReLU)."""

    def __init__(self, channels: dict[int, int], width: float = 1.0):
        super().__init__()
        outs = [scaled(c, width) for c in CHANNELS]
        self.blocks = nn.ModuleList(_separable(cin, cout) for cin, cout in zip([channels[32], *outs[:-1]], outs))
        self.projections = nn.ModuleDict({
            str(s): (nn.Identity() if channels[s] == outs[i] else nn.Conv2d(channels[s], outs[i], 1, bias=False))
            for i, s in SKIP_AT.items()})
        self.head = nn.Sequential(nn.Conv2d(outs[-1], 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU(inplace=True))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))

    def forward(self, feats: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = feats[32]
        for i, (block, stride) in enumerate(zip(self.blocks, UP_TO)):
            x = F.interpolate(block(x), size=size_at(feats, stride, size), mode="nearest")
            if i in SKIP_AT:
                x = x + self.projections[str(SKIP_AT[i])](feats[SKIP_AT[i]])
        return self.head(x)

    @torch.no_grad()
    def init_output_(self, value: float) -> None:
        """Start the output at `value` (in the output space, > 0 under the final ReLU): the last BatchNorm's shift."""
        self.head[1].bias.fill_(value)


def _build(channels: dict[int, int], *, width: float, max_depth: float) -> FastDepthDecoder:
    return FastDepthDecoder(channels, width)


register_decoder(DecoderSpec(
    "fastdepth", _build, needs=frozenset({2, 4, 8, 32}), uses=frozenset({2, 4, 8, 32}), output_space="depthnorm",
    output_stride=2, spaces=("depthnorm", "metric", "disparity"),
    reference="dwofk/fast-depth models.py MobileNetSkipAdd (commit 83eeed5)",
))
