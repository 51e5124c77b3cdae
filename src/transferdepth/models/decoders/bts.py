"""BTS: "From Big to Small" (Lee et al. 2019), the decoder of cleinc/bts `pytorch/bts.py`.

Upsampling convs (nearest, conv3x3, ELU) from stride 32 to 8 with skips; dense ASPP at stride 8 (dilations
3, 6, 12, 18, 24, each branch fed every earlier output); local planar guidance (LPG) at strides 8, 4 and 2:
a 1x1 reduction to plane coefficients (theta = sigmoid * pi/3, phi = sigmoid * 2pi, distance = sigmoid *
max_depth; normal n = (sin t cos p, sin t sin p, cos t)) expanded over each k x k patch as depth = n4 / (n1 u +
n2 v + n3), u, v the pixel's offset in the patch; the three estimates (scaled by 1 / max_depth) join the
finer stages; depth = sigmoid(conv) x max_depth (metres) at the input's size. No biases; BatchNorm momentum
0.01 (torch's convention), eps 1.1e-5 (TensorFlow's). The ReLU the reference applies to the stride-32
feature is applied here too. Channel width: bts_size 512 x width.
Reference: cleinc/bts `pytorch/bts.py` (commit f22b496).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders.common import scaled, size_at
from transferdepth.models.decoders.registry import DecoderSpec, register_decoder

BN_MOMENTUM, BN_EPS = 0.01, 1.1e-5


def _bn(c: int, eps: float = BN_EPS) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=eps, momentum=BN_MOMENTUM)


def _conv_elu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.ELU())


class _UpConv(nn.Module):
    """Nearest upsampling to `size`, conv3x3, ELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _conv_elu(cin, cout)

    def forward(self, x: torch.Tensor, size: tuple) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class _Atrous(nn.Sequential):
    """[BN] -> ReLU -> conv1x1 to 2*out -> BN -> ReLU -> dilated conv3x3 to out."""

    def __init__(self, cin: int, cout: int, dilation: int, bn_first: bool = True):
        layers: list[nn.Module] = [_bn(cin)] if bn_first else []
        layers += [nn.ReLU(), nn.Conv2d(cin, 2 * cout, 1, bias=False), nn.BatchNorm2d(2 * cout, momentum=BN_MOMENTUM),
                   nn.ReLU(), nn.Conv2d(2 * cout, cout, 3, padding=dilation, dilation=dilation, bias=False)]
        super().__init__(*layers)


def _reduction(cin: int, cout: int, final: bool = False) -> nn.Sequential:
    """1x1 convs (ELU) halving from `cout` while >= 8, then to 3 plane coefficients (or 1 + sigmoid: final)."""
    layers: list[nn.Module] = []
    while cout >= 4:
        if cout < 8:
            layers += [nn.Conv2d(cin, 1, 1, bias=False), nn.Sigmoid()] if final else [nn.Conv2d(cin, 3, 1, bias=False)]
            break
        layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.ELU()]
        cin, cout = cout, cout // 2
    return nn.Sequential(*layers)


def local_planar_guidance(coeffs: torch.Tensor, k: int, size: tuple, max_depth: float) -> torch.Tensor:
    """(N,3,h,w) plane coefficients at stride k -> (N,1,H,W) depth in metres at `size` (H, W)."""
    theta = torch.sigmoid(coeffs[:, 0:1]) * (math.pi / 3)
    phi = torch.sigmoid(coeffs[:, 1:2]) * (2 * math.pi)
    dist = torch.sigmoid(coeffs[:, 2:3]) * max_depth
    n = torch.cat([torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], 1)
    n = F.normalize(n, dim=1)
    plane = torch.cat([n, dist], 1).repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
    plane = plane[..., : size[0], : size[1]]
    h, w = plane.shape[-2:]
    offs = (k - 1) / 2
    u = ((torch.arange(w, device=plane.device) % k).to(plane.dtype) - offs) / k
    v = ((torch.arange(h, device=plane.device) % k).to(plane.dtype) - offs) / k
    return plane[:, 3:4] / (plane[:, 0:1] * u.view(1, 1, 1, -1) + plane[:, 1:2] * v.view(1, 1, -1, 1) + plane[:, 2:3])


def _every(d: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    """Every k-th pixel of a full-resolution map, cut to `like`'s size: the reference's nearest x(1/k)
    downsampling, exact at any size (an interpolation to a size rounds differently in ONNX)."""
    return d[..., ::k, ::k][..., : like.shape[-2], : like.shape[-1]]


class BTSDecoder(nn.Module):
    """feats at strides 2, 4, 8, 16, 32 -> (N,1,H,W) metres in (0, max_depth)."""

    def __init__(self, channels: dict[int, int], width: float = 1.0, max_depth: float = 10.0):
        super().__init__()
        f = scaled(512, width, minimum=32)
        c2, c4, c8, c16, c32 = (channels[s] for s in (2, 4, 8, 16, 32))
        self.max_depth = float(max_depth)
        self.upconv5, self.bn5, self.conv5 = _UpConv(c32, f), _bn(f), _conv_elu(f + c16, f)
        self.upconv4, self.bn4 = _UpConv(f, f // 2), _bn(f // 2)
        self.conv4, self.bn4_2 = _conv_elu(f // 2 + c8, f // 2), _bn(f // 2)
        q, base = f // 4, f // 2 + c8  # each ASPP branch gives f/4; the chain starts from [upconv4, skip8]
        self.daspp = nn.ModuleList([_Atrous(f // 2, q, 3, bn_first=False)] +
                                   [_Atrous(base + i * q, q, d) for i, d in enumerate((6, 12, 18, 24), 1)])
        self.daspp_conv = _conv_elu(f // 2 + 5 * q, q)
        self.reduc8 = _reduction(q, q)
        self.upconv3, self.bn3, self.conv3 = _UpConv(q, q), _bn(q), _conv_elu(q + c4 + 1, q)
        self.reduc4 = _reduction(q, f // 8)
        self.upconv2, self.bn2, self.conv2 = _UpConv(q, f // 8), _bn(f // 8), _conv_elu(f // 8 + c2 + 1, f // 8)
        self.reduc2 = _reduction(f // 8, f // 16)
        self.upconv1 = _UpConv(f // 8, f // 16)
        self.reduc1 = _reduction(f // 16, f // 32, final=True)
        self.conv1 = _conv_elu(f // 16 + 4, f // 16)
        self.get_depth = nn.Sequential(nn.Conv2d(f // 16, 1, 3, padding=1, bias=False), nn.Sigmoid())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, feats: dict[int, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        full, md = tuple(size), self.max_depth
        x = torch.cat([self.bn5(self.upconv5(F.relu(feats[32]), size_at(feats, 16, size))), feats[16]], 1)
        x = self.bn4(self.upconv4(self.conv5(x), size_at(feats, 8, size)))
        concat = torch.cat([x, feats[8]], 1)
        iconv4 = self.bn4_2(self.conv4(concat))
        outs = [self.daspp[0](iconv4)]
        for branch in self.daspp[1:]:
            concat = torch.cat([concat, outs[-1]], 1)
            outs.append(branch(concat))
        feat8 = self.daspp_conv(torch.cat([iconv4, *outs], 1))
        d8 = local_planar_guidance(self.reduc8(feat8), 8, full, md) / md
        x = self.bn3(self.upconv3(feat8, size_at(feats, 4, size)))
        x = self.conv3(torch.cat([x, feats[4], _every(d8, 4, x)], 1))
        d4 = local_planar_guidance(self.reduc4(x), 4, full, md) / md
        x = self.bn2(self.upconv2(x, size_at(feats, 2, size)))
        x = self.conv2(torch.cat([x, feats[2], _every(d4, 2, x)], 1))
        d2 = local_planar_guidance(self.reduc2(x), 2, full, md) / md
        x = self.upconv1(x, full)
        x = self.conv1(torch.cat([x, self.reduc1(x), d2, d4, d8], 1))
        return md * self.get_depth(x)

    @torch.no_grad()
    def init_output_(self, value: float) -> None:
        """Start the output flat: the last conv (bias-free, as the reference) scaled by 0.01, so the network
        starts near max_depth / 2 everywhere instead of spread over (0, max_depth) by the encoder's features.
        `value` (metres) cannot be reached without a bias and is not used."""
        self.get_depth[0].weight.mul_(0.01)


def _build(channels: dict[int, int], *, width: float, max_depth: float) -> BTSDecoder:
    return BTSDecoder(channels, width, max_depth)


register_decoder(DecoderSpec(
    "bts", _build, needs=frozenset({2, 4, 8, 16, 32}), uses=frozenset({2, 4, 8, 16, 32}), output_space="metric",
    output_stride=1, spaces=("metric",), reference="cleinc/bts pytorch/bts.py (commit f22b496)",
))
