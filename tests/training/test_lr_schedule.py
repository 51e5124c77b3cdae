"""Learning-rate schedule and per-part learning rates (the `finetune` recipe's keys): the lr each step
really uses, and an exact resume under a schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import hooked_make_optimizer
from safetensors.torch import load_file

from transferdepth.models import create_model
from transferdepth.training import step as tstep
from transferdepth.training import train
from transferdepth.training.config import ConfigError, load_config

DATA = "procedural:n=16&seed=0&height=64&width=64"


def _cfg(**kw):
    base = dict(encoder="mobilenetv2", pretrained=False, train_data=DATA, height=64, width=64, batch_size=4,
                max_steps=8, num_workers=0, log_every=1, ckpt_every=100, tensorboard=False, progress=False,
                seed=1, lr=1e-3)
    return load_config(overrides=base | kw)


def test_lr_factor_warmup_then_cosine_by_formula():
    cfg = _cfg(warmup_ratio=0.2, lr_schedule="cosine")  # 4 of 20 steps
    got = [tstep.lr_factor(s, 20, cfg) for s in range(20)]
    want = [(s + 1) / 4 for s in range(4)] + [0.5 * (1 + math.cos(math.pi * (s - 4) / 16)) for s in range(4, 20)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[3] == 1.0 and got[4] == 1.0 and got[-1] < 0.01  # peak after the warm-up, ~0 at the end
    assert all(a >= b for a, b in zip(got[4:], got[5:]))  # monotone decay
    constant = _cfg(warmup_ratio=0.2)  # 2 of 10
    assert [tstep.lr_factor(s, 10, constant) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert [tstep.lr_factor(s, 10, _cfg()) for s in range(3)] == [1.0, 1.0, 1.0]  # the DenseDepth default


def test_encoder_group_gets_the_multiplied_lr():
    model = create_model("mobilenetv2")
    cfg = _cfg(encoder_lr_mult=0.1)
    opt = tstep.make_optimizer(cfg, model)
    groups = {g["name"]: g for g in opt.param_groups}
    assert opt.param_groups[0]["name"] == "decoder"  # history.jsonl's "lr" is the decoder's
    assert groups["encoder"]["lr"] == pytest.approx(1e-4) and groups["decoder"]["lr"] == pytest.approx(1e-3)
    enc = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} == enc
    assert len(groups["decoder"]["params"]) + len(enc) == len(list(model.parameters()))
    tstep.set_lr(opt, cfg, 0.5)
    assert groups["encoder"]["lr"] == pytest.approx(5e-5) and groups["decoder"]["lr"] == pytest.approx(5e-4)
    assert len(tstep.make_optimizer(_cfg(), model).param_groups) == 1  # default: one group, as before


def test_training_applies_the_schedule_each_step(tmp_path, monkeypatch):
    """The lr the optimizer holds at each step (history.jsonl) follows lr x lr_factor; encoder x mult."""
    seen = []
    monkeypatch.setattr(tstep, "make_optimizer", hooked_make_optimizer(lambda opt: opt.register_step_pre_hook(
        lambda o, a, k: seen.append([g["lr"] for g in o.param_groups]))))
    cfg = _cfg(warmup_ratio=0.375, lr_schedule="cosine", encoder_lr_mult=0.25)  # 3 of 8 steps
    train(cfg, tmp_path / "r")
    monkeypatch.undo()
    want = [1e-3 * tstep.lr_factor(s, 8, cfg) for s in range(8)]
    assert [d for d, _ in seen] == pytest.approx(want, rel=1e-12)
    assert [e for _, e in seen] == pytest.approx([0.25 * w for w in want], rel=1e-12)
    history = [json.loads(line) for line in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in history] == pytest.approx(want, rel=1e-12)


class _Interrupt(Exception):
    pass


def test_resume_under_a_schedule_is_exact(tmp_path, monkeypatch):
    """Cosine + warm-up + two groups: interrupted after step 4 (checkpoint at 4), resumed to 8 == 8 in one
    go, bit-equal weights. (The schedule spans the run's max_steps, so the interrupted run must have 8 too.)"""
    kw = dict(warmup_ratio=0.25, lr_schedule="cosine", encoder_lr_mult=0.1, ckpt_every=4)
    train(_cfg(**kw), tmp_path / "full")
    calls = [0]

    def stop(o, a, k):
        calls[0] += 1
        if calls[0] == 5:
            raise _Interrupt

    monkeypatch.setattr(tstep, "make_optimizer", hooked_make_optimizer(lambda opt: opt.register_step_pre_hook(stop)))
    with pytest.raises(_Interrupt):
        train(_cfg(**kw), tmp_path / "split")
    monkeypatch.undo()
    assert json.loads((tmp_path / "split" / "history.jsonl").read_text().splitlines()[-1])["step"] == 4
    assert train(_cfg(**kw), tmp_path / "split", resume=True).steps == 8
    a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kw, words", [
    (dict(encoder_lr_mult=0), "encoder_lr_mult must be > 0"),
    (dict(warmup_ratio=-0.1), r"warmup_ratio must be in \[0, 1\)"),
    (dict(warmup_ratio=1.0), r"warmup_ratio must be in \[0, 1\)"),
    (dict(lr_schedule="linear"), "lr_schedule must be one of constant, cosine"),
])
def test_bad_schedule_keys_are_refused(kw, words):
    with pytest.raises(ConfigError, match=words):
        _cfg(**kw)
