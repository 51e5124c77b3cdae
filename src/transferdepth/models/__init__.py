"""Encoders, decoders (`decoders/`, DenseDepth's by default) and `create_model`, the weights-free way to make
a depth network.

This package never fetches weights: `create_model` takes an ImageNet state dict that a caller above it
resolved (`transferdepth.build_model` does so with `transferdepth.weights`). Imports: recipe, torch, timm.
"""

from __future__ import annotations

import torch

from transferdepth.models.decoders import available_decoders, get_decoder
from transferdepth.models.decoders.densedepth import DenseDepthDecoder
from transferdepth.models.depthnet import DepthNet
from transferdepth.models.encoders import (
    EncoderSpec,
    FeatureInfo,
    available_encoders,
    build_classifier,
    build_encoder,
    get_spec,
    hub_source,
    register,
)
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M

__all__ = ["DenseDepthDecoder", "DepthNet", "EncoderSpec", "FeatureInfo", "available_decoders", "available_encoders",
           "get_decoder",
           "build_classifier", "build_encoder", "create_model", "get_spec", "hub_source", "register"]


def create_model(encoder: str, decoder_width: float = 0.5, *,
                 encoder_state: dict[str, torch.Tensor] | None = None, min_depth: float = MIN_DEPTH_M,
                 max_depth: float = MAX_DEPTH_M, decoder_act_a: bool = True, bottleneck_relu: bool | None = None,
                 decoder_init: str = "torch", bn_momentum: float | None = None,
                 input_norm: str = "imagenet", pad_multiple: int = 1, decoder: str = "densedepth",
                 output_space: str | None = None) -> DepthNet:
    """A depth network: (N,3,H,W) normalised RGB -> (N,1,H/2,W/2) in its output space (DepthNorm for the default
    DenseDepth decoder). Never downloads anything.

    decoder: a registered decoder (`available_decoders()`); output_space: None = the decoder's own.

    encoder_state: the encoder's full ImageNet classifier state dict (loaded strictly), or None = random init.
    min_depth, max_depth: the model's depth range in metres (DenseDepth's NYU range by default).
    decoder_act_a, bottleneck_relu, decoder_init, input_norm: see `DepthNet` / docs/faithfulness.md.
    pad_multiple: 1 = no padding for sides >= 32 (new models); 32 = every side padded to a multiple of 32
    (checkpoints written before the key existed). See `DepthNet`.
    bn_momentum: BatchNorm momentum of the encoder (torch convention; Keras' 0.99 is 0.01); None keeps 0.1.
    """
    spec = get_spec(encoder)
    model = DepthNet(build_encoder(encoder, encoder_state), spec, decoder_width, min_depth, max_depth,
                     decoder_act_a=decoder_act_a, bottleneck_relu=bottleneck_relu, decoder_init=decoder_init,
                     input_norm=input_norm, pad_multiple=pad_multiple, decoder=decoder, output_space=output_space)
    if bn_momentum is not None:  # the encoder's only: each decoder keeps its reference's (torch's 0.1; BTS 0.01)
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = float(bn_momentum)
    return model
