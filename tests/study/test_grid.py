"""Grids: encoders x decoders x losses x any training key, per seed (`compare --decoders --losses --vary`).
A tiny grid end to end through the CLI: every cell x seed is one run with the cell's keys, finished runs are
reused, tables carry intervals, paired differences and a verdict, and the Pareto plot is written."""

from __future__ import annotations

import csv
import json

import pytest

from transferdepth import cli
from transferdepth.evaluation.report import pareto_front
from transferdepth.evaluation.stats import paired_difference
from transferdepth.study.compare import grid_variants, verdict

TEST = "procedural:n=2&seed=7&height=64&width=64"
TRAIN = "procedural:n=8&seed=0&height=64&width=64"
FLAGS = ["--pretrained", "false", "--train-data", TRAIN, "--height", "64", "--width", "64", "--batch-size", "4",
         "--max-steps", "2", "--num-workers", "0", "--decoder-width", "0.25", "--progress", "none"]


def test_a_tiny_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["compare", "--encoders", "mobilenetv2", "--decoders", "densedepth,fastdepth", "--losses",
            "densedepth,silog", "--seeds", "0,1", "--test-data", TEST, "--crop", "full", "--out", str(out), *FLAGS]
    assert cli.main(argv) == 0
    cells = ["mobilenetv2|decoder=densedepth|loss=densedepth", "mobilenetv2|decoder=densedepth|loss=silog",
             "mobilenetv2|decoder=fastdepth|loss=densedepth", "mobilenetv2|decoder=fastdepth|loss=silog"]
    table = {r["encoder"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert sorted(table) == sorted(cells)
    for cell in cells:
        decoder, loss = cell.split("|")[1][8:], cell.split("|")[2][5:]
        for seed in (0, 1):
            run = out / f"mobilenetv2_decoder_{decoder}_loss_{loss}" / f"seed_{seed}"
            config = json.loads((run / "run.json").read_text())["config"]
            assert (config["decoder"], config["loss"], config["seed"]) == (decoder, loss, seed)
            saved = json.loads((run / "checkpoint" / "config.json").read_text())
            assert saved["decoder"] == decoder
    base = table[cells[0]]
    assert "verdict" not in base or not base["verdict"]
    for cell in cells[1:]:
        assert table[cell]["verdict"].startswith("d1: ") and "abs_rel: " in table[cell]["verdict"]
        assert float(table[cell]["params_M"]) > 0 and float(table[cell]["gflops_480x640"]) > 0
    for name in ("comparison.md", "comparison.html", "pareto.png", "loss_curves.png", "predictions.png", "runs.csv"):
        assert (out / name).stat().st_size > 0
    assert "pareto.png" in (out / "comparison.html").read_text()
    md = (out / "comparison.md").read_text()  # a cell's "|" is escaped, so the Markdown table keeps its columns
    assert "| mobilenetv2\\|decoder=fastdepth\\|loss=silog |" in md
    capsys.readouterr()
    assert cli.main(argv) == 0  # finished runs are reused: nothing trains again
    log = capsys.readouterr().out
    assert log.count("reusing the finished run") == 8 and "training in" not in log


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--decoders", "unet,unet"], "repeats unet"),
    (["--losses", "densedepth,l2"], "loss must be one of"),
    (["--vary", "batch_size"], "--vary expects KEY=V1,V2"),
    (["--vary", "seed=1,2"], "not a training key that can vary"),
    (["--vary", "nonsense=1,2"], "not a training key that can vary"),
    (["--seeds", "0,0"], "distinct"),
])
def test_bad_grids_are_one_line_before_any_run(tmp_path, capsys, extra, fragment):
    out = tmp_path / "grid"
    argv = ["compare", "--encoders", "mobilenetv2", "--test-data", TEST, "--out", str(out), *FLAGS, *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_grid_cells_cross_every_axis_and_name_only_the_varying_ones():
    cells = grid_variants(["a", "b:scratch"], {"decoder": ["unet", "fpn"], "loss": ["silog"], "batch_size": [4, 16]})
    assert [c.name for c in cells] == [
        "a|decoder=unet|batch_size=4", "a|decoder=unet|batch_size=16", "a|decoder=fpn|batch_size=4",
        "a|decoder=fpn|batch_size=16", "b:scratch|decoder=unet|batch_size=4", "b:scratch|decoder=unet|batch_size=16",
        "b:scratch|decoder=fpn|batch_size=4", "b:scratch|decoder=fpn|batch_size=16"]
    assert dict(cells[-1].overrides) == {"decoder": "fpn", "loss": "silog", "batch_size": 16}
    assert cells[-1].pretrained is False


def test_verdict_says_real_only_when_the_interval_excludes_zero():
    real = paired_difference([0.80, 0.82, 0.81], [0.70, 0.71, 0.70])
    noise = paired_difference([0.80, 0.70, 0.75], [0.75, 0.74, 0.76])
    assert real.lo > 0 and noise.lo < 0 < noise.hi
    assert verdict(real, noise) == "d1: real; abs_rel: noise"


def test_pareto_front_keeps_the_cells_nothing_beats():
    # (cost, quality): the second is beaten by the first (cheaper and better); the third is the best quality
    assert pareto_front([(1.0, 0.8), (2.0, 0.7), (3.0, 0.9), (3.0, 0.85)]) == [0, 2]
