"""Shared test helpers (imported by test modules: `from helpers import tiny_model`)."""

from __future__ import annotations

from pathlib import Path

import torch

from transferdepth.weights.build import build_model

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""


def tiny_model(seed: int = 0):
    """MobileNetV2 (random weights), decoder width 0.5. Random weights give DepthNorm ~0.01 everywhere, i.e.
    10 m after clamping; scaling the last conv spreads the prediction over about 2-5 m so values are informative."""
    torch.manual_seed(seed)
    model = build_model("mobilenetv2", decoder_width=0.5, pretrained=False).eval()
    with torch.no_grad():
        model.decoder.conv3.weight.mul_(100.0)
        model.decoder.conv3.bias.fill_(2.8)
    return model


def hooked_make_optimizer(on_optimizer):
    """A stand-in for `train.step.make_optimizer` that builds the real optimizer, then hands it to
    `on_optimizer(opt)` (to register step hooks) before training uses it; monkeypatch it into `train.step`."""
    from transferdepth.training import step as tstep

    real = tstep.make_optimizer

    def make(cfg, model):
        opt = real(cfg, model)
        on_optimizer(opt)
        return opt

    return make
