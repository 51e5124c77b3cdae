"""Checkpoint config.json: architecture keys round-trip, old checkpoints load as before, bad fields are named."""

from __future__ import annotations

import json

import pytest
import torch

from transferdepth.inference.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from transferdepth.models import create_model


def _same_outputs(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_densedepth_2018_shape_round_trips_exactly(tmp_path):
    # the paper's / nyu.h5's DenseNet-169: width 1.0, no activation after convA; plus other non-defaults
    torch.manual_seed(0)
    model = create_model("densenet169", 1.0, decoder_act_a=False, bottleneck_relu=False, input_norm="none",
                         min_depth=0.5, max_depth=80.0).eval()
    save_checkpoint(model, tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / CONFIG_FILE).read_text())
    assert {k: cfg[k] for k in ("encoder", "decoder_width", "decoder_act_a", "bottleneck_relu", "input_norm",
                                "min_depth", "max_depth", "max_depth_cm", "mean", "std")} == {
        "encoder": "densenet169", "decoder_width": 1.0, "decoder_act_a": False, "bottleneck_relu": False,
        "input_norm": "none", "min_depth": 0.5, "max_depth": 80.0, "max_depth_cm": 8000.0,
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    back = load_checkpoint(tmp_path / "ck")
    assert (back.decoder_width, back.decoder_act_a, back.bottleneck_relu, back.input_norm) == (1.0, False, False, "none")
    assert (back.min_depth, back.max_depth) == (0.5, 80.0)
    assert not any(b.act_a for b in (back.decoder.up1, back.decoder.up2, back.decoder.up3, back.decoder.up4))
    assert sum(p.numel() for p in back.parameters()) == 42_657_689
    torch.testing.assert_close(back.mean.flatten(), torch.zeros(3))
    _same_outputs(model, back, torch.rand(1, 3, 64, 96))


def test_densenet_default_records_the_resolved_bottleneck_relu(tmp_path):
    torch.manual_seed(0)
    model = create_model("densenet169", 0.1).eval()
    save_checkpoint(model, tmp_path / "ck")
    cfg = read_config(tmp_path / "ck")
    assert cfg["bottleneck_relu"] is True and cfg["decoder_act_a"] is True and cfg["input_norm"] == "imagenet"
    assert cfg["mean"] == [0.485, 0.456, 0.406] and cfg["std"] == [0.229, 0.224, 0.225]
    back = load_checkpoint(tmp_path / "ck")
    assert back.bottleneck_relu is True
    _same_outputs(model, back, torch.randn(1, 3, 64, 64))


def test_old_densenet_checkpoint_without_the_new_keys_predicts_as_before(tmp_path):
    # written by the code before bottleneck_relu / decoder_act_a / input_norm / min_depth existed
    torch.manual_seed(0)
    old = create_model("densenet169", 0.1, bottleneck_relu=False).eval()  # what old code built
    save_checkpoint(old, tmp_path / "ck")
    cfg_path = tmp_path / "ck" / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    for key in ("bottleneck_relu", "decoder_act_a", "input_norm", "min_depth", "max_depth"):
        del cfg[key]
    cfg_path.write_text(json.dumps(cfg))
    back = load_checkpoint(tmp_path / "ck")
    assert (back.bottleneck_relu, back.decoder_act_a, back.input_norm) == (False, True, "imagenet")
    assert (back.min_depth, back.max_depth) == (0.1, 10.0)  # from max_depth_cm 1000
    x = torch.randn(1, 3, 64, 64)
    _same_outputs(old, back, x)
    with torch.no_grad():  # and the ReLU would have changed the prediction: the default matters
        relu = create_model("densenet169", 0.1, bottleneck_relu=True).eval()
        relu.load_state_dict(back.state_dict())
        assert (relu(x) - back(x)).abs().max() > 1e-6  # (the match above is exact: atol=0)


def test_pad_multiple_new_models_record_1_and_old_checkpoints_keep_padding_to_32(tmp_path):
    # before the key existed every side was replicate-padded to a multiple of 32 and the output cropped back
    torch.manual_seed(0)
    new = create_model("mobilenetv2", 0.5).eval()
    save_checkpoint(new, tmp_path / "new")
    assert read_config(tmp_path / "new")["pad_multiple"] == 1
    assert load_checkpoint(tmp_path / "new").pad_multiple == 1
    cfg_path = tmp_path / "new" / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    del cfg["pad_multiple"]
    cfg_path.write_text(json.dumps(cfg))
    old = load_checkpoint(tmp_path / "new")
    assert old.pad_multiple == 32
    x = torch.rand(1, 3, 50, 70) + torch.linspace(0, 2, 70)  # brighter to the right: the padding is visible
    with torch.no_grad():
        ref = new(torch.nn.functional.pad(x, (0, 26, 0, 14), mode="replicate"))[..., :25, :35]
        torch.testing.assert_close(old(x), ref, rtol=0, atol=0)
        assert (new(x) - ref).abs().max() > 1e-4  # the key matters at this size


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ck") / "mobilenet"
    save_checkpoint(create_model("mobilenetv2", 0.5), d)
    return d


BAD_FIELDS = [
    ("decoder_width", None), ("decoder_width", [0.5]), ("decoder_width", float("inf")), ("decoder_width", "0.5"),
    ("decoder_width", True), ("decoder_width", 0), ("decoder_width", float("nan")),
    ("encoder", ["mobilenetv2"]), ("encoder", 3), ("encoder", None), ("encoder", ""),
    ("max_depth", 0), ("max_depth", -10.0), ("max_depth", float("nan")), ("max_depth", "10"),
    ("min_depth", 0), ("min_depth", 10.0), ("min_depth", 20.0), ("min_depth", float("inf")),
    ("decoder_act_a", "yes"), ("decoder_act_a", None), ("bottleneck_relu", 1), ("bottleneck_relu", None),
    ("input_norm", "caffe"), ("input_norm", None),
    ("pad_multiple", 0), ("pad_multiple", "32"), ("pad_multiple", True), ("pad_multiple", 1.5), ("pad_multiple", None),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in BAD_FIELDS])
def test_bad_config_field_is_named_in_one_line(saved, tmp_path, field, value):
    d = tmp_path / "ck"
    d.mkdir()
    (d / WEIGHTS_FILE).write_bytes((saved / WEIGHTS_FILE).read_bytes())
    cfg = json.loads((saved / CONFIG_FILE).read_text()) | {field: value}
    (d / CONFIG_FILE).write_text(json.dumps(cfg))  # json writes NaN / Infinity, as a hand edit could
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    msg = str(e.value)
    assert str(d / CONFIG_FILE) in msg and f"'{field}'" in msg and "\n" not in msg


@pytest.mark.parametrize("value", [0, -100.0, float("nan")])
def test_bad_max_depth_cm_of_old_checkpoints_is_named(saved, tmp_path, value):
    d = tmp_path / "ck"
    d.mkdir()
    (d / WEIGHTS_FILE).write_bytes((saved / WEIGHTS_FILE).read_bytes())
    cfg = json.loads((saved / CONFIG_FILE).read_text())
    del cfg["max_depth"], cfg["min_depth"]
    (d / CONFIG_FILE).write_text(json.dumps(cfg | {"max_depth_cm": value}))
    with pytest.raises(CheckpointError, match="'max_depth_cm'"):
        load_checkpoint(d)


@pytest.mark.parametrize("name", ["depth.png", "train_state.pt"])
def test_a_file_that_is_not_a_checkpoint_says_what_a_checkpoint_holds(saved, tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"\x89PNG not really")
    for call in (load_checkpoint, read_config):
        with pytest.raises(CheckpointError) as e:
            call(f)
        msg = str(e.value)
        assert str(f) in msg and WEIGHTS_FILE in msg and CONFIG_FILE in msg and "folder" in msg
        assert "\n" not in msg


def test_a_folder_without_config_says_what_a_checkpoint_holds(tmp_path):
    with pytest.raises(CheckpointError, match=f"no {CONFIG_FILE}.*folder holding {WEIGHTS_FILE} and {CONFIG_FILE}"):
        load_checkpoint(tmp_path)


def test_the_weights_file_or_the_folder_both_load(saved):
    a, b = load_checkpoint(saved), load_checkpoint(saved / WEIGHTS_FILE)
    _same_outputs(a, b, torch.randn(1, 3, 32, 32))
