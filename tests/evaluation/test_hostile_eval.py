"""Hostile input to `transferdepth evaluate`: each named case exits with status 2 and ONE line on stderr
naming the flag, and usage errors are found before anything is evaluated."""

from __future__ import annotations

import pytest
import torch

from transferdepth import cli
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.weights.build import build_model

DATA = "procedural:n=1&seed=0&height=32&width=32"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(build_model("mobilenetv2", pretrained=False), tmp_path_factory.mktemp("ev") / "ckpt")


@pytest.fixture()
def no_evaluation(monkeypatch):
    """Fail the test if evaluation starts (the errors below must be found before it)."""
    import transferdepth.evaluation.evaluate

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate() was called although the arguments are bad")

    monkeypatch.setattr(transferdepth.evaluation.evaluate, "evaluate", refuse)


def _file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


CASES = [  # (name, extra flags (tmp_path -> list), text the one line must contain)
    ("min-depth above max-depth", lambda t: ["--min-depth", "5", "--max-depth", "1"], "--min-depth 5.0 must be below"),
    ("min-depth equals max-depth", lambda t: ["--min-depth", "2", "--max-depth", "2"], "must be below --max-depth"),
    ("min-depth above the model's max", lambda t: ["--min-depth", "20"], "--min-depth/--max-depth"),
    ("negative min-depth", lambda t: ["--min-depth", "-1"], "--min-depth must be a finite depth > 0"),
    ("nan max-depth", lambda t: ["--max-depth", "nan"], "--max-depth must be a finite depth > 0"),
    ("negative limit", lambda t: ["--limit", "-1"], "--limit must be >= 1"),
    ("zero limit", lambda t: ["--limit", "0"], "--limit must be >= 1"),
    ("zero batch size", lambda t: ["--batch-size", "0"], "--batch-size must be in [1, 1024] (images), got 0"),
    ("huge batch size", lambda t: ["--batch-size", "100000"], "--batch-size must be in [1, 1024]"),
    ("zero size", lambda t: ["--size", "0x0"], "--size must be HEIGHTxWIDTH with each side in [1, 8192]"),
    ("huge size", lambda t: ["--size", "100000x100000"], "--size must be HEIGHTxWIDTH with each side in [1, 8192]"),
    ("inf max-depth", lambda t: ["--max-depth", "inf"], "--max-depth must be a finite depth > 0"),
    ("out is a file", lambda t: ["--out", str(_file(t))], "exists and is not a folder"),
    ("out under a file", lambda t: ["--out", str(_file(t) / "sub")], "cannot write there"),
    ("junk device", lambda t: ["--device", "tpu9"], "--device: unknown device 'tpu9'"),
    ("bad crop", lambda t: ["--crop", "1,2"], "--crop must be 'full' or four integers"),
    ("bad size", lambda t: ["--size", "big"], "--size must be HEIGHTxWIDTH"),
]
if not torch.cuda.is_available():
    CASES.append(("cuda on a machine without it", lambda t: ["--device", "cuda:0"], "CUDA is not available"))


@pytest.mark.parametrize("flags, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_evaluate_arguments_exit_2_with_one_line(flags, expected, ckpt, tmp_path, capsys, no_evaluation):
    code = cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", DATA, *flags(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("transferdepth: error: ")
    assert expected in err


def test_out_folder_is_created_and_evaluation_runs(ckpt, tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", DATA, "--crop", "full", "--device", "cpu",
                     "--min-depth", "0.5", "--out", str(out)]) == 0
    import json

    rec = json.loads((out / "metrics.json").read_text())
    assert rec["clamp_m"] == [0.5, 10.0] and rec["n_images"] == 1
