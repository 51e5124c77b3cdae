"""DepthNet = ImageNet encoder + a registered decoder (DenseDepth's by default); its output space for training,
metres for users."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferdepth.models.decoders import build_decoder, get_decoder
from transferdepth.models.encoders import EncoderSpec
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M, check_depth_range

MIN_SIDE = 32  # the encoders' total stride: a shorter side is padded up to it (the stride-32 feature is >= 1x1)
OLD_PAD_MULTIPLE = 32  # checkpoints written before `pad_multiple` existed padded every side to a multiple of 32


def pad_amount(n: int | torch.Tensor, multiple: int) -> int | torch.Tensor:
    """Pixels to add to a side of `n` pixels: up to a multiple of `multiple`, and to at least MIN_SIDE.

    `n` is an int, or a 0-d tensor while tracing (ONNX / TorchScript export), which keeps the amount dynamic."""
    target = (n + multiple - 1) // multiple * multiple
    target = torch.clamp(target, min=MIN_SIDE) if isinstance(target, torch.Tensor) else max(target, MIN_SIDE)
    return target - n


def half_resolution(x: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,ceil(H/2),ceil(W/2)): 2x2 means, an odd last row / column replicated first (so it is
    its own mean). Exports to ONNX with dynamic sizes (Pad + AveragePool)."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(x, 2)


class DepthNet(nn.Module):
    """forward: (N,3,H,W) normalised RGB -> (N,1,ceil(H/2),ceil(W/2)) in the model's `output_space` (DepthNorm,
    max_depth / depth, for the DenseDepth decoder; see `recipe.output_to_depth`).

    decoder: a registered decoder (`models.decoders`); one that outputs at the input's resolution is averaged
    2x2 to H/2 here (replicate-padded to even sides first), so every decoder trains on the same targets.
    output_space: None = the decoder's own (depthnorm; metric for bts).

    Any size runs as it is: the decoder upsamples to each skip's size (as DenseDepth's PyTorch port), so no
    padding happens for sides >= 32. Padding (replicate, bottom/right, output cropped back) happens only where
    a size needs it: a side shorter than 32 (MIN_SIDE), an odd side for an encoder whose stride-2 feature rounds
    down (`EncoderSpec.half_floor`; none of the registered ones), and, with `pad_multiple` > 1, every side to a
    multiple of it (32: what checkpoints written before the key existed did; they load with it). `min_depth`, `max_depth` (metres) are the model's depth range: the
    DepthNorm scale and the clamp of every prediction (`transferdepth.inference.core.infer` gives metres).

    decoder_act_a: LeakyReLU after each up-block's convA (DenseDepth since March 2019; False = the paper's nyu.h5).
    bottleneck_relu: ReLU on the stride-32 feature before the decoder; None = the encoder's registry default
    (True for DenseNets, as DenseDepth; False where the feature is already activated or linear by design).
    decoder_init: "torch" or "glorot" (Keras'). input_norm: "imagenet" (the encoder's mean/std) or "none"
    (RGB in [0,1] as is). All are recorded in checkpoints; see docs/faithfulness.md.
    """

    def __init__(self, encoder: nn.Module, spec: EncoderSpec, decoder_width: float = 0.5,
                 min_depth: float = MIN_DEPTH_M, max_depth: float = MAX_DEPTH_M, *, decoder_act_a: bool = True,
                 bottleneck_relu: bool | None = None, decoder_init: str = "torch",
                 input_norm: str = "imagenet", pad_multiple: int = 1, decoder: str = "densedepth",
                 output_space: str | None = None):
        super().__init__()
        if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int) or pad_multiple < 1:
            raise ValueError(f"pad_multiple must be an integer >= 1, got {pad_multiple!r}")
        self.pad_multiple = pad_multiple
        self.encoder = encoder
        self.spec = spec
        self.encoder_name = spec.name
        self.decoder_width = decoder_width
        self.min_depth, self.max_depth = check_depth_range(min_depth, max_depth, "DepthNet")
        self.decoder_act_a = bool(decoder_act_a)
        self.bottleneck_relu = spec.bottleneck_relu if bottleneck_relu is None else bool(bottleneck_relu)
        if input_norm not in ("imagenet", "none"):
            raise ValueError(f"input_norm must be 'imagenet' or 'none', got {input_norm!r}")
        self.input_norm = input_norm
        dspec = get_decoder(decoder)
        self.decoder_name = dspec.name
        self.output_space = output_space or dspec.output_space
        self.output_stride = dspec.output_stride
        self._strides = [f.stride for f in spec.skips]
        options = {"act_a": self.decoder_act_a, "init": decoder_init} if decoder == "densedepth" else {}
        self.decoder = build_decoder(decoder, spec.name, {f.stride: f.channels for f in spec.skips},
                                     width=decoder_width, max_depth=self.max_depth,
                                     output_space=self.output_space, **options)
        # the normalisation `normalize` applies: the encoder's ImageNet mean/std, or none (DenseDepth's RGB/255)
        self.norm_mean, self.norm_std = ((tuple(spec.mean), tuple(spec.std)) if input_norm == "imagenet"
                                         else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
        self.register_buffer("mean", torch.tensor(self.norm_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.norm_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = pad_amount(h, self._align), pad_amount(w, self._align)
        # while tracing, h and w are graph values: pad and crop always (by 0 where nothing is needed)
        padded = torch.jit.is_tracing() or bool(ph or pw)
        if padded:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        feats = dict(zip(self._strides, self.encoder(x)))
        if self.bottleneck_relu:
            feats[32] = F.relu(feats[32])
        out = self.decoder(feats, x.shape[-2:])
        if self.output_stride == 1:
            out = half_resolution(out)
        if padded:
            out = out[..., : (h + 1) // 2, : (w + 1) // 2]
        return out

    def init_output_(self, value: float) -> None:
        """Start the untrained network's output near `value`, in its output space (e.g. the training targets'
        mean; `training.data.target_mean`), through its decoder's last layer (see each decoder's `init_output_`)."""
        self.decoder.init_output_(float(value))

    @property
    def _align(self) -> int:
        """Sides are padded to a multiple of this (and to at least MIN_SIDE)."""
        return math.lcm(self.pad_multiple, 2) if self.spec.half_floor else self.pad_multiple

    def normalize(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) RGB in [0,1] -> the encoder's normalised input."""
        return (rgb01 - self.mean) / self.std

    @property
    def max_depth_cm(self) -> float:
        """DenseDepth's `maxDepth` (centimetres) for this model's range."""
        return self.max_depth * 100.0
