"""The DenseDepth decoder: 1x1 conv on the bottleneck, four up-blocks with skips, a 3x3 conv to depth.

Reference: ialhashim/DenseDepth `model.py` (Keras) and `PyTorch/model.py`; every difference and the key that
switches it is in docs/faithfulness.md. Output: DepthNorm at H/2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders.registry import DecoderSpec, register_decoder


class UpBlock(nn.Module):
    """Bilinear upsampling to the skip's size, concat the skip, conv3x3 + LeakyReLU(0.2) twice."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, act_a: bool = True):
        super().__init__()
        self.convA = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1)
        self.convB = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.act_a = act_a  # DenseDepth before ea4a455 (March 2019, the released nyu.h5): no act after convA

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        # `size` comes from a tensor's shape, so tracing/ONNX export keeps height and width dynamic.
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.convA(x)
        if self.act_a:
            x = self.act(x)
        return self.act(self.convB(x))


class DenseDepthDecoder(nn.Module):
    """Decoder over features at strides (2, 4, 8, 16, 32) -> (N,1,H2,W2) DepthNorm, (H2,W2) the stride-2 skip's
    size (or ceil(H/2) x ceil(W/2) without one). Each up-block upsamples to its skip's exact size, so any input
    size works.

    skip_channels: channels at strides 2, 4, 8, 16 (0 where the encoder has no feature at that stride;
    the block then upsamples without concatenation). bottleneck: channels at stride 32.
    width: F = int(bottleneck * width); the up-blocks output F/2, F/4, F/8, F/16 channels.
    act_a: LeakyReLU(0.2) after each block's convA as well as convB (DenseDepth since March 2019).
    init: "torch" (PyTorch's default) or "glorot" (Keras' glorot_uniform kernels, zero biases, as DenseDepth).
    """

    def __init__(self, skip_channels: tuple[int, int, int, int], bottleneck: int, width: float = 0.5,
                 act_a: bool = True, init: str = "torch"):
        super().__init__()
        f = int(bottleneck * width)
        if f < 16:
            raise ValueError(f"decoder_width {width} gives {f} bottleneck channels; need at least 16")
        self.conv2 = nn.Conv2d(bottleneck, f, kernel_size=1)
        c2, c4, c8, c16 = skip_channels
        self.up1 = UpBlock(f, c16, f // 2, act_a)
        self.up2 = UpBlock(f // 2, c8, f // 4, act_a)
        self.up3 = UpBlock(f // 4, c4, f // 8, act_a)
        self.up4 = UpBlock(f // 8, c2, f // 16, act_a)
        self.conv3 = nn.Conv2d(f // 16, 1, kernel_size=3, padding=1)
        if init not in ("torch", "glorot"):
            raise ValueError(f"decoder_init must be 'torch' or 'glorot', got {init!r}")
        if init == "glorot":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, feats: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """feats: stride -> feature map (32 always; 2..16 may be absent); size: (H, W) of the input."""
        h, w = size
        skips = feats
        x = self.conv2(feats[32])
        for block, stride in ((self.up1, 16), (self.up2, 8), (self.up3, 4), (self.up4, 2)):
            skip = skips.get(stride)
            # no skip at this stride: ceil, as a padded stride-2 conv gives (so the output is ceil(H/2) x ceil(W/2))
            target = skip.shape[-2:] if skip is not None else ((h + stride - 1) // stride, (w + stride - 1) // stride)
            x = block(x, skip, target)
        return self.conv3(x)

    @torch.no_grad()
    def init_output_(self, value: float) -> None:
        """Start the output at `value` (in the output space): the last conv's bias."""
        self.conv3.bias.fill_(value)


def _build(channels: dict[int, int], *, width: float, max_depth: float, act_a: bool = True,
           init: str = "torch") -> DenseDepthDecoder:
    return DenseDepthDecoder(tuple(channels.get(s, 0) for s in (2, 4, 8, 16)), channels[32], width, act_a, init)


register_decoder(DecoderSpec(
    "densedepth", _build, needs=frozenset({32}), uses=frozenset({2, 4, 8, 16, 32}), output_space="depthnorm",
    output_stride=2, reference="ialhashim/DenseDepth model.py, PyTorch/model.py (commits in docs/faithfulness.md)",
))
