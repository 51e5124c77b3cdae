"""Fine-tuning from a checkpoint (issue 10, item 1): the `init_checkpoint` training key starts a NEW run from
a checkpoint folder's weights, taking its architecture keys and depth range; tested with a DenseDepth-layout
Keras file imported as a KITTI model (0.1-80 m) and trained 2 steps on procedural data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "importers"))  # the Keras file writer's home
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))  # the KITTI layout writer's home
from test_import_densedepth import write_keras_h5  # noqa: E402

from transferdepth.cli import main
from transferdepth.importers import import_densedepth
from transferdepth.inference.checkpoint import load_checkpoint, read_config, save_checkpoint
from transferdepth.models import create_model
from transferdepth.training import resolve_config, train
from transferdepth.training.config import ConfigError, TrainConfig, load_config

DATA = "procedural:n=4&seed=0&height=64&width=64"
RUN = dict(train_data=DATA, height=64, width=64, batch_size=2, max_steps=2, num_workers=0, log_every=1,
           tensorboard=False, progress=False, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """DenseNet-169 on a shared, oversubscribed CPU: one thread is much faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def kitti_ckpt(tmp_path_factory):
    """A small random DenseDepth-layout Keras file (densenet169, decoder 64 filters) imported with --dataset kitti."""
    torch.manual_seed(0)
    src = create_model("densenet169", 64 / 1664, decoder_act_a=True, bottleneck_relu=True, input_norm="none")
    tmp = tmp_path_factory.mktemp("init")
    model, meta = import_densedepth(write_keras_h5(tmp / "kitti.h5", src, act_a=True), dataset="kitti")
    return save_checkpoint(model, tmp / "imported", meta)


def test_a_new_run_starts_from_the_checkpoint_and_takes_its_architecture(kitti_ckpt, tmp_path):
    cfg = resolve_config(load_config(overrides={"init_checkpoint": str(kitti_ckpt), **RUN}))
    assert (cfg.encoder, cfg.decoder_width, cfg.max_depth, cfg.min_depth) == ("densenet169", 64 / 1664, 80.0, 0.1)
    assert (cfg.input_norm, cfg.decoder_act_a, cfg.bottleneck_relu) == ("none", True, True)
    result = train(cfg, tmp_path / "run")
    assert result.steps == 2
    out = result.out_dir / "checkpoint"
    saved = read_config(out)
    assert (saved["encoder"], saved["max_depth"], saved["input_norm"]) == ("densenet169", 80.0, "none")
    init, tuned = load_file(kitti_ckpt / "model.safetensors"), load_file(out / "model.safetensors")
    assert init.keys() == tuned.keys()
    w = "decoder.conv3.weight"
    # Adam at lr 1e-4 moves each weight by <= ~1e-4 a step: 2 steps stay that close to the imported weights
    # (a fresh initialisation would be ~0.1 away) and did change them
    assert 0 < (tuned[w] - init[w]).abs().max() < 5e-4
    assert load_checkpoint(out).max_depth == 80.0  # evaluate / predict / export read it as any checkpoint


def test_a_conflicting_explicit_architecture_key_is_refused_by_name(kitti_ckpt):
    with pytest.raises(ConfigError, match=r"sets encoder='resnet50' \(the checkpoint has 'densenet169'\)"):
        resolve_config(load_config(overrides={"init_checkpoint": str(kitti_ckpt), "encoder": "resnet50", **RUN}))
    with pytest.raises(ConfigError, match=r"max_depth=10.0 \(the checkpoint has 80.0\)"):
        resolve_config(load_config(overrides={"init_checkpoint": str(kitti_ckpt), "max_depth": "10", **RUN}))
    same = resolve_config(load_config(overrides={"init_checkpoint": str(kitti_ckpt), "max_depth": "80",
                                                 "input_norm": "none", **RUN}))
    assert same.max_depth == 80.0
    with pytest.raises(ConfigError, match=r"init_checkpoint: .*not a checkpoint \(no config.json\)"):
        resolve_config(load_config(overrides={"init_checkpoint": str(kitti_ckpt.parent), **RUN}))
    with pytest.raises(ConfigError, match=r"sets encoder='densenet169' \(the checkpoint has 'mobilenetv2'\)"):
        train(TrainConfig(init_checkpoint=str(save_checkpoint(create_model("mobilenetv2"), kitti_ckpt.parent / "m")),
                          **RUN), kitti_ckpt.parent / "never")  # Python API: cfg must equal the checkpoint


def test_cli_flag_is_the_same_key(kitti_ckpt, tmp_path, capsys):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RUN.items()]
    code = main(["train", "--out", str(tmp_path / "x"), f"--init-checkpoint={kitti_ckpt}", "--encoder=resnet50",
                 *flags])
    assert code == 2 and "this config sets encoder='resnet50'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_imported_kitti_model_evaluates_in_one_command(kitti_ckpt, tmp_path):
    """`transferdepth evaluate --protocol kitti` on an imported DenseDepth-layout KITTI model (0.1-80 m)."""
    import json

    from test_kitti import make_kitti

    spec, _ = make_kitti(tmp_path)
    assert main(["evaluate", "--checkpoint", str(kitti_ckpt), "--data", spec, "--protocol", "kitti",
                 "--device", "cpu", "--out", str(tmp_path / "e")]) == 0
    rec = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert rec["n_images"] == 3 and rec["clamp_m"] == [0.1, 80.0] and rec["cap_m"] == 80.0
    assert all(np.isfinite(rec[k]) for k in ("d1", "abs_rel", "rmse", "silog"))
