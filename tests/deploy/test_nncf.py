"""The NNCF int8 path (`quantizer="nncf"`, `quantize_openvino`): its output stays close to the float32 graph's (the
reference: the fp32 export run by onnxruntime on the same images), it depends on the calibration images (one black
image fails the same bound), the same nodes stay float32 as with our quantiser, and the file keeps our contract.
Real-data accuracy against our quantiser: benchmarks/deploy/quantization.py, docs/using.md."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_model

pytest.importorskip("nncf")

CALIB = dict(calibration="procedural:n=2&seed=1&height=48&width=64", calibration_count=2, calibration_size=(48, 64))
# median and 90th percentile of |int8 - fp32| / fp32 over 3 other rooms at 64x96; measured with CALIB (tiny model):
# NNCF on onnxruntime 0.0017 / 0.0053 (without its bias correction 0.0025 / 0.0063), ours 0.0022 / 0.0056; one black
# calibration image: NNCF 0.0087 / 0.033, ours 0.0065 / 0.027
MAX_MEDIAN, MAX_P90 = 0.005, 0.015


def _rooms() -> np.ndarray:
    from transferdepth.deploy.quantize import calibration_batches

    return np.concatenate(calibration_batches("procedural:n=3&seed=7&height=64&width=96", 3, (64, 96)))


def _run(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"rgb": x})[0]


def _error(depth: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    rel = np.abs(depth - ref) / ref
    return float(np.median(rel)), float(np.percentile(rel, 90))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from PIL import Image

    from transferdepth.cli import main
    from transferdepth.deploy.export import export_onnx
    from transferdepth.inference.checkpoint import save_checkpoint

    tmp = tmp_path_factory.mktemp("nncf")
    (tmp / "black").mkdir()
    Image.new("RGB", (64, 48)).save(tmp / "black" / "black.png")
    model = tiny_model()
    fp32 = export_onnx(model, tmp / "fp32.onnx")
    save_checkpoint(model, tmp / "ckpt")
    nncf = tmp / "nncf.onnx"  # through the CLI
    assert main(["export", "--checkpoint", str(tmp / "ckpt"), "--format", "onnx", "--out", str(nncf), "--precision",
                 "int8", "--quantizer", "nncf", "--calibration", CALIB["calibration"], "--calibration-count", "2",
                 "--calibration-size", "48x64"]) == 0
    black = export_onnx(model, tmp / "black.onnx", precision="int8", quantization={"quantizer": "nncf"},
                        calibration=str(tmp / "black"), calibration_count=1, calibration_size=(48, 64))
    x = _rooms()
    return {"fp32": fp32, "nncf": nncf, "black": black, "x": x, "ref": _run(fp32, x)}


def test_nncf_int8_is_close_to_fp32_and_needs_its_calibration(exports):
    x, ref = exports["x"], exports["ref"]
    assert 2.0 < ref.min() and ref.max() < 5.5  # informative depths (not all clamped)
    med, p90 = _error(_run(exports["nncf"], x), ref)
    assert med <= MAX_MEDIAN and p90 <= MAX_P90, (med, p90)
    med, p90 = _error(_run(exports["black"], x), ref)
    assert med > MAX_MEDIAN or p90 > MAX_P90, (med, p90)  # the bound can fail: calibration matters


def test_nncf_file_keeps_the_contract_and_says_how_it_was_made(exports):
    import onnx

    from transferdepth.deploy.onnx_engine import OnnxRunner

    runner = OnnxRunner(exports["nncf"], threads=1)  # refuses a file without our contract
    assert runner.precision == "int8"
    meta = runner.meta
    assert meta["transferdepth.quantization"].startswith("NNCF ")
    assert "fast bias correction" in meta["transferdepth.quantization"]
    assert meta["transferdepth.calibration"] == CALIB["calibration"]
    assert meta["transferdepth.calibration_size"] == "2 images at 48x64 (HxW)"
    graph = onnx.load(str(exports["nncf"])).graph
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    float_convs = [n.name for n in convs if n.input[1] in floats]
    assert float_convs == ["/model/decoder/conv3/Conv"], float_convs  # the default exclude, as ours
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 40


def test_openvino_int8_is_close_to_fp32_and_leaves_the_same_nodes_float(exports):
    import onnx
    import openvino as ov

    from transferdepth.deploy.quantize import calibration_batches, quantize_openvino

    batches = calibration_batches(CALIB["calibration"], 2, CALIB["calibration_size"])
    model, meta = quantize_openvino(onnx.load(str(exports["fp32"])), batches)
    assert meta["transferdepth.quantization"].startswith("NNCF ") and "openvino" in meta["transferdepth.quantization"]
    ops = list(model.get_ops())
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) >= 40

    def fed_by(op) -> set[str]:
        return {i.get_source_output().get_node().get_type_name() for i in op.inputs()}

    last = next(op for op in ops if op.get_friendly_name() == "/model/decoder/conv3/Conv/WithoutBiases")
    assert "FakeQuantize" not in fed_by(last)
    resizes = [op for op in ops if op.get_type_name() == "Interpolate"]
    assert len(resizes) == 5 and not any("FakeQuantize" in fed_by(op) for op in resizes)
    # static height and width: OpenVINO 2026.4 runs int8 models with a dynamic height or width wrongly on real
    # images (benchmarks/deploy/quantization.py `openvino_metrics`)
    model.reshape([-1, 3, *exports["x"].shape[-2:]])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    med, p90 = _error(np.asarray(compiled(exports["x"])[0]), exports["ref"])
    assert med <= MAX_MEDIAN and p90 <= MAX_P90, (med, p90)


def test_quantizer_flag_is_for_int8_only_and_needs_nncf(tmp_path, capsys, monkeypatch):
    import sys

    from transferdepth.cli import main
    from transferdepth.inference.checkpoint import save_checkpoint

    save_checkpoint(tiny_model(), tmp_path / "ckpt")
    args = ["export", "--checkpoint", str(tmp_path / "ckpt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
            "--quantizer", "nncf"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "transferdepth: error: --quantizer nncf: only for --precision int8"]
    monkeypatch.setitem(sys.modules, "nncf", None)  # `import nncf` raises ImportError
    assert main([*args, "--precision", "int8", "--calibration-count", "1", "--calibration-size", "32x32"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "transferdepth: error: the nncf quantizer needs NNCF: pip install 'transferdepth[openvino]'"]
    assert not (tmp_path / "m.onnx").exists()


def test_nncf_options_are_one_line_errors(tmp_path):
    from transferdepth.deploy.export import ExportError, export_onnx

    for options, message in (({"quantizer": "tflite"}, "quantizer tflite: choose one of ours, nncf"),
                             ({"quantizer": "nncf", "method": "entropy"},
                              "quantisation method entropy: only with quantizer ours (NNCF sets its own)"),
                             ({"quantizer": "nncf", "activations": "int8"},
                              "quantisation activations int8: only with quantizer ours (NNCF sets its own)")):
        with pytest.raises(ExportError) as e:
            export_onnx(tiny_model(), tmp_path / "x.onnx", precision="int8", quantization=options)
        assert str(e.value) == message
    assert not (tmp_path / "x.onnx").exists()
