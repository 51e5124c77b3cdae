"""The depth range is a property of a model: a model trained for 80 m (e.g. outdoor) predicts beyond 10 m,
and the range travels with the checkpoint (config.json) to every caller."""

from __future__ import annotations

import numpy as np
import pytest

from transferdepth.data import InMemory, open_dataset
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.evaluation.evaluate import predict_dataset
from transferdepth.inference.checkpoint import load_checkpoint, read_config
from transferdepth.training import train
from transferdepth.training.config import load_config

SCALE = 6.0  # procedural rooms (0.5-10 m) scaled to 3-60 m


class _Far:
    """A dataset whose depth is `SCALE` times another's (a far scene with the same images)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = dict(self.base[i])
        s["depth"] = s["depth"] * SCALE
        return s


@pytest.mark.slow
def test_a_model_with_an_80_m_range_learns_far_depth(tmp_path):
    raw = _Far(InMemory(open_dataset("procedural:n=64&seed=1&height=64&width=64"), (64, 64)))
    cfg = load_config(overrides=dict(encoder="mobilenetv2", height=64, width=64, batch_size=8, max_steps=40,
                                     num_workers=0, seed=0, tensorboard=False, progress=False, max_depth=80.0))
    transform = TrainTransform((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (64, 64), max_depth=80.0)
    train(cfg, tmp_path / "far", train_dataset=TransformedDataset(raw, transform, seed=0))
    assert read_config(tmp_path / "far" / "checkpoint")["max_depth"] == 80.0
    model = load_checkpoint(tmp_path / "far" / "checkpoint")
    assert (model.min_depth, model.max_depth) == (0.1, 80.0)

    p = predict_dataset(model, _Far(open_dataset("procedural:n=8&seed=99&height=64&width=64")))
    ratio = float(np.median(p.pred) / np.median(p.gt[p.valid]))
    # Measured (seeds 0-2, 40 steps): median prediction 0.9-1.1x the truth (~20 m), all pixels beyond 10 m.
    # An untrained model sits at its clamp (80 m, ratio 4); a 10 m model cannot pass 10 m.
    assert 0.5 < ratio < 2.0, ratio
    assert (p.pred > 10.0).mean() > 0.9
