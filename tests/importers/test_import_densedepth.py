"""`transferdepth import densedepth`: DenseDepth's Keras HDF5 -> DepthNet.

Two kinds of test:
- without TensorFlow: files written here with h5py in Keras 2's layout (error paths, CLI, checkpoint
  round trip);
- with TensorFlow + tf-keras (the [keras-parity] extra; skipped without it): DenseDepth's Keras
  architecture in both variants (tests/importers/keras_reference.py), random weights, saved by Keras as HDF5,
  imported, and compared with Keras on a real 7-Scenes frame, in metres, at 480x640 and 384x512; and
  the same comparison shown to fail when the upsampling mode, the bottleneck activation, the convA
  activation or the BatchNorm epsilon is changed.
"""

from __future__ import annotations

import gc
import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import transferdepth.importers.densedepth as dd
import transferdepth.models.decoders.densedepth as decoder_mod
from transferdepth.cli import main
from transferdepth.importers import ModelImportError, import_densedepth, read_densedepth
from transferdepth.inference.checkpoint import load_checkpoint, model_config, read_config, save_checkpoint
from transferdepth.inference.core import infer, rgb_to_tensor
from transferdepth.models import create_model

TOL_M = 1e-3  # the parity bar: max abs difference in metres
SIZES = [(480, 640), (384, 512)]
VARIANTS = {"2124ac9": (1.0, False), "10a688f": (0.5, True)}  # model.py commit -> (decoder width, act_a)

_ARCH_KEYS = {"decoder_act_a", "bottleneck_relu", "input_norm"}
NEEDS_MODELS_BRANCH = pytest.mark.xfail(
    not _ARCH_KEYS <= set(model_config(create_model("mobilenetv2"))),
    reason="needs the models branch: checkpoint config.json must record decoder_act_a, bottleneck_relu, "
           "input_norm", strict=True)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """DenseNet-169 at 480x640 on a shared, oversubscribed CPU: one thread is ~10x faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- DenseDepth-layout files without TensorFlow -------------------------------------------------


def write_keras_h5(path: Path, model, act_a: bool, bottleneck_relu: bool = True, extra_layers=(),
                   drop=(), model_config_attr: bool = True, insert: tuple[str, str] | None = None) -> Path:
    """Write `model` (a densenet169 DepthNet) as Keras 2's model.save() would lay out a DenseDepth model."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    mods = dict(model.named_modules())
    for key, value in model.state_dict().items():
        mod_name, param = key.rsplit(".", 1)
        if param == "num_batches_tracked":
            continue
        layer = dd.keras_layer_name(mod_name)
        if isinstance(mods[mod_name], torch.nn.BatchNorm2d):
            var = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                   "running_var": "moving_variance"}[param]
            arr = value.numpy()
        else:
            var = "kernel" if param == "weight" else "bias"
            arr = value.permute(2, 3, 1, 0).numpy() if var == "kernel" else value.numpy()
        layers.setdefault(layer, {})[var] = arr
    for name in extra_layers:
        layers[name] = {"gamma": np.ones(4, np.float32)}
    for name in drop:
        layers.pop(name, None)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        if model_config_attr:
            f.attrs["model_config"] = json.dumps(_graph(act_a, bottleneck_relu, insert)).encode()
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = [n.encode() for n in layers]
        for name, vars_ in layers.items():
            g = mw.create_group(name)
            g.attrs["weight_names"] = [f"{name}/{v}:0".encode() for v in vars_]
            for v, arr in vars_.items():
                g.create_dataset(f"{name}/{v}:0", data=arr)
    return path


def _graph(act_a: bool, bottleneck_relu: bool, insert: tuple[str, str] | None = None) -> dict:
    """DenseDepth's whole graph in Keras 2.2's model_config JSON, as keras_applications' densenet.py and
    DenseDepth's model.py build it (Keras numbers the unnamed layers: input_1, zero_padding2d_1, leaky_re_lu_1).
    insert=(after, class): one extra layer `extra_1` of that class between `after` and its consumers."""
    layers: list[dict] = []
    auto: dict[str, int] = {}

    def add(name, cls, src, **cfg):
        if name is None:  # Keras 2 names an unnamed layer <class in snake case>_<n>
            base = {"LeakyReLU": "leaky_re_lu", "ZeroPadding2D": "zero_padding2d", "InputLayer": "input"}[cls]
            auto[base] = auto.get(base, 0) + 1
            name = f"{base}_{auto[base]}"
        layers.append({"name": name, "class_name": cls, "config": {"name": name, **cfg},
                       "inbound_nodes": [[[s, 0, 0, {}] for s in src]] if src else []})
        if insert is not None and name == insert[0]:
            layers.append({"name": "extra_1", "class_name": insert[1], "config": {"name": "extra_1"},
                           "inbound_nodes": [[[name, 0, 0, {}]]]})
            return "extra_1"
        return name

    x = add(None, "ZeroPadding2D", [add(None, "InputLayer", [])])
    x = add("conv1/relu", "Activation", [add("conv1/bn", "BatchNormalization", [add("conv1/conv", "Conv2D", [x])])],
            activation="relu")
    x = add("pool1", "MaxPooling2D", [add(None, "ZeroPadding2D", [x])])
    for b, blocks in zip((2, 3, 4, 5), (6, 12, 32, 32)):  # DenseNet-169
        for i in range(1, blocks + 1):
            p = f"conv{b}_block{i}"
            y = add(f"{p}_0_relu", "Activation", [add(f"{p}_0_bn", "BatchNormalization", [x])], activation="relu")
            y = add(f"{p}_1_conv", "Conv2D", [y])
            y = add(f"{p}_1_relu", "Activation", [add(f"{p}_1_bn", "BatchNormalization", [y])], activation="relu")
            x = add(f"{p}_concat", "Concatenate", [x, add(f"{p}_2_conv", "Conv2D", [y])])
        if b < 5:
            y = add(f"pool{b}_relu", "Activation", [add(f"pool{b}_bn", "BatchNormalization", [x])], activation="relu")
            x = add(f"pool{b}_pool", "AveragePooling2D", [add(f"pool{b}_conv", "Conv2D", [y])])
    x = add("bn", "BatchNormalization", [x])
    if bottleneck_relu:
        x = add("relu", "Activation", [x], activation="relu")
    prev = add("conv2", "Conv2D", [x], activation="linear")
    for i, skip in enumerate(dd.SKIPS.values(), 1):
        up = add(f"up{i}_upsampling2d", "BilinearUpSampling2D", [prev], size=[2, 2])
        x = add(f"up{i}_convA", "Conv2D", [add(f"up{i}_concat", "Concatenate", [up, skip])], activation="linear")
        if act_a:
            x = add(None, "LeakyReLU", [x], alpha=0.2)
        x = add(f"up{i}_convB", "Conv2D", [x], activation="linear")
        prev = add(None, "LeakyReLU", [x], alpha=0.2)
    add("conv3", "Conv2D", [prev], activation="linear")
    return {"class_name": "Model", "config": {"name": "model_1", "layers": layers}}


@pytest.fixture(scope="module")
def torch_src():
    """A random densenet169 DepthNet, decoder width 64/1664 (small file), LeakyReLU after convA."""
    torch.manual_seed(0)
    model = create_model("densenet169", 64 / 1664, decoder_act_a=True, bottleneck_relu=True,
                         input_norm="none").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def good_h5(torch_src, tmp_path_factory) -> Path:
    return write_keras_h5(tmp_path_factory.mktemp("dd") / "good.h5", torch_src, act_a=True)


def _variant(good: Path, tmp_path: Path, name: str, edit) -> Path:
    p = tmp_path / name
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


def test_weights_land_where_keras_keeps_them(torch_src, good_h5):
    src = read_densedepth(good_h5)
    assert (src.decoder_filters, src.decoder_act_a, src.bottleneck_relu) == (64, True, True)
    model, meta = import_densedepth(good_h5, dataset="nyu")
    assert meta["imported_from"]["sha256"] == dd._sha256(good_h5) and len(meta["imported_from"]["sha256"]) == 64
    assert (model.input_norm, model.min_depth, model.max_depth) == ("none", 0.1, 10.0)
    ref, got = torch_src.state_dict(), model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        if k.endswith("running_var"):  # Keras' epsilon 1.001e-5 folded in (torch's BN adds 1e-5)
            torch.testing.assert_close(got[k], ref[k] + (1.001e-5 - 1e-5), rtol=0, atol=1e-7)
        elif not k.endswith("num_batches_tracked"):
            assert torch.equal(got[k], ref[k]), k


def test_activations_and_bottleneck_are_read_from_model_config(torch_src, tmp_path):
    p = write_keras_h5(tmp_path / "a.h5", torch_src, act_a=False, bottleneck_relu=False)
    src = read_densedepth(p)
    assert (src.decoder_act_a, src.bottleneck_relu) == (False, False)
    model, _ = import_densedepth(p, dataset="nyu")
    assert (model.decoder_act_a, model.bottleneck_relu) == (False, False)


def test_dataset_sets_range_unless_max_depth_given(good_h5):
    assert import_densedepth(good_h5, dataset="kitti")[0].max_depth == 80.0
    assert import_densedepth(good_h5, dataset="kitti", max_depth=50.0)[0].max_depth == 50.0
    with pytest.raises(ValueError, match="dataset must be one of nyu, kitti"):
        import_densedepth(good_h5, dataset="make3d")


def _one_line_error(path, match):
    with pytest.raises(ModelImportError, match=match) as e:
        import_densedepth(path, dataset="nyu")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_bad_files_get_one_line_naming_the_problem(good_h5, torch_src, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    _one_line_error(text, "not a readable HDF5 file")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good_h5.read_bytes()[: good_h5.stat().st_size // 2])
    _one_line_error(truncated, "HDF5")
    weights_only = _variant(good_h5, tmp_path, "w.h5", lambda f: f.__delitem__("model_weights"))
    _one_line_error(weights_only, "no 'model_weights' group")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("model_weights").attrs["layer_names"] = [b"dense_1"]
    _one_line_error(other, "missing layer 'conv2'")
    _one_line_error(write_keras_h5(tmp_path / "m.h5", torch_src, True, drop=["conv4_block7_1_bn"]),
                    "missing layer 'conv4_block7_1_bn'")
    _one_line_error(write_keras_h5(tmp_path / "n.h5", torch_src, True, model_config_attr=False),
                    "no 'model_config' attribute")
    _one_line_error(write_keras_h5(tmp_path / "d201.h5", torch_src, True, extra_layers=["conv4_block33_0_bn"]),
                    "DenseNet-201 DenseDepth model")


def test_wrong_shapes_name_the_layer(good_h5, tmp_path):
    def reshape(name, var, arr):
        def edit(f):
            g = f["model_weights"][name]
            del g[f"{name}/{var}:0"]
            g.create_dataset(f"{name}/{var}:0", data=arr)
        return edit

    p = _variant(good_h5, tmp_path, "a.h5", reshape("up2_convB", "kernel", np.zeros((3, 3, 16, 8), np.float32)))
    with pytest.raises(ModelImportError, match=r"layer 'up2_convB' kernel has shape \(3, 3, 16, 8\), expected "
                                               r"\(3, 3, 16, 16\)"):
        import_densedepth(p)
    p = _variant(good_h5, tmp_path, "b.h5", reshape("conv2", "kernel", np.zeros((1, 1, 1000, 64), np.float32)))
    _one_line_error(p, "layer 'conv2' reads 1000 channels, expected 1664")
    p = _variant(good_h5, tmp_path, "c.h5", reshape("conv2", "kernel", np.zeros((1, 1, 1664, 8), np.float32)))
    _one_line_error(p, "layer 'conv2' has 8 filters")
    p = _variant(good_h5, tmp_path, "d.h5", reshape("conv2", "kernel", np.zeros((1, 1, 1920, 64), np.float32)))
    _one_line_error(p, "DenseNet-201")


@pytest.mark.parametrize("layer,key,value,match", [
    ("up3_upsampling2d", "class_name", "UpSampling2D", "layer 'up3_upsampling2d' is UpSampling2D"),
    ("leaky_re_lu_1", "alpha", 0.3, "LeakyReLU\\(0.3\\)"),
    ("up2_convB", "activation", "relu", "layer 'up2_convB' has activation 'relu'"),
])
def test_unexpected_graph_is_refused(torch_src, tmp_path, layer, key, value, match):
    p = write_keras_h5(tmp_path / "g.h5", torch_src, act_a=True)
    with h5py.File(p, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        for lay in cfg["config"]["layers"]:
            if lay["name"] == layer:
                (lay if key == "class_name" else lay["config"])[key] = value
        f.attrs["model_config"] = json.dumps(cfg).encode()
    _one_line_error(p, match)


def test_cli_writes_a_checkpoint_and_refuses_bad_files(good_h5, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["import", "densedepth", str(good_h5), "--out", str(out), "--dataset", "kitti"]) == 0
    cfg = read_config(out)
    assert (cfg["encoder"], cfg["max_depth"], cfg["min_depth"]) == ("densenet169", 80.0, 0.1)
    assert cfg["decoder_width"] == 64 / 1664
    assert cfg["meta"]["imported_from"]["sha256"] == dd._sha256(good_h5)
    assert "sha256" in capsys.readouterr().out
    bad = tmp_path / "bad.h5"
    bad.write_text("x")
    assert main(["import", "densedepth", str(bad), "--out", str(tmp_path / "o2"), "--dataset", "nyu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transferdepth: error:") and "\n" not in err and "bad.h5" in err
    assert not (tmp_path / "o2").exists()


@NEEDS_MODELS_BRANCH
def test_checkpoint_round_trip_api_and_onnx_export(torch_src, tmp_path):
    """The imported checkpoint reloads identically (no convA activation: not the default) and the API and
    the ONNX export give the imported network's metres."""
    ort = pytest.importorskip("onnxruntime")
    from transferdepth.api.estimator import DepthEstimator
    from transferdepth.deploy.export import export_checkpoint

    h5 = write_keras_h5(tmp_path / "a.h5", torch_src, act_a=False)
    assert main(["import", "densedepth", str(h5), "--out", str(tmp_path / "c"), "--dataset", "nyu"]) == 0
    model, _ = import_densedepth(h5, dataset="nyu")
    back = load_checkpoint(tmp_path / "c")
    assert (back.decoder_act_a, back.bottleneck_relu, back.input_norm) == (False, True, "none")
    rgb = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    x = rgb_to_tensor(rgb)
    torch.testing.assert_close(infer(back, x, flip=False), infer(model, x, flip=False), rtol=0, atol=0)
    api = DepthEstimator.from_pretrained(tmp_path / "c", device="cpu", flip=True).predict(rgb)
    np.testing.assert_allclose(api, infer(model, x, flip=True)[0, 0].numpy(), rtol=0, atol=1e-6)
    onnx_path = export_checkpoint(tmp_path / "c", "onnx", tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"rgb": x.numpy()})
    np.testing.assert_allclose(out, infer(model, x, flip=False).numpy(), rtol=0, atol=1e-4)


# --- parity with Keras (needs tensorflow + tf-keras) --------------------------------------------


def _frame(rgbd_root: Path, name: str, size: tuple[int, int]) -> np.ndarray:
    img = Image.open(rgbd_root / "7scenes-redkitchen" / f"frame-{name}.color.jpg").convert("RGB")
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.array(img)


@pytest.fixture(scope="module", params=list(VARIANTS))
def keras_case(request, rgbd_root, tmp_path_factory):
    """(variant, h5 path, {size: (uint8 frame, Keras depth in metres)}) for one DenseDepth variant."""
    pytest.importorskip("tensorflow", reason="the Keras parity test needs the [keras-parity] extra "
                                             "(tensorflow, tf-keras)")
    pytest.importorskip("tf_keras", reason="the Keras parity test needs tf-keras ([keras-parity] extra)")
    import keras_reference as kr

    variant = request.param
    kmodel = kr.build_densedepth(variant)
    kr.randomize(kmodel, _frame(rgbd_root, "000010", (192, 256))[None].astype(np.float32) / 255.0)
    path = tmp_path_factory.mktemp(f"keras-{variant}") / "model.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is legacy": it is the format DenseDepth used
        kmodel.save(path, save_format="h5")
    refs = {}
    for size in SIZES:
        rgb = _frame(rgbd_root, "000000", size)
        refs[size] = (rgb, kr.keras_depth_m(kmodel, rgb[None].astype(np.float32) / 255.0)[0])
    del kmodel
    gc.collect()
    return variant, path, refs


def _max_diff_m(model, rgb: np.ndarray, ref_m: np.ndarray) -> float:
    depth = infer(model, rgb_to_tensor(rgb.copy()), flip=False, output_size=ref_m.shape)[0, 0].numpy()
    return float(np.abs(depth - ref_m).max())


def test_keras_parity_both_variants_both_sizes(keras_case, capsys):
    variant, path, refs = keras_case
    src = read_densedepth(path)
    assert (src.decoder_width, src.decoder_act_a, src.bottleneck_relu) == (*VARIANTS[variant], True)
    model, _ = import_densedepth(path, dataset="nyu")
    for size, (rgb, ref) in refs.items():
        assert 0.5 < float(np.median(ref)) < 9.5  # informative metres, not clamped
        diff = _max_diff_m(model, rgb, ref)
        with capsys.disabled():
            print(f"\n[parity] {variant} {size[0]}x{size[1]}: max |torch - keras| = {diff:.2e} m")
        assert diff < TOL_M, (variant, size, diff)


@NEEDS_MODELS_BRANCH
def test_keras_parity_survives_checkpoint_round_trip(keras_case, tmp_path):
    _, path, refs = keras_case
    model, meta = import_densedepth(path, dataset="nyu")
    save_checkpoint(model, tmp_path / "c", meta=meta)
    rgb, ref = refs[(384, 512)]
    assert _max_diff_m(load_checkpoint(tmp_path / "c"), rgb, ref) < TOL_M


def _align_corners_false(x, size=None, mode="nearest", align_corners=None, **kw):
    return F.interpolate(x, size=size, mode=mode, align_corners=False if mode == "bilinear" else align_corners)


@pytest.mark.parametrize("mutation", ["upsampling align_corners=False", "no bottleneck relu",
                                      "torch BatchNorm eps", "convA activation flipped"])
def test_keras_parity_fails_when_a_detail_changes(keras_case, mutation, monkeypatch, capsys):
    variant, path, refs = keras_case
    if mutation == "torch BatchNorm eps":
        monkeypatch.setattr(dd, "KERAS_BN_EPS", 1e-5)  # no fold: torch's 1e-5 instead of Keras' 1.001e-5
    model, _ = import_densedepth(path, dataset="nyu")
    if mutation == "upsampling align_corners=False":
        monkeypatch.setattr(decoder_mod, "F", type("F", (), {"interpolate": staticmethod(_align_corners_false)}))
    elif mutation == "no bottleneck relu":
        model.bottleneck_relu = False
    elif mutation == "convA activation flipped":
        for block in (model.decoder.up1, model.decoder.up2, model.decoder.up3, model.decoder.up4):
            block.act_a = not block.act_a
    rgb, ref = refs[(384, 512)]
    diff = _max_diff_m(model, rgb, ref)
    with capsys.disabled():
        print(f"\n[mutation] {variant} {mutation}: max |torch - keras| = {diff:.2e} m")
    assert diff > TOL_M, (mutation, diff)
