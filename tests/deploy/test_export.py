"""`transferdepth export`: ONNX / TorchScript graphs with dynamic height and width that match PyTorch."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from transferdepth import DepthEstimator
from transferdepth.cli import main
from transferdepth.models import available_encoders


def as_input(rgb: np.ndarray) -> np.ndarray:
    """The exported graphs' input: (1,3,H,W) float32 RGB in [0,1]."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def test_onnx_is_dynamic_documented_and_matches_pytorch(ckpt, kitchen, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "depth.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (proto.graph.input[0], proto.graph.output[0])]
    assert dims == [["batch", 3, "height", "width"], ["batch", 1, "height", "width"]]
    assert [proto.graph.input[0].name, proto.graph.output[0].name] == ["rgb", "depth_m"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["transferdepth.encoder"] == "mobilenetv2" and meta["transferdepth.decoder_width"] == "0.5"
    assert "RGB (not BGR) in [0,1]" in meta["transferdepth.input"]
    assert "metres" in meta["transferdepth.output"]

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False)
    for rgb in kitchen:
        expected = est.predict(rgb)
        assert expected.max() - expected.min() > 0.5  # an informative map, not a clamped constant
        got = session.run(None, {"rgb": as_input(rgb)})[0]
        assert got.shape == (1, 1, *rgb.shape[:2])
        assert np.abs(got[0, 0] - expected).max() <= 1e-4
    both = session.run(None, {"rgb": np.concatenate([as_input(kitchen[1])] * 2)})[0]
    np.testing.assert_allclose(both[1, 0], est.predict(kitchen[1]), atol=1e-4)


def test_torchscript_loads_and_matches_pytorch(ckpt, kitchen, tmp_path):
    out = tmp_path / "depth.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out)]) == 0
    extra = {"transferdepth.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit.load; it works
        module = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["transferdepth.json"])["transferdepth.encoder"] == "mobilenetv2"
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False)
    for rgb in kitchen:
        with torch.no_grad():
            got = module(torch.from_numpy(as_input(rgb)))
        assert got.shape == (1, 1, *rgb.shape[:2])
        assert np.abs(got[0, 0].numpy() - est.predict(rgb)).max() <= 1e-4


def test_export_errors_are_one_line(ckpt, tmp_path, capsys):
    rc = main(["export", "--checkpoint", str(tmp_path / "nothing"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"transferdepth: error: {tmp_path / 'nothing'}: no such checkpoint")
    assert not (tmp_path / "m.onnx").exists()
    (tmp_path / "file").write_text("not a folder")
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "file" / "m.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"transferdepth: error: {tmp_path / 'file' / 'm.pt'}: cannot write (")


def _narrow_spread_model(name: str) -> torch.nn.Module:
    """`name` with a narrow decoder (fast export) and its last conv scaled so depths spread over metres."""
    from transferdepth.models import create_model

    torch.manual_seed(0)
    model = create_model(name, decoder_width=0.05).eval()
    with torch.no_grad():
        model.decoder.conv3.weight.mul_(100.0)
        model.decoder.conv3.bias.fill_(2.8)
    return model


@pytest.mark.parametrize("name", available_encoders())
def test_onnx_dynamic_shapes_are_exact_for_every_encoder_at_odd_sizes(name, tmp_path):
    # traced at 96x128 (EXAMPLE_SIZE); run at odd, even, short (< 32, padded) and larger sizes: the graph's
    # skip-size upsampling, timm's SAME padding (EfficientNet-Lite) and the short-side padding follow the input
    import onnxruntime as ort

    from transferdepth.deploy.export import export_onnx
    from transferdepth.inference.core import infer

    model = _narrow_spread_model(name)
    path = export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for h, w in [(45, 67), (63, 33), (64, 96), (131, 100), (20, 50)]:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        rgb = (torch.stack([0.2 + 0.7 * xx, 0.9 - 0.6 * yy, 0.5 + 0.4 * xx * yy])[None]
               + 0.05 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)
        expected = infer(model, rgb, flip=False)
        got = session.run(None, {"rgb": rgb.numpy()})[0]
        assert got.shape == (1, 1, h, w), (name, h, w)
        assert np.abs(got - expected.numpy()).max() <= 1e-4, (name, h, w)
    assert expected.max() - expected.min() > 0.05  # not a clamped constant
