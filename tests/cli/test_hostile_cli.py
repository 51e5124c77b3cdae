"""Hostile command lines: every usage or input error is one line and exit status 2; exit status 1 means
only "some inputs failed" (README "Errors and exit codes")."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_model
from PIL import Image

from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.utils import atomic_write


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "in" / "room.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def one_line_error(capsys, rc: int, expected_rc: int = 2) -> str:
    """The single stderr line of a failed command (asserting there is exactly one, and the status)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == expected_rc and len(err) == 1, err
    assert err[0].startswith("transferdepth: error: "), err
    return err[0]


# --- --device ----------------------------------------------------------------------------------------


def test_predict_device_banana(ckpt, photo, tmp_path, capsys):
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--device", "banana"])
    line = one_line_error(capsys, rc)
    assert "--device: unknown device 'banana'" in line
    assert not list((tmp_path / "o").glob("*.png"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_predict_device_cuda_without_a_gpu(ckpt, photo, tmp_path, capsys):
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cuda"])
    assert "--device: 'cuda' asked for, but CUDA is not available" in one_line_error(capsys, rc)


def test_export_has_no_device_option(ckpt, tmp_path, capsys):
    """Export always traces on the CPU; --device is refused by the parser (usage line + one error line)."""
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
              "--device", "banana"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "unrecognized arguments: --device banana" in err[-1]


def test_api_device_banana_is_a_value_error():
    from transferdepth.api.estimator import DepthEstimator

    with pytest.raises(ValueError, match="device: unknown device 'banana'"):
        DepthEstimator(tiny_model(), device="banana")


# --- sizes: the message names the flag the user typed -------------------------------------------------


@pytest.mark.parametrize("value", ["0x0", "-5x10", "240", "bananas"])
def test_predict_input_size_names_input_size(ckpt, photo, tmp_path, capsys, value):
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
               f"--input-size={value}"])
    line = one_line_error(capsys, rc)
    assert "--input-size must be" in line and f"'{value}'" in line and "--size " not in line


def test_predict_max_side_negative(ckpt, photo, tmp_path, capsys):
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--max-side", "-1"])
    assert "--max-side must be" in one_line_error(capsys, rc)


def test_demo_size_zero_names_size(capsys):
    rc = main(["demo", "--size", "0x160", "--steps", "1"])
    assert "--size must be two positive integers" in one_line_error(capsys, rc)


@pytest.mark.parametrize("steps", ["0", "100001", "-5"])
def test_demo_steps_out_of_range_names_steps(capsys, tmp_path, steps):
    rc = main(["demo", "--steps", steps, "--out", str(tmp_path / "d")])
    msg = one_line_error(capsys, rc)
    assert "--steps: expected 1 to 100000" in msg and "max_steps" not in msg
    assert not (tmp_path / "d").exists()


# --- outputs that are folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["existing folder", "name ending in /"])
def test_export_out_is_a_folder(ckpt, tmp_path, capsys, kind):
    if kind == "existing folder":
        out = tmp_path / "models"
        out.mkdir()
        arg = str(out)
    else:
        arg = str(tmp_path / "newdir") + "/"
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", arg])
    line = one_line_error(capsys, rc)
    assert f"--out {arg}: is a folder" in line and "model.onnx" in line
    assert not (tmp_path / "newdir").exists()


def test_predict_output_name_that_is_a_folder_names_the_output(ckpt, photo, tmp_path, capsys):
    """One input whose output file name is taken by a folder fails alone (exit 1), and the message names
    that output, not the temp file beside it."""
    out = tmp_path / "o"
    (out / "room_depth_mm.png").mkdir(parents=True)
    other = photo.with_name("other.png")
    other.write_bytes(photo.read_bytes())
    # without --overwrite the taken name is refused before any work (exit 2, one line); with it, that input
    # fails alone when its output cannot replace the folder
    assert main(["predict", str(photo), str(other), "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert not (out / "other_depth_mm.png").exists()
    capsys.readouterr()
    rc = main(["predict", str(photo), str(other), "--checkpoint", str(ckpt), "--out", str(out), "--overwrite"])
    captured = capsys.readouterr()
    assert rc == 1 and (out / "other_depth_mm.png").is_file()
    lines = [ln for ln in captured.err.splitlines() if "room" in ln]
    assert lines and all(str(out / "room_depth_mm.png") in ln and ".tmp" not in ln for ln in lines), lines
    assert "1 of 2 inputs failed" in captured.err


def test_atomic_write_to_a_folder_names_the_output(tmp_path):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(IsADirectoryError) as e, atomic_write(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"x")
    assert e.value.filename == str(tmp_path / "out.png") and ".tmp" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left behind


# --- exported graphs fed the wrong input ------------------------------------------------------------------


def test_torchscript_fed_4_channels_gets_our_message(ckpt, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out)]) == 0
    code = (f"import sys, torch, warnings\nsys.modules['transferdepth'] = None\n"  # transferdepth unimportable
            f"warnings.simplefilter('ignore')\nm = torch.jit.load({str(out)!r})\n"
            "print(tuple(m(torch.rand(1, 3, 50, 70)).shape))\n"
            "for x in (torch.rand(1, 4, 64, 64), torch.rand(1, 3, 64, 64, dtype=torch.float64)):\n"
            "    try:\n        m(x)\n    except Exception as e:\n        print(str(e).strip().splitlines()[-1])\n")
    # a fresh interpreter that cannot import transferdepth: the archive carries its own check
    res = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=300)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and lines[0] == "(1, 1, 50, 70)", res.stderr
    assert lines[1] == "builtins.ValueError: transferdepth: rgb must be (N,3,H,W) float32 RGB in [0,1]; " \
                       "got shape [1, 4, 64, 64]"
    assert lines[2].startswith("builtins.ValueError: transferdepth: rgb must be float32")


def test_onnx_fed_4_channels_is_refused_by_onnxruntime(ckpt, tmp_path):
    """What onnxruntime says (documented in export.py and docs/using.md): the input is declared (N,3,H,W)."""
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match=r"(?s)Got invalid dimensions for input: rgb .*index: 1 Got: 4 Expected: 3"):
        session.run(None, {"rgb": np.zeros((1, 4, 64, 64), np.float32)})


# --- exit codes -----------------------------------------------------------------------------------------


def test_exit_codes_2_for_usage_1_only_for_failed_inputs(ckpt, photo, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", out]) == 0
    capsys.readouterr()
    # an input that is not an image: that input failed -> 1
    bad = photo.with_name("bad.png")
    bad.write_bytes(b"not a png")
    assert main(["predict", str(photo), str(bad), "--checkpoint", str(ckpt), "--out", out, "--overwrite"]) == 1
    capsys.readouterr()
    # a checkpoint that does not exist: usage / input error -> 2, one line
    rc = main(["predict", str(photo), "--checkpoint", str(tmp_path / "none"), "--out", out])
    assert "no such checkpoint" in one_line_error(capsys, rc)
    # an unknown option value: 2
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", out, "--format", "jpeg"])
    assert "--format: unknown format jpeg" in one_line_error(capsys, rc)


def test_a_bug_is_not_reported_as_a_usage_error(monkeypatch, ckpt, photo, tmp_path, capsys):
    """Only the user's errors become one line and exit 2; an internal error prints its traceback and exits
    3 (so 1 keeps meaning "some inputs failed")."""
    import transferdepth.api.predict as predict

    def broken(*a, **k):
        raise KeyError("internal")

    monkeypatch.setattr(predict, "predict_files", broken)
    rc = main(["predict", str(photo), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback (most recent call last)" in err and "KeyError: 'internal'" in err
    assert err.strip().splitlines()[-1].startswith("transferdepth: internal error (KeyError)")


# --- numeric flags: a documented range, checked before any work, the flag named --------------------------

COMPARE = ["compare", "--encoders", "mobilenetv2", "--test-data", "procedural:n=2&seed=0&height=64&width=64"]
TRAIN = ["train", "--train-data", "procedural:n=2&seed=0&height=64&width=64"]
PREDICT = ["predict", "missing.jpg", "--checkpoint", "no-such-checkpoint"]  # refused before either is looked at
# (command line without --out, fragment of the one error line)
NUMERIC_FLAGS = [
    ([*COMPARE, "--seeds", "100000000000000000000000"], "--seeds: seeds must be distinct integers in [0, 4294967295]"),
    ([*COMPARE, "--seeds", "1e23"], "--seeds: seeds must be integers >= 0"),
    ([*COMPARE, "--seeds", "-1"], "--seeds: seeds must be distinct integers in [0, 4294967295]"),
    ([*COMPARE, "--eval-limit", "0"], "--eval-limit must be an integer >= 1 images, got 0"),
    ([*COMPARE, "--seed", "1e23"], "seed must be in [0, 4294967295]"),
    ([*TRAIN, "--seed", "1e23"], "seed must be in [0, 4294967295]"),
    ([*TRAIN, "--seed", "4294967296"], "seed must be in [0, 4294967295]"),
    ([*TRAIN, "--height", "100000"], "height and width must be >= 32 and <= 8192 pixels"),
    ([*TRAIN, "--decoder-width", "20"], "decoder_width must be in (0, 2]"),
    ([*TRAIN, "--batch-size", "100000"], "batch_size must be in [1, 4096]"),
    ([*TRAIN, "--lr", "nan"], "lr must be a finite number"),
    ([*PREDICT, "--batch-size", "100000000"], "--batch-size must be an integer in [1, 4096] images"),
    ([*PREDICT, "--stride", "1000000000000000000000"], "--stride must be an integer in [1, 65536] pixels"),
    ([*PREDICT, "--stride", "0"], "--stride must be an integer in [1, 65536] pixels"),
    ([*PREDICT, "--max-side", "100000000"], "--max-side must be an integer in [0, 16384] pixels"),
    ([*PREDICT, "--max-pixels", "0"], "--max-pixels must be an integer in [1, 1e+09] pixels"),
    ([*PREDICT, "--input-size", "100000x100000"], "--input-size must have sides of at most 8192 pixels"),
    ([*PREDICT, "--input-size", "8000x8000"], "at most 40,000,000 pixels in all"),
]


@pytest.mark.parametrize("argv,message", NUMERIC_FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in NUMERIC_FLAGS])
def test_numeric_flag_out_of_range_is_refused_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([*argv, "--out", str(out)])
    assert message in one_line_error(capsys, rc)
    assert not out.exists()  # nothing created


# --- output folders: never mixed with someone else's files ------------------------------------------------

# (command line without --out, what the refused folder holds, fragment of the one error line)
OUTPUT_FOLDERS = [
    ([*COMPARE], "thesis.tex", "is not empty and is not a study folder (comparison.md, run folders) (it holds "
                               "thesis.tex)"),
    (["demo", "--steps", "1"], "thesis.tex", "is not empty and is not a demo folder (report.html, run/)"),
    ([*TRAIN], "thesis.tex", "is not empty and holds no training run (thesis.tex)"),
]


@pytest.mark.parametrize("argv,holds,message", OUTPUT_FOLDERS, ids=[a[0] for a, _, _ in OUTPUT_FOLDERS])
def test_out_folder_of_other_files_is_refused_and_left_alone(argv, holds, message, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / holds).write_text("mine")
    rc = main([*argv, "--out", str(out)])
    assert message in one_line_error(capsys, rc)
    assert [p.name for p in out.iterdir()] == [holds] and (out / holds).read_text() == "mine"
