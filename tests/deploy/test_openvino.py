"""The OpenVINO engine and `export --format openvino`: the IR carries our contract in its rt_info, f32 equals the
torch engine within 1e-4 m from an IR, an ONNX file or a checkpoint directory, bf16 is close, and every bad
input (an IR without our metadata, a missing .bin, openvino not installed) is one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.cli import main

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def files(ckpt, tmp_path_factory):
    """{"xml": IR, "onnx": fp32 ONNX, "flip": IR exported with --flip}, written through the CLI."""
    out = tmp_path_factory.mktemp("ov")
    paths = {"xml": out / "ir" / "model.xml", "onnx": out / "model.onnx", "flip": out / "flip.xml"}
    for key, fmt, extra in (("xml", "openvino", []), ("onnx", "onnx", []), ("flip", "openvino", ["--flip"])):
        assert main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(paths[key]), *extra]) == 0
    return paths


def test_export_writes_an_ir_with_our_metadata(files, capsys):
    xml = files["xml"]
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]  # no temp folder left
    onnx_meta = {p.key: p.value for p in onnx.load(str(files["onnx"])).metadata_props}
    from transferdepth.deploy.export import ir_metadata

    model = ov.Core().read_model(str(xml))
    ir_meta = ir_metadata(model)
    ir_meta.pop("transferdepth.version"), onnx_meta.pop("transferdepth.version")
    assert ir_meta == onnx_meta and ir_meta["transferdepth.flip"] == "false"
    assert "<transferdepth>" in xml.read_text()  # in the IR's own rt_info, not only the converter's copy
    assert ir_metadata(ov.Core().read_model(str(files["flip"])))["transferdepth.flip"] == "true"
    constants = [op.get_output_element_type(0) for op in model.get_ops() if op.get_type_name() == "Constant"]
    assert ov.Type.f32 in constants and ov.Type.f16 not in constants  # weights not compressed to float16


def test_openvino_engine_equals_torch_engine(ckpt, kitchen, files):
    for flip in (True, False):
        ref = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=flip)
        expected = [ref.predict(rgb) for rgb in kitchen]
        assert expected[0].max() - expected[0].min() > 0.5  # informative, not a clamped constant
        est = DepthEstimator.from_openvino(files["xml"], flip=flip, threads=1)
        assert est.engine == "openvino" and est.flip is flip and est.precision == "fp32"
        for rgb, depth, exp in zip(kitchen, est.predict_batch(kitchen), expected):
            assert depth.shape == rgb.shape[:2] and depth.dtype == np.float32
            np.testing.assert_allclose(depth, exp, atol=1e-4, rtol=0)
    for source in (files["onnx"], ckpt):  # the same from our ONNX file and from a checkpoint directory
        est = DepthEstimator.from_openvino(source, flip=False, threads=1)
        np.testing.assert_allclose(est.predict(kitchen[1]), expected[1], atol=1e-4, rtol=0)
    flipped = DepthEstimator.from_openvino(files["flip"], threads=1)
    assert flipped.graph_flip and flipped.flip
    np.testing.assert_allclose(flipped.predict(kitchen[1]),
                               DepthEstimator.from_pretrained(ckpt, device="cpu").predict(kitchen[1]), atol=1e-4)
    with pytest.raises(ValueError, match="--flip"):
        DepthEstimator.from_openvino(files["flip"], flip=False)


def test_bf16_is_close_where_the_cpu_has_it(ckpt, kitchen, files):
    from transferdepth.deploy.openvino_engine import has_bf16

    if not has_bf16():
        with pytest.raises(ValueError, match="bfloat16"):
            DepthEstimator.from_openvino(files["xml"], precision="bf16")
        return
    est = DepthEstimator.from_openvino(files["xml"], precision="bf16", threads=1)
    assert est.engine == "openvino-bf16"
    got, ref = est.predict(kitchen[1]), DepthEstimator.from_pretrained(ckpt, device="cpu").predict(kitchen[1])
    rel = np.abs(got - ref) / ref
    assert 0 < rel.mean() < 0.02  # bfloat16 arithmetic: close, not the same numbers


def test_an_ir_without_our_metadata_is_one_line(files, tmp_path, capsys):
    proto = onnx.load(str(files["onnx"]))
    del proto.metadata_props[:]  # the same graph, without our metadata
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    bare = tmp_path / "bare.xml"
    ov.save_model(ov.convert_model(str(tmp_path / "bare.onnx")), str(bare), compress_to_fp16=False)
    (tmp_path / "bare.onnx").unlink()
    with pytest.raises(ValueError, match="no transferdepth metadata") as err:
        DepthEstimator.from_openvino(bare)
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path), "--checkpoint", str(bare), "--engine", "openvino", "--out", str(out)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "no transferdepth metadata" in err_lines[0]
    files["xml"].with_suffix(".bin").rename(tmp_path / "moved.bin")  # a .bin gone missing
    try:
        with pytest.raises(ValueError, match="model.bin is missing"):
            DepthEstimator.from_openvino(files["xml"])
    finally:
        (tmp_path / "moved.bin").rename(files["xml"].with_suffix(".bin"))


def test_openvino_not_installed_is_one_line_naming_the_extra(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'transferdepth\[openvino\]'"):
        DepthEstimator.from_openvino(ckpt)
    for argv in (["predict", str(tmp_path), "--checkpoint", str(ckpt), "--engine", "openvino", "--out",
                  str(tmp_path / "o")],
                 ["export", "--checkpoint", str(ckpt), "--format", "openvino", "--out", str(tmp_path / "m.xml")]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "pip install 'transferdepth[openvino]'" in lines[0], lines
    assert not (tmp_path / "m.xml").exists()


def test_export_openvino_refuses_a_non_xml_out_and_other_precisions(ckpt, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(ckpt), "--format", "openvino", "--out", str(tmp_path / "m.onnx")]) == 2
    assert ".xml" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt), "--format", "openvino", "--out", str(tmp_path / "m.xml"),
                 "--precision", "fp16"]) == 2
    assert "fp32" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_predict_and_serve_run_the_openvino_engine(ckpt, files, kitchen, tmp_path, capsys):
    """`predict --engine openvino` writes what `--engine torch` writes (npy metres, 1e-4 m); the server's engine
    too (`apps.serve.engine.load_engine`)."""
    from transferdepth.apps.serve.engine import Options, TorchEngine, load_engine

    Image.fromarray(kitchen[1]).save(tmp_path / "room.png")
    for engine, source in (("torch", ckpt), ("openvino", files["xml"])):
        assert main(["predict", str(tmp_path / "room.png"), "--checkpoint", str(source), "--engine", engine,
                     "--format", "npy", "--out", str(tmp_path / engine)]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "openvino" / "room_depth_m.npy"),
                               np.load(tmp_path / "torch" / "room_depth_m.npy"),
                               atol=1e-4, rtol=0)
    served = load_engine("openvino", files["xml"])
    assert served.name == "openvino" and served.info()["engine"] == "openvino"
    assert served.info()["encoder"] == "mobilenetv2" and served.info()["device"] == "cpu (openvino)"
    ref = TorchEngine(ckpt, device="cpu")
    for options in (Options(), Options(flip=False)):
        np.testing.assert_allclose(served.predict_rgb(kitchen[1], options), ref.predict_rgb(kitchen[1], options),
                                   atol=1e-4, rtol=0)


def test_an_int8_model_is_compiled_per_input_size(ckpt, kitchen, tmp_path):
    """OpenVINO 2026.4 computes QDQ int8 graphs wrongly with a dynamic height and width (a fine-tuned MobileNetV2
    came out 0.57-0.62x the fp32 depth), so the runner compiles an int8 model for each input size it sees."""
    from transferdepth.deploy.onnx_engine import OnnxRunner
    from transferdepth.deploy.openvino_engine import STATIC_SHAPES, OpenVinoRunner

    path = tmp_path / "int8.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--precision", "int8",
                 "--out", str(path)]) == 0
    runner, reference = OpenVinoRunner(path, threads=1), OnnxRunner(path, threads=1)
    assert runner.static and not OpenVinoRunner(ckpt, threads=1).static  # fp32: one dynamic compile
    import torch

    for h, w in ((64, 96), (48, 80), (64, 96)):
        x = torch.from_numpy(np.asarray(Image.fromarray(kitchen[0]).resize((w, h)), np.float32) / 255.0)
        x = x.permute(2, 0, 1)[None].repeat(2, 1, 1, 1)  # batch 2: the batch stays dynamic
        out, ref = runner.run(x), reference.run(x)
        assert out.shape == ref.shape == (2, 1, h, w)
        assert float((out - ref).abs().mean()) < 0.05 * float(ref.abs().mean())
    shapes = {k: [str(d) for d in r.model_inputs[0].get_partial_shape()] for k, r in runner._by_shape.items()}
    assert shapes == {(64, 96): ["?", "3", "64", "96"], (48, 80): ["?", "3", "48", "80"]}
    for i in range(STATIC_SHAPES + 1):  # at most STATIC_SHAPES compiled sizes are kept
        runner.run(torch.rand(1, 3, 32 + 8 * i, 32))
    assert len(runner._by_shape) == STATIC_SHAPES


CRASH_SCRIPT = """
import faulthandler, gc, signal, subprocess, sys
import numpy as np
from transferdepth import DepthEstimator
faulthandler.enable()  # as pytest does: an alternate signal stack on the main thread
signal.signal(signal.SIGCHLD, lambda *a: None)  # as torch's DataLoader does once it has used workers
rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
first = DepthEstimator.from_pretrained(sys.argv[1], engine="openvino", threads=1)
second = DepthEstimator.from_pretrained(sys.argv[1], engine="openvino", threads=1)
first.predict(rgb), second.predict(rgb)
del first; gc.collect()  # destroyed in the order they were made, not the reverse
del second; gc.collect()
subprocess.run(["true"])  # SIGCHLD, handled on the alternate signal stack
print("alive")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack check is Linux's")
def test_openvino_leaves_no_dangling_signal_stack(ckpt, tmp_path):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack while a compiled model lives; two models
    freed first-made-first left it unmapped, and the next handled signal was a SIGSEGV (the whole test suite
    in one process died of it). `keep_signal_stack` keeps the caller's."""
    import ctypes
    import subprocess

    from transferdepth.deploy.openvino_engine import _SignalStack

    libc = ctypes.CDLL(None)
    before, after = _SignalStack(), _SignalStack()
    libc.sigaltstack(None, ctypes.byref(before))
    DepthEstimator.from_pretrained(ckpt, engine="openvino", threads=1)
    libc.sigaltstack(None, ctypes.byref(after))
    assert (after.ss_sp, after.ss_size, after.ss_flags) == (before.ss_sp, before.ss_size, before.ss_flags)
    script = tmp_path / "two_models.py"
    script.write_text(CRASH_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(ckpt)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "alive" in done.stdout, (done.returncode, done.stderr[-2000:])
