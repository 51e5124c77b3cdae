"""Encoders, the DenseDepth decoder and `build_model`, the one way to make a depth network."""

from __future__ import annotations

import os

import torch

from transferdepth.models.decoder import DenseDepthDecoder
from transferdepth.models.depthnet import DepthNet
from transferdepth.models.encoders import (
    EncoderSpec,
    FeatureInfo,
    available_encoders,
    build_classifier,
    build_encoder,
    get_spec,
    register,
)
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M

__all__ = ["DenseDepthDecoder", "DepthNet", "EncoderSpec", "FeatureInfo", "available_encoders",
           "build_classifier", "build_encoder", "build_model", "get_spec", "register"]


def build_model(encoder: str, decoder_width: float = 0.5,
                pretrained: bool | str | os.PathLike = True, *, min_depth: float = MIN_DEPTH_M,
                max_depth: float = MAX_DEPTH_M, decoder_act_a: bool = True, bottleneck_relu: bool | None = None,
                decoder_init: str = "torch", bn_momentum: float | None = None,
                input_norm: str = "imagenet") -> DepthNet:
    """A DenseDepth network: (N,3,H,W) normalised RGB -> (N,1,H/2,W/2) DepthNorm.

    pretrained: True = ImageNet weights from the cache / hub / registry mirror (see `transferdepth.weights`),
    a path = ImageNet weights from that file, False = random initialisation.
    min_depth, max_depth: the model's depth range in metres (DenseDepth's NYU range by default).
    decoder_act_a, bottleneck_relu, decoder_init, input_norm: see `DepthNet` / docs/faithfulness.md.
    bn_momentum: BatchNorm momentum of the encoder (torch convention; Keras' 0.99 is 0.01); None keeps 0.1.
    """
    spec = get_spec(encoder)
    state = None
    if pretrained is not False:
        from transferdepth.weights import load_imagenet_state

        path = None if pretrained is True else pretrained
        state, _ = load_imagenet_state(encoder, path)
    model = DepthNet(build_encoder(encoder, state), spec, decoder_width, min_depth, max_depth,
                     decoder_act_a=decoder_act_a, bottleneck_relu=bottleneck_relu, decoder_init=decoder_init,
                     input_norm=input_norm)
    if bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = float(bn_momentum)
    return model
