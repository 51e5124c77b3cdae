"""`build_model`: a depth network with its ImageNet encoder weights resolved (cache, hub, mirror or file).

Sits above both `transferdepth.models` (weights-free construction) and `transferdepth.weights` (where the
weights come from), so neither imports the other's caller: weights -> models, build -> weights + models.
"""

from __future__ import annotations

import os

from transferdepth.models import DepthNet, create_model
from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M
from transferdepth.weights import load_imagenet_state


def build_model(encoder: str, decoder_width: float = 0.5,
                pretrained: bool | str | os.PathLike = True, *, min_depth: float = MIN_DEPTH_M,
                max_depth: float = MAX_DEPTH_M, decoder_act_a: bool = True, bottleneck_relu: bool | None = None,
                decoder_init: str = "torch", bn_momentum: float | None = None,
                input_norm: str = "imagenet", decoder: str = "densedepth", output_space: str | None = None) -> DepthNet:
    """A DenseDepth network: (N,3,H,W) normalised RGB -> (N,1,H/2,W/2) DepthNorm.

    pretrained: True = ImageNet weights from the cache / hub / registry mirror (see `transferdepth.weights`),
    a path = ImageNet weights from that file, False = random initialisation (never touches the network).
    The other arguments are `transferdepth.models.create_model`'s.
    """
    state = None
    if pretrained is not False:
        path = None if pretrained is True else pretrained
        state, _ = load_imagenet_state(encoder, path)
    return create_model(encoder, decoder_width, encoder_state=state, min_depth=min_depth, max_depth=max_depth,
                        decoder_act_a=decoder_act_a, bottleneck_relu=bottleneck_relu,
                        decoder_init=decoder_init, bn_momentum=bn_momentum, input_norm=input_norm,
                        decoder=decoder, output_space=output_space)
