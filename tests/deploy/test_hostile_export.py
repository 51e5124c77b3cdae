"""Hostile exports and exported files: numeric flags out of range are refused before anything is loaded,
`--calibration-size` is what the int8 calibration really uses, and the ONNX engine refuses a graph with our
metadata whose output is not (N,1,H,W) depth. One row per case."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture
def nothing_loaded(monkeypatch):
    """Loading the checkpoint fails the test: a bad flag must be refused before any work."""
    import transferdepth.deploy.export as export

    def refuse(*a, **k):
        raise AssertionError("the checkpoint was loaded before the flags were checked")

    monkeypatch.setattr(export, "load_checkpoint", refuse)


# (flags, fragment of the one error line)
BAD_FLAGS = [
    (["--calibration-size", "100000x100000"], "--calibration-size must be HEIGHTxWIDTH with each side in [16, 4096]"),
    (["--calibration-size", "8x64"], "--calibration-size must be HEIGHTxWIDTH with each side in [16, 4096] pixels, got 8x64"),
    (["--calibration-size", "0x0"], "--calibration-size must be two positive integers"),
    (["--calibration-size", "1e3x100"], "--calibration-size must be HEIGHTxWIDTH"),
    (["--calibration-count", "0"], "--calibration-count must be an integer in [1, 10000], got 0"),
    (["--calibration-count", "100000"], "--calibration-count must be an integer in [1, 10000], got 100000"),
]


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_numeric_flags_are_refused_before_any_work(flags, message, ckpt, tmp_path, capsys, nothing_loaded):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out), "--precision", "int8",
               *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_calibration_size_is_the_size_calibrated_on(ckpt, tmp_path, monkeypatch):
    """The calibration images reach the quantiser at --calibration-size (not only in the metadata line)."""
    import onnx

    import transferdepth.deploy.export as export

    seen = []
    real = export.quantize_onnx

    def spy(proto, batches, **kw):
        seen.extend(b.shape for b in batches)
        return real(proto, batches, **kw)

    monkeypatch.setattr(export, "quantize_onnx", spy)
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out), "--precision", "int8",
                 "--calibration", str(folder), "--calibration-size", "48x64", "--calibration-count", "2",
                 "--no-bias-correction"]) == 0
    assert seen == [(1, 3, 48, 64)] * 2
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["transferdepth.calibration_size"] == "2 images at 48x64 (HxW)"


def _graph_with_our_metadata(path, channels: int, name: str = "depth_m"):
    """A graph carrying `transferdepth export`'s metadata whose output is (N,channels,H,W): rgb -> Slice."""
    import onnx
    from onnx import TensorProto, helper

    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [channels])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("Slice", ["rgb", "starts", "ends", "axes"], [name])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height", "width"])],
        initializer=[starts, ends, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"transferdepth.max_depth": "10.0", "transferdepth.min_depth": "0.1",
                                   "transferdepth.flip": "false", "transferdepth.precision": "fp32"})
    onnx.save(model, str(path))
    return path


# (output channels, output name, fragment of the error)
BAD_GRAPHS = [
    (3, "depth_m", "the graph's output is depth_m tensor(float) ['batch', 3, 'height', 'width'], expected depth_m"),
    (1, "rgb_out", "the graph's output is rgb_out"),
]


@pytest.mark.parametrize("channels,name,message", BAD_GRAPHS, ids=[f"{c}ch {n}" for c, n, _ in BAD_GRAPHS])
def test_onnx_engine_refuses_a_graph_that_does_not_output_depth(channels, name, message, tmp_path, capsys):
    from transferdepth.deploy.onnx_engine import OnnxRunner

    path = _graph_with_our_metadata(tmp_path / "m.onnx", channels, name)
    with pytest.raises(ValueError) as e:
        OnnxRunner(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(photo)
    rc = main(["predict", str(photo), "--engine", "onnx", "--checkpoint", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not list((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_onnx_engine_accepts_a_one_channel_graph_of_the_same_making(tmp_path):
    """The same hand-made graph with one output channel passes the check (the check is on the shape)."""
    from transferdepth.deploy.onnx_engine import OnnxRunner

    OnnxRunner(_graph_with_our_metadata(tmp_path / "m.onnx", 1))
