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


@pytest.mark.parametrize(("decoder", "output_init", "mode"), [
    ("unet", "auto", "targets"), ("densedepth", "auto", "reference"), ("densedepth", "targets", "targets"),
    ("fastdepth", "reference", "reference"),
])
def test_output_init_starts_the_head_at_the_mean_training_target(tmp_path, decoder, output_init, mode):
    """auto: the DenseDepth decoder keeps its reference start; the others start at the mean target (in the
    output space) of up to 32 training samples, recorded in run.json. The mean is recomputed here from the data."""
    from transferdepth.data import open_dataset
    from transferdepth.recipe import depth_to_output

    train(_cfg(decoder=decoder, output_init=output_init, max_steps=1), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())["output_init"]
    assert info["mode"] == mode
    if mode == "reference":
        assert "value" not in info
        return
    raw = open_dataset(DATA)  # 8 samples, all read; targets at half resolution, as the network's output
    targets = []
    for i in range(len(raw)):
        d = torch.nn.functional.avg_pool2d(torch.as_tensor(raw[i]["depth"], dtype=torch.float32)[None, None], 2)
        targets.append(depth_to_output(d[d > 0], "depthnorm", 10.0, 0.1))
    assert info["space"] == "depthnorm"
    assert info["value"] == pytest.approx(float(torch.cat(targets).mean()), rel=0.02)


def test_a_grid_run_saved_before_output_init_is_reused_for_densedepth_only():
    from transferdepth.study.compare import _same_config

    old_dense = {"decoder": "densedepth", "seed": 0}
    old_unet = {"decoder": "unet", "seed": 0}
    now = {"decoder": "densedepth", "seed": 0, "output_init": "auto"}
    assert _same_config(old_dense, now)
    assert _same_config(old_dense, {**now, "output_init": "reference"})
    assert not _same_config(old_dense, {**now, "output_init": "targets"})
    assert not _same_config(old_unet, {**now, "decoder": "unet"})
    assert not _same_config(old_unet, {**now, "decoder": "unet", "output_init": "reference"})
    assert _same_config({**old_unet, "output_init": "targets"}, {**now, "decoder": "unet"})
