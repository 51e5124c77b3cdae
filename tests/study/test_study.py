"""The multi-seed study (`transferdepth.study.compare.run_grid`, `compare --seeds`): the grid, its reuse, the tables'
statistics against an independent computation, scratch variants, folder safety and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as sps

from transferdepth import cli
from transferdepth.evaluation.report import plot_loss_bands
from transferdepth.study.compare import EvalSet, Variant, compare, parse_variant, run_grid
from transferdepth.training.config import ConfigError, load_config

TEST = "procedural:n=3&seed=7&height=64&width=64"
TRAIN = "procedural:n=8&seed=0&height=64&width=64"
METRICS = ("abs_rel", "rmse", "log10")  # (d1 is often exactly 0 after 2 steps: no spread)


def _base(**kw):
    return load_config(overrides=dict(pretrained=False, train_data=TRAIN, height=64, width=64, batch_size=4,
                                      max_steps=2, num_workers=0, tensorboard=False, progress=False, log_every=1)
                       | kw)


def _interval(a):
    """95% t-interval of the mean by scipy (a constant sample: the point itself)."""
    if np.ptp(a) == 0:
        return a.mean(), a.mean()
    return sps.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sps.sem(a))


def test_compare_seeds_tables_match_an_independent_computation(tmp_path):
    out = tmp_path / "study"
    rows = compare(["mobilenetv2", "efficientnet_lite0"], _base(), out, TEST, crop="full", latency_repeats=1,
                   seeds=[0, 1, 2], baseline="efficientnet_lite0")
    for name in ("comparison.md", "comparison.csv", "comparison.html", "loss_curves.png", "predictions.png",
                 "runs.csv"):
        assert (out / name).stat().st_size > 0
    for enc in ("mobilenetv2", "efficientnet_lite0"):
        for seed in (0, 1, 2):
            run = out / enc / f"seed_{seed}"
            assert json.loads((run / "run.json").read_text())["config"]["seed"] == seed
            assert (run / "eval.json").exists()
    per_run = list(csv.DictReader((out / "runs.csv").open()))
    table = {r["encoder"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    vals = {(r["encoder"], int(r["seed"])): r for r in per_run}
    for m in METRICS:
        a = np.array([float(vals["mobilenetv2", s][m]) for s in (0, 1, 2)])
        b = np.array([float(vals["efficientnet_lite0", s][m]) for s in (0, 1, 2)])
        row = table["mobilenetv2"]
        assert float(row[m]) == pytest.approx(a.mean(), rel=1e-6)
        assert float(row[f"{m}_sd"]) == pytest.approx(a.std(ddof=1), rel=1e-6)
        lo, hi = _interval(a)
        assert float(row[f"{m}_ci_lo"]) == pytest.approx(lo, rel=1e-6, abs=1e-9)
        assert float(row[f"{m}_ci_hi"]) == pytest.approx(hi, rel=1e-6, abs=1e-9)
        d = a - b
        assert float(row[f"diff_{m}_mean"]) == pytest.approx(d.mean(), rel=1e-6, abs=1e-9)
        dlo, dhi = _interval(d)
        assert float(row[f"diff_{m}_ci_lo"]) == pytest.approx(dlo, rel=1e-6, abs=1e-9)
        assert float(row[f"diff_{m}_ci_hi"]) == pytest.approx(dhi, rel=1e-6, abs=1e-9)
        assert table["efficientnet_lite0"][f"diff_{m}_mean"] == ""  # the baseline has no difference row
    # seeds matter (different initialisations: different weights) and the table says what it shows
    weights = {(out / "mobilenetv2" / f"seed_{s}" / "checkpoint" / "model.safetensors").read_bytes() for s in (0, 1, 2)}
    assert len(weights) == 3
    md = (out / "comparison.md").read_text()
    assert "Paired difference from efficientnet_lite0" in md and "mobilenetv2 - efficientnet_lite0" in md
    assert "±" in md and "protocol eigen" in md
    assert rows[0]["seeds"] == 3 and rows[0]["abs_rel"] == pytest.approx(float(table["mobilenetv2"]["abs_rel"]))


def test_rerun_with_more_seeds_reuses_finished_runs(tmp_path):
    out, base = tmp_path / "grid", _base()
    tests = [EvalSet("t", TEST, crop="full")]
    first = run_grid([Variant("mobilenetv2", "mobilenetv2")], [0, 1], base, out, tests)
    assert [r.trained for r in first] == [True, True]
    stamp = {s: (out / "mobilenetv2" / f"seed_{s}" / "checkpoint" / "model.safetensors").stat().st_mtime_ns
             for s in (0, 1)}
    log = []
    again = run_grid([Variant("mobilenetv2", "mobilenetv2")], [0, 1, 2], base, out,
                     [*tests, EvalSet("u", "procedural:n=2&seed=9&height=64&width=64", crop="full")], log=log.append)
    assert [r.trained for r in again] == [False, False, True]
    assert sum("reusing" in m for m in log) == 2
    for s in (0, 1):
        assert (out / "mobilenetv2" / f"seed_{s}" / "checkpoint" / "model.safetensors").stat().st_mtime_ns == stamp[s]
        assert again[s].metrics["t"] == first[s].metrics["t"]
        assert again[s].metrics["u"]["n_images"] == 2  # a new test set on a reused run is evaluated
        assert again[s].history and again[s].history == first[s].history
    # a run saved before a config key existed (the key absent from its eval.json) is still the same run,
    # since new keys default to the old behaviour; a key set to another value is not
    ev = out / "mobilenetv2" / "seed_0" / "eval.json"
    saved = json.loads(ev.read_text())
    del saved["fingerprint"]["config"]["lr_schedule"], saved["fingerprint"]["config"]["encoder_lr_mult"]
    ev.write_text(json.dumps(saved))
    assert not run_grid([Variant("mobilenetv2", "mobilenetv2")], [0], base, out, tests)[0].trained
    saved["fingerprint"]["config"]["lr"] = 0.5
    ev.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="--overwrite"):
        run_grid([Variant("mobilenetv2", "mobilenetv2")], [0], base, out, tests)
    # a changed config is another run: refused without overwrite, retrained with it
    changed = _base(max_steps=3)
    with pytest.raises(ConfigError, match="--overwrite"):
        run_grid([Variant("mobilenetv2", "mobilenetv2")], [0], changed, out, tests)
    redo = run_grid([Variant("mobilenetv2", "mobilenetv2")], [0], changed, out, tests, overwrite=True)
    assert redo[0].trained and redo[0].history[-1]["step"] == 3


@pytest.mark.parametrize("text, want", [
    ("mobilenetv2", Variant("mobilenetv2", "mobilenetv2", None, None)),
    ("mobilenetv2:scratch", Variant("mobilenetv2:scratch", "mobilenetv2", False, None)),
    ("timm:resnet18:pretrained", Variant("timm:resnet18:pretrained", "timm:resnet18", True, None)),
    ("timm:resnet18", Variant("timm:resnet18", "timm:resnet18", None, None)),
    ("mobilenetv2@finetune", Variant("mobilenetv2@finetune", "mobilenetv2", None, "finetune")),
    ("mobilenetv2:pretrained@finetune", Variant("mobilenetv2:pretrained@finetune", "mobilenetv2", True, "finetune")),
    ("timm:resnet18@densedepth-2018", Variant("timm:resnet18@densedepth-2018", "timm:resnet18", None,
                                               "densedepth-2018")),
])
def test_parse_variant(text, want):
    assert parse_variant(text) == want


@pytest.mark.parametrize("text, words", [("mobilenetv2@fast", "unknown recipe 'fast'"),
                                         ("@finetune", "names no encoder"), (":scratch", "names no encoder")])
def test_parse_variant_refuses(text, words):
    with pytest.raises(ValueError, match=words):
        parse_variant(text)


def test_scratch_variant_and_safe_folders(tmp_path):
    out = tmp_path / "s"
    base = _base()
    base_pre = base.__class__(**{**base.to_dict(), "pretrained": True})
    weird = "mobilenetv2:scratch"
    runs = run_grid([parse_variant(weird)], None, base_pre, out, [EvalSet("t", TEST, crop="full")])
    run = json.loads((out / "mobilenetv2_scratch" / "run.json").read_text())
    assert run["config"]["pretrained"] is False and run["config"]["encoder"] == "mobilenetv2"
    assert runs[0].run_dir == out / "mobilenetv2_scratch"
    # a row with another recipe trains with that preset (keys set in the base config stay)
    ft = run_grid([parse_variant("mobilenetv2:scratch@finetune")], None, base, out, [EvalSet("t", TEST, crop="full")])
    run = json.loads((out / "mobilenetv2_scratch_finetune" / "run.json").read_text())
    assert run["config"]["recipe"] == "finetune" and run["config"]["batchnorm"] == "frozen"
    assert run["config"]["lr_schedule"] == "cosine" and run["config"]["max_steps"] == base.max_steps
    assert ft[0].trained
    with pytest.raises(ValueError, match="distinct"):
        run_grid([Variant("a/b", "mobilenetv2"), Variant("a_b", "mobilenetv2")], None, base, out,
                 [EvalSet("t", TEST, crop="full")])
    with pytest.raises(ValueError, match="seeds"):
        run_grid([Variant("m", "mobilenetv2")], [0, 0], base, out, [EvalSet("t", TEST, crop="full")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_loss_bands_plot(tmp_path):
    hist = {"a": [[{"step": s, "loss": 1.0 / s + k * 0.01} for s in range(1, 30)] for k in range(3)],
            "b": [[{"step": s, "loss": 2.0 / s} for s in range(1, 20)]], "empty": [[]]}
    path = plot_loss_bands(hist, tmp_path / "bands.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_cli_seeds_from_yaml_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"seeds": [0, 1], "baseline": "mobilenetv2:scratch", "pretrained": False,
                                   "train_data": TRAIN, "height": 64, "width": 64, "batch_size": 4,
                                   "max_steps": 1, "num_workers": 0, "tensorboard": False, "progress": False}))
    args = ["compare", "--encoders", "mobilenetv2:scratch,efficientnet_lite0", "--out", str(tmp_path / "o"),
            "--test-data", TEST, "--crop", "full", "--config", str(cfg)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0 - mobilenetv2:scratch" in out
    assert sorted(p.name for p in (tmp_path / "o" / "efficientnet_lite0").iterdir()) == ["seed_0", "seed_1"]
    for bad in (["--seeds", "0,x"], ["--seeds", "1,1"], ["--baseline", "resnet50"]):
        assert cli.main([*args, *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    cfg.write_text(yaml.safe_dump({"seeds": "zero", "max_steps": 1}))
    assert cli.main(args) == 2


class _Interrupted(Exception):
    pass


class _DiesInSecondEpoch(torch.utils.data.Dataset):
    """The procedural training set, transformed as training does; when armed, it raises in epoch 1 (after the
    checkpoint at step 2: 8 samples, batch 4), as a killed job would stop."""

    armed = False

    def __init__(self, cfg):
        from transferdepth.training.data import open_train_data
        from transferdepth.training.loop import build

        self.inner, _ = open_train_data(cfg, build(cfg))
        self.epoch = 0

    def __len__(self):
        return len(self.inner)

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __getitem__(self, i):
        if self.armed and self.epoch >= 1:
            raise _Interrupted
        return self.inner[i]


def test_an_interrupted_run_on_a_given_dataset_resumes_only_on_the_same_data(tmp_path, monkeypatch):
    out, base = tmp_path / "grid", _base(max_steps=4, ckpt_every=2)
    tests, cell = [EvalSet("t", TEST, crop="full")], [Variant("mobilenetv2", "mobilenetv2")]
    monkeypatch.setattr(_DiesInSecondEpoch, "armed", True)
    with pytest.raises(_Interrupted):
        run_grid(cell, [0], base, out, tests, train_dataset=_DiesInSecondEpoch, data_key="rooms-A")
    run = out / "mobilenetv2" / "seed_0"
    assert json.loads((run / "run.json").read_text())["train_data_label"] == "rooms-A"
    assert (run / "checkpoint").is_dir() and not (run / "eval.json").exists()  # step 2's checkpoint, unfinished
    monkeypatch.setattr(_DiesInSecondEpoch, "armed", False)
    with pytest.raises(ConfigError, match="--overwrite"):  # other data: not this run's continuation
        run_grid(cell, [0], base, out, tests, train_dataset=_DiesInSecondEpoch, data_key="rooms-B")
    log = []
    done = run_grid(cell, [0], base, out, tests, train_dataset=_DiesInSecondEpoch, data_key="rooms-A",
                    log=log.append)
    assert any("resuming" in m for m in log) and done[0].trained
    steps = [h["step"] for h in done[0].history]
    assert steps[-1] == 4 and len(steps) == len(set(steps))  # continued from step 2, no step logged twice
