"""U-Net decoder (segmentation_models_pytorch's `UnetDecoder`, BatchNorm, no attention, no centre block).

Five blocks from stride 32 to 1: nearest upsampling to the next feature's size, concatenation of that feature,
two conv3x3 (no bias) + BatchNorm + ReLU; channels (256, 128, 64, 32, 16) x width; a conv3x3 head to one
channel. Output at the input's resolution (`DepthNet` averages it 2x2 to H/2).
Reference: qubvel/segmentation_models.pytorch `decoders/unet/decoder.py` (v0.6.0 on PyPI; structure equal to
commit bd7f877); parameters for resnet34 in docs/faithfulness.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders.common import scaled, size_at
from transferdepth.models.decoders.registry import DecoderSpec, register_decoder

CHANNELS = (256, 128, 64, 32, 16)
STRIDES = (16, 8, 4, 2, 1)  # where each block's output lands


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.conv1 = _ConvBNReLU(cin + cskip, cout)
        self.conv2 = _ConvBNReLU(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """feats at strides 4..32 (2 when present) -> (N,1,H,W)."""

    def __init__(self, channels: dict[int, int], width: float = 1.0):
        super().__init__()
        outs = [scaled(c, width) for c in CHANNELS]
        ins = [channels[32], *outs[:-1]]
        skips = [channels.get(s, 0) for s in STRIDES]
        self.blocks = nn.ModuleList(_Block(i, s, o) for i, s, o in zip(ins, skips, outs))
        self.head = nn.Conv2d(outs[-1], 1, 3, padding=1)

    def forward(self, feats: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = feats[32]
        for block, stride in zip(self.blocks, STRIDES):
            x = block(x, feats.get(stride), size_at(feats, stride, size))
        return self.head(x)

    @torch.no_grad()
    def init_output_(self, value: float) -> None:
        """Start the output at `value` (in the output space): the head's bias."""
        self.head.bias.fill_(value)


def _build(channels: dict[int, int], *, width: float, max_depth: float) -> UNetDecoder:
    return UNetDecoder(channels, width)


register_decoder(DecoderSpec(
    "unet", _build, needs=frozenset({4, 8, 16, 32}), uses=frozenset({2, 4, 8, 16, 32}), output_space="depthnorm",
    output_stride=1, reference="qubvel/segmentation_models.pytorch decoders/unet/decoder.py (PyPI 0.6.0; bd7f877)",
))
