"""The ONNX engine (`DepthEstimator.from_onnx`) and ONNX precisions: fp32 equals the torch engine within
1e-4 m at any size, `--flip` exports average inside the graph, fp16 and int8 exports load and run, and every
bad request is one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.cli import main
from transferdepth.inference.core import infer, rgb_to_tensor

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exports(ckpt, tmp_path_factory):
    """{name: path} for fp32, fp32 --flip and fp16 exports of the tiny model (through the CLI)."""
    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, extra in (("fp32", []), ("flip", ["--flip"]), ("fp16", ["--precision", "fp16"])):
        paths[name] = out / f"{name}.onnx"
        assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(paths[name]), *extra]) == 0
    return paths


def test_onnx_engine_equals_torch_engine_at_any_size(ckpt, kitchen, exports):
    for flip in (True, False):
        ref = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=flip)
        for eng in (DepthEstimator.from_onnx(exports["fp32"], flip=flip), DepthEstimator.from_onnx(ckpt, flip=flip)):
            assert eng.flip is flip and not eng.graph_flip and eng.precision == "fp32"
            got = eng.predict_batch(kitchen + [kitchen[1]])
            for rgb, depth in zip(kitchen + [kitchen[1]], got):
                expected = ref.predict(rgb)
                assert depth.shape == rgb.shape[:2] and depth.dtype == np.float32
                assert expected.max() - expected.min() > 0.5  # informative, not a clamped constant
                np.testing.assert_allclose(depth, expected, atol=1e-4, rtol=0)
    assert DepthEstimator.from_onnx(exports["fp32"]).flip is True  # predict's default


def test_flip_export_averages_inside_the_graph(ckpt, kitchen, exports):
    model = DepthEstimator.from_pretrained(ckpt, device="cpu").model
    x = rgb_to_tensor([kitchen[1]])
    session = ort.InferenceSession(str(exports["flip"]), providers=["CPUExecutionProvider"])
    raw = session.run(None, {"rgb": x.numpy()})[0]
    flipped, plain = infer(model, x, flip=True).numpy(), infer(model, x, flip=False).numpy()
    assert np.abs(flipped - plain).max() > 0.05  # the mirror changes the answer: the check below can fail
    np.testing.assert_allclose(raw, flipped, atol=1e-4, rtol=0)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["transferdepth.flip"] == "true" and "mirrored" in meta["transferdepth.output"]
    # the engine does not flip such a graph again (one run per batch; a second, mirrored run would give the
    # same metres, flip averaging being mirror-symmetric, at twice the cost): it equals the torch default
    eng = DepthEstimator.from_onnx(exports["flip"])
    assert eng.graph_flip and eng.flip
    runs = []
    real_run = eng.session.run
    eng.session = type("Counted", (), {"run": lambda self, *a: runs.append(1) or real_run(*a)})()
    ref = DepthEstimator.from_pretrained(ckpt, device="cpu")
    for rgb in kitchen:
        np.testing.assert_allclose(eng.predict(rgb), ref.predict(rgb), atol=1e-4, rtol=0)
    assert len(runs) == len(kitchen)
    with pytest.raises(ValueError, match="exported with --flip"):
        DepthEstimator.from_onnx(exports["flip"], flip=False)


def test_fp16_export_keeps_float32_io_and_runs(ckpt, kitchen, exports):
    import onnx

    proto = onnx.load(str(exports["fp16"]))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    eng = DepthEstimator.from_onnx(exports["fp16"])
    assert eng.precision == "fp16"
    ref = DepthEstimator.from_pretrained(ckpt, device="cpu")
    got, expected = eng.predict(kitchen[1]), ref.predict(kitchen[1])
    assert got.dtype == np.float32 and np.abs(got - expected).mean() < 0.01


def test_int8_export_records_its_calibration(ckpt, kitchen, tmp_path, rgbd_root):
    out = tmp_path / "int8.onnx"
    spec = "rgbd:7scenes-redkitchen?index=0:800"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out), "--precision", "int8",
                 "--calibration", spec, "--calibration-count", "4", "--calibration-size", "120x160"]) == 0
    eng = DepthEstimator.from_onnx(out)
    assert eng.precision == "int8"
    assert eng.meta["transferdepth.calibration"] == spec
    assert eng.meta["transferdepth.calibration_size"] == "4 images at 120x160 (HxW)"
    method = eng.meta["transferdepth.quantization"]
    assert "QDQ" in method and "per channel" in method and "uint8 activations" in method and "biases corrected" in method
    ops = {n.op_type for n in __import__("onnx").load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref = DepthEstimator.from_pretrained(ckpt, device="cpu").predict(kitchen[1])
    got = eng.predict(kitchen[1])
    assert got.shape == ref.shape and np.abs(got - ref).mean() < 0.1 * ref.mean()
    plain = tmp_path / "plain.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(plain), "--precision", "int8",
                 "--calibration-count", "2", "--calibration-size", "64x96", "--no-bias-correction"]) == 0
    assert "biases corrected" not in DepthEstimator.from_onnx(plain).meta["transferdepth.quantization"]


# --- bad input: one line each -------------------------------------------------------------------------

def _export(ckpt, tmp_path, *extra) -> tuple[int, list[str]]:
    return main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 *extra])


def test_int8_without_quantisation_tools(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # `import` raises ImportError
    assert _export(ckpt, tmp_path, "--precision", "int8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["transferdepth: error: --precision int8 needs onnxruntime's quantisation tools "
                   "(onnxruntime.quantization): pip install 'transferdepth[export]'"]
    assert not (tmp_path / "m.onnx").exists()


def test_empty_or_unopenable_calibration_set(ckpt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _export(ckpt, tmp_path, "--precision", "int8", "--calibration", str(empty)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"transferdepth: error: --calibration {empty}: no images to calibrate on (an empty set)"]
    for spec in ("nosuch:x", str(tmp_path / "missing.zip"), "procedural:n=0"):
        assert _export(ckpt, tmp_path, "--precision", "int8", "--calibration", spec) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"transferdepth: error: --calibration {spec}: ")
    assert _export(ckpt, tmp_path, "--no-bias-correction") == 2  # an int8 option on an fp32 export
    assert capsys.readouterr().err.strip().splitlines() == [
        "transferdepth: error: --no-bias-correction: only for --precision int8"]
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_engine_refuses_files_that_are_not_our_exports(ckpt, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["rgb"], ["y"])], "g",
                              [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign, junk = tmp_path / "other.onnx", tmp_path / "junk.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    junk.write_bytes(b"not a model")
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    for path, why in ((foreign, "not an ONNX file written by `transferdepth export` (no transferdepth metadata)"),
                      (junk, "not an ONNX model onnxruntime can load"),
                      (tmp_path / "none.onnx", "no such ONNX file or checkpoint directory")):
        rc = main(["predict", str(tmp_path / "img.png"), "--engine", "onnx", "--checkpoint", str(path),
                   "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith(f"transferdepth: error: {path}: {why}"), err


def test_predict_cli_onnx_engine_writes_what_torch_writes(ckpt, exports, kitchen, tmp_path):
    Image.fromarray(kitchen[1]).save(tmp_path / "k.png")
    for engine, model in (("torch", ckpt), ("onnx", exports["fp32"])):
        assert main(["predict", str(tmp_path / "k.png"), "--engine", engine, "--checkpoint", str(model),
                     "--format", "npy", "--out", str(tmp_path / engine)]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "onnx" / "k_depth_m.npy"),
                               np.load(tmp_path / "torch" / "k_depth_m.npy"), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["mobilenetv2", "efficientnet_lite0"])
def test_int8_export_runs_every_convolution_but_the_last_in_int8(name, tmp_path):
    # the speed of --precision int8 on a CPU: onnxruntime fuses each DequantizeLinear -> Conv -> QuantizeLinear
    # into one QLinearConv only where the export allows it (uint8 activations; no float Pad between convolutions,
    # which timm's SAME padding would add); the last convolution stays float32 by design (DEFAULT_QUANT_EXCLUDE)
    import onnx
    import onnxruntime as ort
    import torch

    from transferdepth.deploy.export import export_onnx
    from transferdepth.models import create_model

    torch.manual_seed(0)
    model = create_model(name, decoder_width=0.05).eval()
    path = export_onnx(model, tmp_path / "int8.onnx", precision="int8", calibration_count=2,
                       calibration_size=(64, 96))
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    nodes = onnx.load(so.optimized_model_filepath).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("Conv") == 1 and ops.count("QLinearConv") == convs - 1, (convs, sorted(set(ops)))
    assert not [n.name for n in nodes if n.op_type == "Pad" and "/encoder/" in n.name]  # DepthNet pads its input itself
