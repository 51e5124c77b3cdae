"""Training with another decoder, output space and loss: the run trains, its checkpoint records them, and
the loaded model predicts what the trained one did (through the one inference path, in metres)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferdepth.api.estimator import DepthEstimator
from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.training import train
from transferdepth.training.config import ConfigError, load_config

DATA = "procedural:n=8&seed=5&height=64&width=64"


def _cfg(**kw):
    base = dict(encoder="mobilenetv2", pretrained=False, train_data=DATA, height=64, width=64, batch_size=4,
                max_steps=3, num_workers=0, log_every=1, ckpt_every=100, tensorboard=False, progress=False,
                seed=3, decoder_width=0.25)
    return load_config(overrides=base | kw)


@pytest.mark.parametrize(("decoder", "space", "loss"), [
    ("bts", None, "silog"), ("fpn", "log", "berhu"), ("fastdepth", "disparity", "ssi"), ("unet", None, "densedepth"),
])
def test_a_decoder_space_and_loss_train_and_round_trip_through_the_checkpoint(tmp_path, decoder, space, loss):
    torch.manual_seed(0)
    train(_cfg(decoder=decoder, output_space=space, loss=loss), tmp_path / "run")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    saved = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    expected_space = space or {"bts": "metric"}.get(decoder, "depthnorm")
    assert saved["decoder"] == decoder and saved["output_space"] == expected_space
    loaded = load_checkpoint(tmp_path / "run" / "checkpoint")  # strict: every tensor fits the rebuilt network
    assert loaded.decoder_name == decoder and loaded.output_space == expected_space
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    depth = DepthEstimator(loaded, "cpu").predict(rgb)
    assert depth.shape == (48, 64) and 0.1 <= depth.min() and depth.max() <= 10.0


def test_old_checkpoints_load_as_densedepth_regressing_depthnorm(tmp_path):
    train(_cfg(max_steps=1), tmp_path / "run")
    cfg_path = tmp_path / "run" / "checkpoint" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("decoder", "output_space"):
        del cfg[key]
    cfg_path.write_text(json.dumps(cfg))
    model = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert model.decoder_name == "densedepth" and model.output_space == "depthnorm"


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("decoder", "unett", "decoder must be one of"), ("loss", "l2", "loss must be one of"),
    ("output_space", "inverse", "output_space must be one of"),
])
def test_bad_decoder_loss_or_space_is_one_line(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        _cfg(**{key: value})
    assert fragment in str(e.value) and "\n" not in str(e.value)
