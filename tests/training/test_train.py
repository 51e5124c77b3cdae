"""The training loop: exact resume, DDP equivalence, the NaN guard, and refusals before training."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from transferdepth import cli
from transferdepth.training import TrainingDiverged, build, train
from transferdepth.training.config import ConfigError, load_config

DATA = "procedural:n=24&seed=0&height=64&width=64"


def _cfg(**kw):
    base = dict(encoder="mobilenetv2", pretrained=False, train_data=DATA, height=64, width=64, batch_size=4,
                max_steps=6, num_workers=0, log_every=1, ckpt_every=100, tensorboard=False, progress=False,
                seed=3)
    return load_config(overrides=base | kw)


def _weights(run):
    return load_file(run / "checkpoint" / "model.safetensors")


def _assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


class _TorchNoise(torch.utils.data.Dataset):
    """Procedural training samples plus noise from the global torch RNG, so an exact resume needs the RNG
    state of the checkpoint (without restoring it the resumed run sees other noise)."""

    def __init__(self):
        from transferdepth.data import open_dataset
        from transferdepth.data.transforms import TrainTransform, TransformedDataset
        from transferdepth.models import get_spec

        spec = get_spec("mobilenetv2")
        self.ds = TransformedDataset(open_dataset(DATA), TrainTransform(spec.mean, spec.std, (64, 64)), seed=3)

    def set_epoch(self, epoch):
        self.ds.set_epoch(epoch)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = dict(self.ds[i])
        item["image"] = item["image"] + 0.5 * torch.randn(item["image"].shape)
        return item


def _history(run):
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_resume_continues_exactly(tmp_path, capsys):
    """8 steps in one go == 4 steps, stop, resume to 8 (crossing an epoch boundary: 24 samples / 4 = 6 steps),
    also from checkpoint.old (step 2) when checkpoint/ is corrupt: weights bit-equal, history equal."""
    full = train(_cfg(max_steps=8), tmp_path / "full", train_dataset=_TorchNoise())
    assert full.steps == 8
    half = train(_cfg(max_steps=4, ckpt_every=2), tmp_path / "split", train_dataset=_TorchNoise())
    assert half.steps == 4
    assert not torch.equal(_weights(tmp_path / "full")["decoder.conv3.weight"],
                           _weights(tmp_path / "split")["decoder.conv3.weight"])
    shutil.copytree(tmp_path / "split", tmp_path / "old")
    (tmp_path / "old" / "checkpoint" / "train_state.pt").write_bytes(b"corrupt")
    for run in ("split", "old"):
        resumed = train(_cfg(max_steps=8), tmp_path / run, resume=True, train_dataset=_TorchNoise())
        assert resumed.steps == 8
        _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / run))
        assert [r["step"] for r in _history(tmp_path / run)] == list(range(1, 9))
        assert [r["loss"] for r in _history(tmp_path / "full")] == [r["loss"] for r in _history(tmp_path / run)]
    assert "resuming from" in capsys.readouterr().err


def test_resume_from_checkpoint_old_says_so(tmp_path, capsys):
    train(_cfg(max_steps=2, ckpt_every=1), tmp_path / "r")
    (tmp_path / "r" / "checkpoint" / "model.safetensors").write_bytes(b"corrupt")
    assert train(_cfg(max_steps=2), tmp_path / "r", resume=True).steps == 2
    err = capsys.readouterr().err
    assert "model.safetensors is unreadable" in err and "checkpoint.old (step 1)" in err


def test_run_folder_contents(tmp_path):
    train(_cfg(max_steps=2, tensorboard=True, val_data="procedural:n=4&seed=9&height=64&width=64"), tmp_path / "r")
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["seed"] == 3 and run["config"]["encoder"] == "mobilenetv2" and run["torch"] == torch.__version__
    assert {"git_commit", "world_size", "device"} <= run.keys()
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoint").iterdir()) == \
        ["config.json", "model.safetensors", "train_state.pt"]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert 0 <= metrics["d1"] <= 1 and "protocol" in metrics
    assert list((tmp_path / "r" / "tb").glob("events.out.tfevents.*"))


class _Poisoned(torch.utils.data.Dataset):
    """Transformed-style samples; index 5 carries a NaN pixel."""

    def __init__(self, n=16, bad=(5,)):
        g = torch.Generator().manual_seed(0)
        self.items = [{"image": torch.randn(3, 64, 64, generator=g), "depth": 1 + torch.rand(1, 32, 32, generator=g),
                       "valid": torch.ones(1, 32, 32, dtype=torch.bool), "name": str(i)} for i in range(n)]
        for i in bad:
            self.items[i]["image"][0, 0, 0] = float("nan")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_nan_batch_is_skipped_and_counted(tmp_path):
    result = train(_cfg(max_steps=4), tmp_path / "nan", train_dataset=_Poisoned())
    assert result.steps == 4 and result.skipped_steps == 1
    hist = [json.loads(line) for line in (tmp_path / "nan" / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "nan").values())


def test_nan_streak_stops_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        train(_cfg(max_steps=4, nan_patience=3), tmp_path / "div", train_dataset=_Poisoned(bad=range(16)))


def test_bad_config_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(overrides={"batchsize": 4})
    with pytest.raises(ConfigError, match="'lr' must be a float"):
        load_config(overrides={"lr": "fast"})
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("encoder: mobilenetv2\nepochs: many\n")
    assert cli.main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "o")]) == 2
    assert "'epochs' must be a int" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    train(_cfg(max_steps=1), tmp_path / "r")
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):
        train(_cfg(max_steps=1), tmp_path / "r")
    with pytest.raises(ConfigError, match="encoder='mobilenetv2'.*encoder='resnet50'"):
        train(_cfg(max_steps=2, encoder="resnet50"), tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(_cfg(max_steps=1), tmp_path / "empty", resume=True)
    assert train(_cfg(max_steps=1), tmp_path / "r", overwrite=True).steps == 1


def test_cli_train_and_resume(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "c"), "--encoder", "mobilenetv2", "--pretrained", "false",
            "--train-data", DATA, "--height", "64", "--width", "64", "--batch-size", "4", "--num-workers", "0",
            "--tensorboard", "false", "--progress", "false"]
    assert cli.main(args + ["--max-steps", "2"]) == 0
    assert cli.main(["train", "--out", str(tmp_path / "c"), "--resume", "--max-steps", "3"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out


DDP_SCRIPT = r"""
import sys
import torch
import torch.distributed as dist
from transferdepth.training.config import load_config
from transferdepth.training import step as tstep, train

real = tstep.make_optimizer


def make(cfg, params):  # records the gradients the optimizer sees at the first step (rank 0)
    opt = real(cfg, params)

    def save_grads(optimizer, args, kwargs):
        if not getattr(optimizer, "saved", False) and (not dist.is_initialized() or dist.get_rank() == 0):
            optimizer.saved = True
            torch.save([p.grad.clone() for g in optimizer.param_groups for p in g["params"]], sys.argv[1] + ".grads")
    opt.register_step_pre_hook(save_grads)
    return opt


tstep.make_optimizer = make
cfg = load_config(overrides=dict(encoder="mobilenetv2", pretrained=False, train_data=sys.argv[2], height=64,
                                 width=64, batch_size=int(sys.argv[3]), max_steps=3, num_workers=0,
                                 tensorboard=False, progress=False, seed=3, batchnorm="frozen", flip_p=0.0))
train(cfg, sys.argv[1])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_with_double_batch(tmp_path):
    """2 gloo processes x batch 2 == 1 process x batch 4: the gradients of the first step (relative error
    < 1e-4: a gradient scaled by 2 is off by 1.0; Adam's weights alone could not see it) and the weights
    after 3 steps (tolerance 1e-5).

    BatchNorm statistics are per process under DDP on CPU (SyncBatchNorm needs CUDA), so both runs use
    batchnorm=frozen; the procedural target has no holes, so per-process means average to the global mean.
    """
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    data = "procedural:n=16&seed=0&height=64&width=64"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for cmd in ([sys.executable, str(script), str(tmp_path / "one"), data, "4"],
                [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 str(_free_port()), str(script), str(tmp_path / "two"), data, "2"]):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{cmd[2:4]} exited {out.returncode}:\n{out.stderr[:6000]}"
    g1 = torch.cat([g.flatten() for g in torch.load(str(tmp_path / "one") + ".grads")])
    g2 = torch.cat([g.flatten() for g in torch.load(str(tmp_path / "two") + ".grads")])
    assert float((g1 - g2).norm() / g1.norm()) < 1e-4
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    _assert_same(one, two, atol=1e-5)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2


def test_skip_bad_skips_counts_and_reports_each_epoch(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    root = tmp_path / "frames"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"{i:03d}_rgb.png")
        Image.fromarray(np.full((64, 64), 1500 + 100 * i, np.uint16)).save(root / f"{i:03d}_depth.png")
    (root / "003_rgb.png").write_bytes((root / "003_rgb.png").read_bytes()[:100])  # truncated
    spec = f"folder:{root}?rgb=*_rgb.png&depth=*_depth.png&scale=0.001"
    with pytest.raises(Exception, match="003_rgb.png"):
        train(_cfg(train_data=spec, max_steps=4, batch_size=2), tmp_path / "strict")
    result = train(_cfg(train_data=spec, max_steps=8, batch_size=2, skip_bad=True), tmp_path / "lenient")
    assert result.steps == 8
    out = capsys.readouterr().out
    assert "epoch 0: skip_bad: 1 of 8 samples skipped" in out and "epoch 1: skip_bad: 1 of 8" in out


class _FloatImages(torch.utils.data.Dataset):
    """The training set as training opens it, but with float32 normalised images made in the dataset (what
    the loader sent before images crossed the worker boundary as uint8)."""

    def __init__(self, cfg):
        from transferdepth.data import open_dataset
        from transferdepth.data.transforms import TrainTransform, TransformedDataset
        from transferdepth.models import get_spec

        spec = get_spec(cfg.encoder)
        self.ds = TransformedDataset(open_dataset(cfg.train_data), TrainTransform(
            spec.mean, spec.std, (cfg.height, cfg.width), cfg.flip_p, cfg.swap_p), seed=cfg.seed)

    def set_epoch(self, epoch):
        self.ds.set_epoch(epoch)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        assert item["image"].dtype == torch.float32
        return item


def test_uint8_loader_trains_exactly_as_float_images(tmp_path):
    """Training from cfg.train_data (uint8 images from 2 workers, stacked in shared memory, normalised in the
    main process) gives bit-identical losses and weights to float32 images normalised in the dataset, across
    an epoch boundary (16 samples / 4 = 4 steps per epoch)."""
    cfg = _cfg(train_data="procedural:n=16&seed=1&height=80&width=96", max_steps=6, num_workers=2)
    from transferdepth.training import data as tdata

    raw, _ = tdata.open_train_data(cfg, build(cfg))
    assert raw[0]["image"].dtype == torch.uint8  # what the workers send
    a = train(cfg, tmp_path / "uint8")
    b = train(cfg, tmp_path / "float", train_dataset=_FloatImages(cfg))
    assert [r["loss"] for r in _history(tmp_path / "uint8")] == [r["loss"] for r in _history(tmp_path / "float")]
    assert a.steps == b.steps == 6
    _assert_same(_weights(tmp_path / "uint8"), _weights(tmp_path / "float"))


@pytest.mark.parametrize("channels_last", [True, False])
def test_memory_layout_of_training_and_inference(tmp_path, monkeypatch, channels_last):
    """`channels_last` (default true) gives the network channels_last weights and batches in training; inference
    feeds it channels_last input on the CPU whatever the key (the same maths, faster convolutions)."""
    from transferdepth.inference.core import infer
    from transferdepth.training import step as tstep

    seen = []
    built = []
    real_set = tstep.set_memory_format

    def spy(model, cfg):
        out = real_set(model, cfg)
        built.append(model)
        model.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        return out

    monkeypatch.setattr(tstep, "set_memory_format", spy)
    train(_cfg(max_steps=2, channels_last=channels_last), tmp_path / "r")
    (model,) = built
    conv = next(p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert seen == [channels_last] * 2
    seen.clear()
    infer(model.eval(), torch.rand(1, 3, 64, 64), flip=False)
    assert seen == [True]
