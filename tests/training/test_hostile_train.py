"""Hostile inputs to training (issue 8), one named case each: a regression fails by its name.

Each case gets a fresh tmp folder and a ready 1-step run (`ctx.run`, copied from one trained per session)."""

from __future__ import annotations

import errno
import json
import shutil
import types

import numpy as np
import pytest
import torch
from helpers import hooked_make_optimizer
from PIL import Image
from safetensors.torch import load_file

from transferdepth import cli
from transferdepth.study.compare import compare, run_folder_name
from transferdepth.training import CheckpointWriteError, TrainingDiverged, train
from transferdepth.training import step as tstep
from transferdepth.training.config import ConfigError, load_config
from transferdepth.training.state import truncate_history

DATA = "procedural:n=8&seed=0&height=64&width=64"
BASE = dict(encoder="mobilenetv2", pretrained=False, train_data=DATA, height=64, width=64, batch_size=4,
            max_steps=1, num_workers=0, log_every=1, ckpt_every=100, tensorboard=False, progress=False, seed=3)
FLAGS = ["--encoder", "mobilenetv2", "--pretrained", "false", "--train-data", DATA, "--height", "64", "--width",
         "64", "--batch-size", "4", "--num-workers", "0", "--tensorboard", "false", "--progress", "false",
         "--max-steps", "1"]


def _cfg(**kw):
    return load_config(overrides=BASE | kw)


def _frames(root, n=8, zero=range(8)):
    """A folder dataset of n 64x64 frames; frames in `zero` have all-zero (invalid) depth."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"{i:03d}_rgb.png")
        Image.fromarray(np.full((64, 64), 0 if i in zero else 2000, np.uint16)).save(root / f"{i:03d}_depth.png")
    return f"folder:{root}?rgb=*_rgb.png&depth=*_depth.png&scale=0.001"


def _ckpt_step(run):
    return json.loads((run / "checkpoint" / "config.json").read_text())["meta"]["step"]


def _intact(run):
    assert (run / "run.json").exists() and _ckpt_step(run) == 1
    assert all(torch.isfinite(v).all() for v in load_file(run / "checkpoint" / "model.safetensors").values())


def _poisoning_optimizer(at_step):
    calls = [0]

    def hook(optimizer, args, kwargs):
        calls[0] += 1
        if calls[0] == at_step:
            with torch.no_grad():
                p = optimizer.param_groups[0]["params"][0]
                p[(0,) * p.dim()] = float("nan")  # in place whatever the memory layout (channels_last)
    return hooked_make_optimizer(lambda opt: opt.register_step_post_hook(hook))


# --- item 1: --overwrite never loses the old run; nothing deleted outside --out ----------------------------------

def overwrite_with_unavailable_weights_keeps_the_run(ctx):
    code = cli.main(["train", "--out", str(ctx.run), "--overwrite", *FLAGS, "--pretrained", "true",
                     "--encoder-weights", str(ctx.tmp / "missing.pth")])
    assert code == 2
    _intact(ctx.run)
    assert not list(ctx.tmp.glob(".*replaced*"))


def overwrite_with_a_missing_train_file_keeps_the_run(ctx):
    code = cli.main(["train", "--out", str(ctx.run), "--overwrite", *FLAGS, "--train-data",
                     f"folder:{ctx.tmp / 'nope'}?rgb=*.png&depth=*.png"])
    assert code == 2 and "nope" in ctx.capsys.readouterr().err
    _intact(ctx.run)


def overwrite_failing_before_its_first_checkpoint_restores_the_run(ctx):
    ctx.monkeypatch.setattr(tstep, "make_optimizer", _poisoning_optimizer(at_step=1))
    with pytest.raises(TrainingDiverged):
        train(_cfg(max_steps=2), ctx.run, overwrite=True)
    _intact(ctx.run)
    assert not list(ctx.tmp.glob(".*replaced*"))


def overwrite_replaces_a_run_and_leaves_nothing_aside(ctx):
    assert train(_cfg(max_steps=2), ctx.run, overwrite=True).steps == 2
    assert _ckpt_step(ctx.run) == 2 and not list(ctx.tmp.glob(".*replaced*"))


def folder_with_other_files_is_refused_without_suggesting_overwrite(ctx):
    (ctx.tmp / "mine").mkdir()
    (ctx.tmp / "mine" / "thesis.tex").write_text("precious")
    for flags in ([], ["--overwrite"]):
        assert cli.main(["train", "--out", str(ctx.tmp / "mine"), *flags, *FLAGS]) == 2
        err = ctx.capsys.readouterr().err
        assert "holds no training run" in err and "--overwrite" not in err
    assert (ctx.tmp / "mine" / "thesis.tex").read_text() == "precious"


def compare_encoder_names_cannot_escape_the_study_folder(ctx):
    (ctx.tmp / "victim").mkdir()
    (ctx.tmp / "victim" / "keep.txt").write_text("x")
    study = ctx.tmp / "a" / "study"
    assert run_folder_name("timm:x/../../victim") == "timm_x_.._.._victim"
    assert run_folder_name("..") == "_"
    with pytest.raises(ValueError, match="timm model"):  # no such encoder; what matters is what was deleted
        compare(["timm:x/../../victim"], _cfg(), study, DATA, overwrite=True)
    assert (ctx.tmp / "victim" / "keep.txt").exists()
    assert all(p.resolve().parent == study.resolve() for p in study.iterdir())


# --- item 5: a non-finite model is never written -----------------------------------------------------------------

def weight_made_non_finite_by_a_step_stops_before_its_checkpoint(ctx):
    ctx.monkeypatch.setattr(tstep, "make_optimizer", _poisoning_optimizer(at_step=2))
    with pytest.raises(TrainingDiverged, match="made a weight non-finite"):
        train(_cfg(max_steps=3, ckpt_every=1), ctx.tmp / "r")
    assert _ckpt_step(ctx.tmp / "r") == 1
    for d in ("checkpoint", "checkpoint.old"):
        if (ctx.tmp / "r" / d).exists():
            assert all(torch.isfinite(v).all() for v in load_file(ctx.tmp / "r" / d / "model.safetensors").values())


def infinite_gradient_with_finite_loss_is_skipped_without_grad_clip(ctx):
    real = tstep.make_optimizer

    def make(cfg, model):
        list(model.parameters())[-1].register_hook(lambda g: g * float("inf"))
        return real(cfg, model)
    ctx.monkeypatch.setattr(tstep, "make_optimizer", make)
    with pytest.raises(TrainingDiverged, match="2 steps in a row"):
        train(_cfg(max_steps=3, nan_patience=2), ctx.tmp / "r")
    assert not (ctx.tmp / "r" / "checkpoint").exists()


# --- item 6: validation problems never cost the training ---------------------------------------------------------

def validation_set_without_valid_pixels_is_refused_before_training(ctx):
    spec = _frames(ctx.tmp / "val", n=4, zero=range(4))
    with pytest.raises(ConfigError, match="val_data.*none of its 4 images has a valid depth pixel"):
        train(_cfg(val_data=spec), ctx.tmp / "r")
    assert not (ctx.tmp / "r").exists()


def checkpoint_of_a_step_is_written_before_it_is_validated(ctx):
    from transferdepth.training import loop

    def broken(*args, **kwargs):
        raise RuntimeError("validation broke")
    ctx.monkeypatch.setattr(loop, "validate_and_log", broken)
    with pytest.raises(RuntimeError, match="validation broke"):
        train(_cfg(max_steps=2, val_data=DATA), ctx.tmp / "r")
    assert _ckpt_step(ctx.tmp / "r") == 2


# --- item 10: history.jsonl is cut back to the checkpoint on resume ----------------------------------------------

def history_is_cut_back_to_the_checkpoint_step(ctx):
    path = ctx.tmp / "history.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    truncate_history(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


# --- item 11: devices, sizes, a full disk, a corrupt state ------------------------------------------------------

def unknown_device_is_one_line_naming_device(ctx):
    assert cli.main(["train", "--out", str(ctx.tmp / "r"), *FLAGS, "--device", "banana"]) == 2
    assert "--device" in ctx.capsys.readouterr().err and not (ctx.tmp / "r").exists()


def cuda_without_a_gpu_is_one_line(ctx):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli.main(["train", "--out", str(ctx.tmp / "r"), *FLAGS, "--device", "cuda"]) == 2
    assert "CUDA is not available" in ctx.capsys.readouterr().err


def odd_input_size_is_refused_with_the_reason(ctx):
    assert cli.main(["train", "--out", str(ctx.tmp / "r"), *FLAGS, "--height", "66", "--width", "33"]) == 2
    assert "must be even" in ctx.capsys.readouterr().err


def full_disk_while_checkpointing_names_the_file_and_keeps_the_previous(ctx):
    real_save, calls = torch.save, [0]

    def save(obj, f, *a, **kw):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)
    ctx.monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointWriteError, match=r"train_state\.pt.*No space left.*previous checkpoint.*intact"):
        train(_cfg(max_steps=2, ckpt_every=1), ctx.tmp / "r")
    assert _ckpt_step(ctx.tmp / "r") == 1 and not (ctx.tmp / "r" / "checkpoint.new").exists()
    ctx.monkeypatch.setattr(torch, "save", real_save)
    assert train(_cfg(max_steps=2), ctx.tmp / "r", resume=True).steps == 2


def corrupt_train_state_without_a_previous_names_the_file(ctx):
    shutil.rmtree(ctx.run / "checkpoint.old", ignore_errors=True)
    (ctx.run / "checkpoint" / "train_state.pt").write_bytes(b"not a zip")
    assert cli.main(["train", "--out", str(ctx.run), "--resume", "--max-steps", "2"]) == 2
    assert "train_state.pt is unreadable" in ctx.capsys.readouterr().err


def huge_run_json_is_refused_on_resume_without_reading_it_all(ctx):
    saved = json.loads((ctx.run / "run.json").read_text())  # a valid run.json, padded past the 1 MiB cap
    (ctx.run / "run.json").write_text(json.dumps(saved | {"pad": "x" * (2 << 20)}))
    assert cli.main(["train", "--out", str(ctx.run), "--resume", "--max-steps", "2"]) == 2
    err = ctx.capsys.readouterr().err
    assert "run.json is not a run.json of transferdepth" in err and len(err.strip().splitlines()) == 1


# --- item 12: depth without valid pixels ------------------------------------------------------------------------

def all_empty_training_depth_is_refused(ctx):
    spec = _frames(ctx.tmp / "frames", zero=range(8))
    assert cli.main(["train", "--out", str(ctx.tmp / "r"), *FLAGS, "--train-data", spec, "--max-steps", "2"]) == 2
    assert "none of the 8 samples of epoch 0 has a valid depth pixel" in ctx.capsys.readouterr().err


def some_empty_training_samples_are_counted_each_epoch(ctx):
    spec = _frames(ctx.tmp / "frames", zero=(1, 5, 6))
    train(_cfg(train_data=spec, max_steps=4), ctx.tmp / "r")
    out = ctx.capsys.readouterr().out
    assert "epoch 0: 3 of 8 training samples have no valid depth pixel" in out
    assert "epoch 1: 3 of 8" in out


CASES = [overwrite_with_unavailable_weights_keeps_the_run, overwrite_with_a_missing_train_file_keeps_the_run,
         overwrite_failing_before_its_first_checkpoint_restores_the_run,
         overwrite_replaces_a_run_and_leaves_nothing_aside,
         folder_with_other_files_is_refused_without_suggesting_overwrite,
         compare_encoder_names_cannot_escape_the_study_folder,
         weight_made_non_finite_by_a_step_stops_before_its_checkpoint,
         infinite_gradient_with_finite_loss_is_skipped_without_grad_clip,
         validation_set_without_valid_pixels_is_refused_before_training,
         checkpoint_of_a_step_is_written_before_it_is_validated, history_is_cut_back_to_the_checkpoint_step,
         unknown_device_is_one_line_naming_device, cuda_without_a_gpu_is_one_line,
         odd_input_size_is_refused_with_the_reason,
         full_disk_while_checkpointing_names_the_file_and_keeps_the_previous,
         corrupt_train_state_without_a_previous_names_the_file,
         huge_run_json_is_refused_on_resume_without_reading_it_all, all_empty_training_depth_is_refused,
         some_empty_training_samples_are_counted_each_epoch]


@pytest.fixture(scope="session")
def one_step_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    train(_cfg(), out)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile(case, tmp_path, one_step_run, monkeypatch, capsys):
    shutil.copytree(one_step_run, tmp_path / "keep")
    case(types.SimpleNamespace(tmp=tmp_path, run=tmp_path / "keep", monkeypatch=monkeypatch, capsys=capsys))
