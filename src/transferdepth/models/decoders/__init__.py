"""Decoders, one file per architecture over one encoder interface (features by stride), one registration each.

    registry.py    DecoderSpec (builder, the strides it needs, output space and resolution), build_decoder
    densedepth.py  DenseDepth's (the default)         unet.py  U-Net (smp)          fpn.py  FPN (smp)
    bts.py         BTS (dense ASPP + local planar guidance)   fastdepth.py  NNConv5   dpt.py  DPT's CNN form

Each decoder declares the encoder strides it needs (e.g. {4, 8, 16, 32}); any registered or `timm:` encoder
that provides them works, and one that does not is refused in one line. May import: torch, the root conventions (recipe) and this
folder's registry.
"""

from transferdepth.models.decoders import bts, densedepth, dpt, fastdepth, fpn, unet  # noqa: F401 (registrations)
from transferdepth.models.decoders.registry import (
    OUTPUT_SPACES,
    DecoderSpec,
    available_decoders,
    build_decoder,
    get_decoder,
    register_decoder,
)

__all__ = ["OUTPUT_SPACES", "DecoderSpec", "available_decoders", "build_decoder", "get_decoder", "register_decoder"]
