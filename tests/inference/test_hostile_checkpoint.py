"""Hostile checkpoints: config.json values out of range, non-finite weights, and config.json files that are
not small regular files. Each is refused in one line naming the file, the field or tensor and what was
expected, before a network is built where the value decides its size. One row per case."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import transferdepth.inference.checkpoint as ck
from transferdepth.cli import main
from transferdepth.inference.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint
from transferdepth.models import create_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ck") / "mobilenet"
    ck.save_checkpoint(create_model("mobilenetv2", 0.5), d)
    return d


def _copy(saved, tmp_path, cfg_edit=None):
    d = tmp_path / "ck"
    d.mkdir()
    (d / WEIGHTS_FILE).write_bytes((saved / WEIGHTS_FILE).read_bytes())
    cfg = json.loads((saved / CONFIG_FILE).read_text())
    (d / CONFIG_FILE).write_text(json.dumps(cfg_edit(cfg) if cfg_edit else cfg))  # json writes NaN as a hand edit
    return d


@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a network was built from a config.json value out of range")

    monkeypatch.setattr(ck, "create_model", refuse)


# (field, value, fragment of the one line): refused before any network is built (12-120 GB for the widths)
OUT_OF_RANGE = [
    ("decoder_width", 20, "field 'decoder_width' must be a number in (0, 2], got 20"),
    ("decoder_width", 1e9, "field 'decoder_width' must be a number in (0, 2], got 1000000000.0"),
    ("decoder_width", -0.5, "field 'decoder_width' must be a number in (0, 2]"),
    ("pad_multiple", 100000, "field 'pad_multiple' must be an integer in [1, 64], got 100000"),
    ("pad_multiple", 65, "field 'pad_multiple' must be an integer in [1, 64]"),
    ("mean", [float("nan"), 0.456, 0.406], "field 'mean' must be three finite numbers (R, G, B), got [nan"),
    ("mean", [0.485, 0.456], "field 'mean' must be three finite numbers"),
    ("std", [0.0, 0.224, 0.225], "field 'std' must be three finite numbers > 0 (R, G, B), got [0.0"),
    ("std", [0.229, float("inf"), 0.225], "field 'std' must be three finite numbers > 0"),
    ("max_depth_cm", -1, "field 'max_depth_cm' must be a finite number > 0 (centimetres)"),
    ("format", "transferdepth-model/9", "field 'format' must be 'transferdepth-model/1'"),
]


@pytest.mark.parametrize("field,value,message", OUT_OF_RANGE, ids=[f"{f}={v!r}" for f, v, _ in OUT_OF_RANGE])
def test_config_value_out_of_range_is_named_before_building(field, value, message, saved, tmp_path, nothing_built):
    d = _copy(saved, tmp_path, lambda c: c | {field: value})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    assert str(e.value).startswith(f"{d / CONFIG_FILE}: ") and message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [("mean", [0.5, 0.5, 0.5]), ("std", [1.0, 1.0, 1.0])])
def test_normalisation_that_is_not_the_models_is_refused(field, value, saved, tmp_path):
    """mean/std are what the model applies (its encoder's, for input_norm imagenet): a file that says otherwise
    was edited or belongs to another model, and silently ignoring it would predict with the other values."""
    d = _copy(saved, tmp_path, lambda c: c | {field: value})
    with pytest.raises(CheckpointError, match=rf"field '{field}' is \[.*\], but a mobilenetv2 model with input_norm "
                                              r"'imagenet' applies \["):
        load_checkpoint(d)


# (tensor, index, value)
NON_FINITE = [("decoder.conv3.weight", 0, float("nan")), ("decoder.up2.convA.bias", 3, float("inf")),
              ("encoder.body.conv_stem.weight", 5, float("-inf"))]


@pytest.mark.parametrize("tensor,index,value", NON_FINITE, ids=[f"{t} {v}" for t, _, v in NON_FINITE])
def test_non_finite_weights_are_refused_naming_the_tensor(tensor, index, value, saved, tmp_path, capsys):
    d = _copy(saved, tmp_path)
    state = load_file(d / WEIGHTS_FILE)
    if tensor not in state:  # encoder names differ between timm versions: take the first encoder weight
        tensor = next(k for k in state if k.startswith("encoder.") and state[k].is_floating_point())
    state[tensor].view(-1)[index] = value
    save_file(state, str(d / WEIGHTS_FILE))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    assert f"{d / WEIGHTS_FILE}: tensor '{tensor}' holds NaN or infinite values" in str(e.value)
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(photo)
    rc = main(["predict", str(photo), "--checkpoint", str(d), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"tensor '{tensor}'" in err[0], err
    assert not (tmp_path / "o" / "p_depth_mm.png").exists()


def _fifo(path):
    os.mkfifo(path)


def _dev_zero(path):
    os.symlink("/dev/zero", path)


def _nested(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


def _huge(path):
    path.write_text('{"encoder": "mobilenetv2", "decoder_width": 0.5, "meta": "' + "x" * (2 << 20) + '"}')


def _folder(path):
    path.mkdir()


# (how config.json is made, fragment of the one line)
BAD_FILES = [
    (_fifo, "is a FIFO (named pipe), expected a checkpoint config.json (a regular file)"),
    (_dev_zero, "is a device, expected a checkpoint config.json"),
    (_nested, "JSON nested too deeply"),
    (_huge, "larger than 1048576 bytes"),
    (_folder, "is a folder, expected a checkpoint config.json"),
]


@pytest.mark.timeout(60)  # a FIFO read without a writer would block forever
@pytest.mark.parametrize("make,message", BAD_FILES, ids=[m.__name__[1:] for m, _ in BAD_FILES])
def test_config_json_that_is_not_a_small_regular_file(make, message, saved, tmp_path, capsys):
    d = _copy(saved, tmp_path)
    (d / CONFIG_FILE).unlink()
    make(d / CONFIG_FILE)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    assert str(e.value).startswith(str(d / CONFIG_FILE)) and message in str(e.value) and "\n" not in str(e.value)
    rc = main(["export", "--checkpoint", str(d), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
