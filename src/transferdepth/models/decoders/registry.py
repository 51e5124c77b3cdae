"""The decoder registry: name -> builder, the encoder strides it needs, its output space and resolution.

A decoder is an `nn.Module` whose forward takes the encoder's features by stride and the (H, W) of the
network's input and returns (N,1,h,w): at H/2 (`output_stride` 2, DenseDepth's) or H (`output_stride` 1;
`DepthNet` averages it 2x2 to H/2, the resolution every loss and the data pipeline work at). Its `init_output_(value)`
starts its output near `value` (in its output space) through its last layer, for `output_init=targets`.

Adding a decoder is one file in this folder ending with one `register_decoder(DecoderSpec(...))` call.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from transferdepth.recipe import OUTPUT_SPACES  # what an output channel holds; converted in `recipe` only


@dataclass(frozen=True)
class DecoderSpec:
    name: str
    # builder(channels, width=, max_depth=, **options) -> nn.Module; channels: stride -> encoder channels
    builder: Callable[..., nn.Module]
    needs: frozenset[int]  # encoder strides it cannot work without
    uses: frozenset[int]  # strides it takes when the encoder has them (a superset of needs)
    output_space: str  # the space it regresses unless a model says otherwise
    output_stride: int  # 1 or 2: the resolution of its output relative to the input
    spaces: tuple[str, ...] = OUTPUT_SPACES  # the output spaces its head can produce
    reference: str = ""  # repository, file and commit of the implementation it follows


_DECODERS: dict[str, DecoderSpec] = {}


def register_decoder(spec: DecoderSpec) -> DecoderSpec:
    if spec.name in _DECODERS:
        raise ValueError(f"decoder '{spec.name}' is registered already")
    if not spec.needs <= spec.uses or spec.output_stride not in (1, 2) or spec.output_space not in spec.spaces:
        raise ValueError(f"decoder '{spec.name}': inconsistent spec {spec}")
    _DECODERS[spec.name] = spec
    return spec


def available_decoders() -> list[str]:
    return sorted(_DECODERS)


def get_decoder(name: str) -> DecoderSpec:
    """The spec of a registered decoder; an unknown name raises ValueError listing the registered ones."""
    if name not in _DECODERS:
        close = difflib.get_close_matches(str(name), list(_DECODERS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown decoder '{name}'{hint}; registered: {', '.join(available_decoders())}")
    return _DECODERS[name]


def build_decoder(name: str, encoder: str, channels: dict[int, int], *, width: float, max_depth: float,
                  output_space: str | None = None, **options) -> nn.Module:
    """The decoder `name` over an encoder giving `channels` (stride -> channels). An encoder without a stride
    the decoder needs, or an output space its head cannot produce, raises ValueError in one line."""
    spec = get_decoder(name)
    missing = sorted(spec.needs - set(channels))
    if missing:
        raise ValueError(f"decoder '{name}' needs encoder features at strides {sorted(spec.needs)}; encoder "
                         f"'{encoder}' has {sorted(channels)} (no stride {', '.join(map(str, missing))})")
    space = output_space or spec.output_space
    if space not in spec.spaces:
        raise ValueError(f"decoder '{name}' cannot output '{space}' (its head gives {', '.join(spec.spaces)})")
    if not width > 0:
        raise ValueError(f"decoder_width must be > 0, got {width}")
    used = {s: c for s, c in channels.items() if s in spec.uses}
    return spec.builder(used, width=width, max_depth=max_depth, **options)
