"""Key remapping from a mirror's checkpoint naming to the architecture we build."""

from __future__ import annotations

import torch

_LEAF_KINDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def identity(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)


def lukemelas_efficientnet(state: dict[str, torch.Tensor],
                           target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas-style EfficientNet(-Lite) keys (`_blocks.3._expand_conv.weight`) -> timm's
    `tf_efficientnet_liteN` keys (`blocks.1.1.conv_pw.weight`).

    Both name the same tensors in the same order (stem, blocks in execution order, head, classifier), so
    keys are paired by position; every pair must agree in leaf kind (weight, bias, BN statistic) and
    shape, else this raises ValueError, so a mismatch can never load silently.
    """
    src, dst = list(state.items()), list(target.items())
    if len(src) != len(dst):
        raise ValueError(f"checkpoint has {len(src)} tensors, the model {len(dst)}")
    out = {}
    for (ks, v), (kt, t) in zip(src, dst):
        leaf_s, leaf_t = ks.rsplit(".", 1)[-1], kt.rsplit(".", 1)[-1]
        if leaf_s != leaf_t or leaf_s not in _LEAF_KINDS or v.shape != t.shape:
            raise ValueError(f"cannot pair checkpoint key {ks} {tuple(v.shape)} with model key {kt} "
                             f"{tuple(t.shape)}")
        out[kt] = v
    return out


_REMAPS = {"identity": identity, "lukemelas_efficientnet": lukemelas_efficientnet}


def apply(kind: str, state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _REMAPS[kind](state, target)
