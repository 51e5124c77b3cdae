"""The CNN form of DPT's decoder: MiDaS v2.1 small's reassemble convs, fusion blocks and head.

Reassemble: a bias-free conv3x3 per encoder stride 4, 8, 16, 32 to (64, 128, 256, 512) x width channels
("expand"). Fusion, from stride 32 down: add a residual conv unit of the finer feature (ReLU, conv3x3, ReLU,
conv3x3, + input; biases), a second residual unit, bilinear upsampling (align_corners) to the next finer
stride, conv1x1 halving the channels (not at the last block). Head: conv3x3 to half the channels, bilinear x2
to the input's size, conv3x3 to 32, ReLU, conv1x1 to 1, ReLU (non-negative). The reference's top fusion block
also builds a first residual unit that its forward never calls; it is left out here (faithfulness.md).
Reference: isl-org/MiDaS `midas/midas_net_custom.py` + `midas/blocks.py` (commit 14560f2), MidasNet_small
(features=64, expand, non_negative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders.common import scaled, size_at
from transferdepth.models.decoders.registry import DecoderSpec, register_decoder

STRIDES = (4, 8, 16, 32)


class _ResidualUnit(nn.Module):
    def __init__(self, f: int):
        super().__init__()
        self.conv1 = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _Fusion(nn.Module):
    def __init__(self, f: int, expand: bool, takes_skip: bool):
        super().__init__()
        self.rcu1 = _ResidualUnit(f) if takes_skip else None
        self.rcu2 = _ResidualUnit(f)
        self.out_conv = nn.Conv2d(f, f // 2 if expand else f, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple) -> torch.Tensor:
        if skip is not None:
            x = x + self.rcu1(skip)
        x = F.interpolate(self.rcu2(x), size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTDecoder(nn.Module):
    """feats at strides 4, 8, 16, 32 -> (N,1,H,W), non-negative."""

    def __init__(self, channels: dict[int, int], width: float = 1.0):
        super().__init__()
        f = scaled(64, width, minimum=2)
        widths = (f, 2 * f, 4 * f, 8 * f)
        self.reassemble = nn.ModuleList(nn.Conv2d(channels[s], c, 3, padding=1, bias=False)
                                        for s, c in zip(STRIDES, widths))
        self.fusions = nn.ModuleList(_Fusion(c, expand=i > 0, takes_skip=i < 3) for i, c in enumerate(widths))
        self.head = nn.ModuleDict({"conv1": nn.Conv2d(f, f // 2, 3, padding=1),
                                   "conv2": nn.Conv2d(f // 2, 32, 3, padding=1), "conv3": nn.Conv2d(32, 1, 1)})

    def forward(self, feats: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        layers = [conv(feats[s]) for conv, s in zip(self.reassemble, STRIDES)]
        x = None
        for i in (3, 2, 1, 0):  # stride 32 first; each block's output lands on the next finer stride
            target = size_at(feats, STRIDES[i] // 2, size)
            x = self.fusions[i](layers[i] if x is None else x, None if x is None else layers[i], target)
        x = F.interpolate(self.head["conv1"](x), size=tuple(size), mode="bilinear", align_corners=False)
        return F.relu(self.head["conv3"](F.relu(self.head["conv2"](x))))

    @torch.no_grad()
    def init_output_(self, value: float) -> None:
        """Start the output at `value` (in the output space, > 0 under the final ReLU): the last conv's bias."""
        self.head["conv3"].bias.fill_(value)


def _build(channels: dict[int, int], *, width: float, max_depth: float) -> DPTDecoder:
    return DPTDecoder(channels, width)


register_decoder(DecoderSpec(
    "dpt", _build, needs=frozenset(STRIDES), uses=frozenset(STRIDES), output_space="depthnorm", output_stride=1,
    spaces=("depthnorm", "metric", "disparity"),
    reference="isl-org/MiDaS midas/midas_net_custom.py, midas/blocks.py (commit 14560f2), MidasNet_small",
))
