"""DenseDepth's released Keras models (nyu.h5, kitti.h5) -> a transferdepth DepthNet, read with h5py alone.

A DenseDepth file is a Keras 2 HDF5 (`model.save`): weights under ``model_weights/<layer>/<weight name>``
(each layer group lists its `weight_names`), the layer graph as JSON in the root attribute `model_config`.

What is read from the file, never assumed:
- decoder width: conv2's kernel (1, 1, 1664, F): width = F / 1664 (1.0 in the January 2019 nyu.h5 of
  commit 2124ac9; 0.5 for models built by model.py since 10a688f);
- LeakyReLU(0.2) after each up-block's convA (``decoder_act_a``): whether `model_config` has a LeakyReLU
  between upN_convA and upN_convB (absent before ea4a455, March 2019);
- the bottleneck activation (``bottleneck_relu``): whether conv2 reads Keras DenseNet's final `relu` or `bn`.

What is DenseDepth's and fixed: a keras.applications DenseNet-169 encoder (DenseNet-201 files are refused
by name), skips pool3_pool / pool2_pool / pool1 / conv1/relu, input RGB / 255 (``input_norm="none"``), output
DepthNorm = max_depth / depth, and bilinear x2 upsampling with align_corners=True (tf.image.resize_images in
DenseDepth's layers.py of January 2019, when the released files were trained), which is what our decoder
does. The depth range cannot be read from the weights (nyu.h5 and kitti.h5 share one architecture): the
caller names the dataset (10 m or 80 m).

Keras' DenseNet BatchNorm epsilon is 1.001e-5, torch's 1e-5: the difference is folded into the running
variance (``running_var = moving_variance + 1.001e-5 - 1e-5``), so the imported network is a standard torch
DepthNet that every checkpoint reader reloads unchanged and the normalisation is Keras' exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferdepth.models import DepthNet, create_model
from transferdepth.recipe import KITTI_MAX_DEPTH_M, MAX_DEPTH_M, MIN_DEPTH_M

KERAS_BN_EPS = 1.001e-5  # keras.applications.densenet's BatchNormalization(epsilon=1.001e-5)
ENCODER = "densenet169"
BOTTLENECK_CHANNELS = 1664  # DenseNet-169's last feature map (DenseNet-201: 1920)
DATASET_RANGES = {"nyu": (MIN_DEPTH_M, MAX_DEPTH_M), "kitti": (MIN_DEPTH_M, KITTI_MAX_DEPTH_M)}  # metres
SKIPS = {"up1": "pool3_pool", "up2": "pool2_pool", "up3": "pool1", "up4": "conv1/relu"}  # model.py's concat_with
LEAKY_SLOPE = 0.2
_BN_VARS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


class ModelImportError(ValueError):
    """A file that is not a DenseDepth model this importer can read exactly; the message is one line."""


@dataclass
class DenseDepthFile:
    """What `read_densedepth` found in a DenseDepth HDF5: architecture switches and the raw Keras weights."""

    path: Path
    sha256: str
    keras_version: str | None
    decoder_filters: int  # F, conv2's output channels
    decoder_act_a: bool
    bottleneck_relu: bool
    weights: dict[str, dict[str, np.ndarray]] = field(repr=False)  # Keras layer -> variable -> array

    @property
    def decoder_width(self) -> float:
        return self.decoder_filters / BOTTLENECK_CHANNELS


def read_densedepth(path: str | os.PathLike) -> DenseDepthFile:
    """Read a DenseDepth Keras HDF5; raises ModelImportError naming the file and the first problem."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelImportError(f"{path}: not a readable HDF5 file ({_short(e)}); expected a Keras .h5 model "
                               "such as DenseDepth's nyu.h5") from None
    try:
        with f:
            return _read(path, f)
    except ModelImportError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:  # h5py on a damaged or truncated file
        raise ModelImportError(f"{path}: unreadable HDF5 content (truncated or damaged file?): {_short(e)}") from None


def densedepth_to_depthnet(src: DenseDepthFile, *, min_depth: float = MIN_DEPTH_M,
                           max_depth: float = MAX_DEPTH_M) -> DepthNet:
    """The DepthNet with `src`'s weights (eval mode): RGB/255 input, depth range [min_depth, max_depth] m."""
    model = create_model(ENCODER, src.decoder_width, min_depth=min_depth, max_depth=max_depth,
                         decoder_act_a=src.decoder_act_a, bottleneck_relu=src.bottleneck_relu, input_norm="none")
    state: dict[str, torch.Tensor] = {}
    for module_name, module in _mapped_modules(model):
        layer = keras_layer_name(module_name)
        found = src.weights.get(layer)
        if found is None:
            raise ModelImportError(f"{src.path}: missing layer '{layer}' (a DenseDepth DenseNet-169 model "
                                   f"of decoder width {src.decoder_width:g} has it; needed for {module_name})")
        for param, value in module.state_dict().items():
            if param == "num_batches_tracked":
                state[f"{module_name}.{param}"] = value
                continue
            var = _BN_VARS[param] if isinstance(module, nn.BatchNorm2d) else {"weight": "kernel", "bias": "bias"}[param]
            if var not in found:
                raise ModelImportError(f"{src.path}: layer '{layer}' has no variable '{var}' "
                                       f"(has {', '.join(sorted(found)) or 'none'})")
            arr = found[var]
            if var == "kernel":
                expected = (*value.shape[2:], value.shape[1], value.shape[0])  # Keras (kh, kw, in, out)
            else:
                expected = tuple(value.shape)
            if tuple(arr.shape) != expected:
                raise ModelImportError(f"{src.path}: layer '{layer}' {var} has shape {tuple(arr.shape)}, expected "
                                       f"{expected} for a DenseDepth DenseNet-169 model of decoder width "
                                       f"{src.decoder_width:g}")
            if not np.isfinite(arr).all():
                raise ModelImportError(f"{src.path}: layer '{layer}' {var} holds NaN or infinite values; the "
                                       "model would predict nothing usable (a diverged or damaged file)")
            if var == "kernel":
                arr = arr.transpose(3, 2, 0, 1)
            elif var == "moving_variance":  # Keras normalises by sqrt(var + 1.001e-5), torch by sqrt(var + eps)
                arr = arr.astype(np.float64) + (KERAS_BN_EPS - module.eps)
            state[f"{module_name}.{param}"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    model.load_state_dict(state, strict=True)
    return model.eval()


def import_densedepth(path: str | os.PathLike, *, dataset: str = "nyu", min_depth: float | None = None,
                      max_depth: float | None = None) -> tuple[DepthNet, dict[str, Any]]:
    """(DepthNet, provenance meta for the checkpoint) from a DenseDepth HDF5.

    dataset: "nyu" (0.1-10 m) or "kitti" (0.1-80 m) sets the depth range unless min_depth/max_depth
    (metres) are given: the range is not stored in the file.
    """
    if dataset not in DATASET_RANGES:
        raise ValueError(f"dataset must be one of {', '.join(DATASET_RANGES)}, got {dataset!r}")
    lo, hi = DATASET_RANGES[dataset]
    lo = lo if min_depth is None else float(min_depth)
    hi = hi if max_depth is None else float(max_depth)
    src = read_densedepth(path)
    model = densedepth_to_depthnet(src, min_depth=lo, max_depth=hi)
    meta = {"imported_from": {
        "format": "DenseDepth Keras HDF5", "file": src.path.name, "sha256": src.sha256,
        "keras_version": src.keras_version, "dataset": dataset, "decoder_filters": src.decoder_filters,
        "decoder_act_a": src.decoder_act_a, "bottleneck_relu": src.bottleneck_relu,
        "input": "RGB / 255 (no mean/std)",
        "upsampling": "bilinear, align_corners=True (DenseDepth's layers.py of January 2019)",
        "bn_eps": f"Keras {KERAS_BN_EPS:g} folded into running_var",
    }}
    return model, meta


def keras_layer_name(module_name: str) -> str:
    """DepthNet module path (densenet169 encoder + decoder) -> the DenseDepth Keras layer holding its weights.

    encoder.body.conv0 -> conv1/conv; norm0 -> conv1/bn; denseblock{b}.denselayer{l}.norm1/conv1/norm2/conv2
    -> conv{b+1}_block{l}_0_bn/_1_conv/_1_bn/_2_conv; transition{t}.norm/conv -> pool{t+1}_bn/_conv;
    norm5 -> bn; decoder.conv2/conv3 -> conv2/conv3; decoder.up{i}.convA/convB -> up{i}_convA/_convB.
    """
    parts = module_name.split(".")
    if parts[:2] == ["encoder", "body"]:
        p = parts[2:]
        fixed = {"conv0": "conv1/conv", "norm0": "conv1/bn", "norm5": "bn"}
        if len(p) == 1 and p[0] in fixed:
            return fixed[p[0]]
        if len(p) == 3 and p[0].startswith("denseblock") and p[1].startswith("denselayer"):
            suffix = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}[p[2]]
            return f"conv{int(p[0][10:]) + 1}_block{int(p[1][10:])}_{suffix}"
        if len(p) == 2 and p[0].startswith("transition"):
            return f"pool{int(p[0][10:]) + 1}_{ {'norm': 'bn', 'conv': 'conv'}[p[1]]}"
    if parts[0] == "decoder":
        return parts[1] if len(parts) == 2 else f"{parts[1]}_{parts[2]}"
    raise KeyError(f"no DenseDepth layer for module {module_name!r}")


# --- reading ------------------------------------------------------------------------------------


def _read(path: Path, f: Any) -> DenseDepthFile:
    if "model_weights" not in f:
        what = "a weights-only Keras file (save_weights)" if "layer_names" in f.attrs else "not a Keras model"
        raise ModelImportError(f"{path}: no 'model_weights' group ({what}); expected a Keras model saved with "
                               "model.save(), such as DenseDepth's nyu.h5")
    mw = f["model_weights"]
    names = [_text(n) for n in mw.attrs["layer_names"]] if "layer_names" in mw.attrs else None
    layer_names = set(names) if names is not None else None
    if layer_names is not None and ("conv4_block33_0_bn" in layer_names or "conv4_block48_0_bn" in layer_names):
        raise ModelImportError(f"{path}: a DenseNet-201 DenseDepth model (is_twohundred=True): not supported, "
                               "transferdepth imports the DenseNet-169 models (nyu.h5, kitti.h5)")
    weights = {name: _layer_vars(mw, name) for name in (names if names is not None else _walk_layers(mw))}
    conv2 = weights.get("conv2", {}).get("kernel")
    if conv2 is None:
        raise ModelImportError(f"{path}: missing layer 'conv2' (DenseDepth's 1x1 decoder input); not a "
                               "DenseDepth model")
    if conv2.ndim != 4 or conv2.shape[:2] != (1, 1):
        raise ModelImportError(f"{path}: layer 'conv2' kernel has shape {conv2.shape}, expected (1, 1, 1664, F)")
    if conv2.shape[2] == 1920:
        raise ModelImportError(f"{path}: a DenseNet-201 DenseDepth model (is_twohundred=True; conv2 reads 1920 "
                               "channels): not supported, transferdepth imports the DenseNet-169 models")
    if conv2.shape[2] != BOTTLENECK_CHANNELS:
        raise ModelImportError(f"{path}: layer 'conv2' reads {conv2.shape[2]} channels, expected {BOTTLENECK_CHANNELS} "
                               "(DenseNet-169's bottleneck)")
    filters = int(conv2.shape[3])
    if filters < 16 or int(BOTTLENECK_CHANNELS * (filters / BOTTLENECK_CHANNELS)) != filters:
        raise ModelImportError(f"{path}: layer 'conv2' has {filters} filters, not 1664 * w for a usable decoder "
                               "width w (at least 16 filters)")
    if "model_config" not in f.attrs:
        raise ModelImportError(f"{path}: no 'model_config' attribute (the layer graph Keras' model.save() "
                               "writes); it is needed to read the decoder's activations")
    try:
        config = json.loads(_text(f.attrs["model_config"]))
        graph_layers = config["config"]["layers"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelImportError(f"{path}: 'model_config' is not a Keras model graph ({_short(e)})") from None
    act_a, bottleneck_relu = _read_graph(path, graph_layers)
    _check_exact_graph(path, graph_layers, act_a, bottleneck_relu)
    keras_version = _text(f.attrs["keras_version"]) if "keras_version" in f.attrs else None
    return DenseDepthFile(path, _sha256(path), keras_version, filters, act_a, bottleneck_relu, weights)


def _read_graph(path: Path, layers: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(decoder_act_a, bottleneck_relu) from the Keras layer graph; checks the decoder's wiring."""
    by_name = {(lay.get("name") or lay.get("config", {}).get("name")): lay for lay in layers}
    inbound: dict[str, list[str]] = {n: list(_inbound_names(lay.get("inbound_nodes", []))) for n, lay in by_name.items()}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n, srcs in inbound.items():
        for s in srcs:
            consumers[s].append(n)

    def need(name: str) -> dict[str, Any]:
        if name not in by_name:
            raise ModelImportError(f"{path}: model_config has no layer '{name}'; not a DenseDepth model")
        return by_name[name]

    def is_leaky(name: str) -> bool:
        lay = by_name[name]
        if lay.get("class_name") != "LeakyReLU":
            return False
        cfg = lay.get("config", {})
        slope = cfg.get("alpha", cfg.get("negative_slope"))
        if slope is None or abs(float(slope) - LEAKY_SLOPE) > 1e-6:
            raise ModelImportError(f"{path}: layer '{name}' is LeakyReLU({slope}), DenseDepth uses {LEAKY_SLOPE}")
        return True

    def only_consumer(name: str) -> str:
        cons = consumers.get(name, [])
        if len(cons) != 1:
            raise ModelImportError(f"{path}: layer '{name}' feeds {cons or 'nothing'}, expected one layer")
        return cons[0]

    for name in ("conv2", "conv3", *(f"up{i}_{c}" for i in range(1, 5) for c in ("convA", "convB"))):
        act = need(name).get("config", {}).get("activation", "linear")
        if act not in ("linear", None):
            raise ModelImportError(f"{path}: layer '{name}' has activation '{act}', DenseDepth's is linear")
    acts_a = []
    for i in range(1, 5):
        up = f"up{i}"
        ups = need(f"{up}_upsampling2d")
        if ups.get("class_name") != "BilinearUpSampling2D":
            raise ModelImportError(f"{path}: layer '{up}_upsampling2d' is {ups.get('class_name')}, expected "
                                   "DenseDepth's BilinearUpSampling2D")
        need(f"{up}_concat")
        concat = inbound[f"{up}_concat"]
        if concat != [f"{up}_upsampling2d", SKIPS[up]]:
            raise ModelImportError(f"{path}: layer '{up}_concat' joins {concat}, expected "
                                   f"['{up}_upsampling2d', '{SKIPS[up]}']")
        after_a = only_consumer(f"{up}_convA")
        if after_a == f"{up}_convB":
            acts_a.append(False)
        elif is_leaky(after_a) and only_consumer(after_a) == f"{up}_convB":
            acts_a.append(True)
        else:
            raise ModelImportError(f"{path}: layer '{up}_convA' feeds '{after_a}', expected LeakyReLU(0.2) "
                                   f"or '{up}_convB'")
        after_b = only_consumer(f"{up}_convB")
        if not is_leaky(after_b):
            raise ModelImportError(f"{path}: layer '{up}_convB' feeds '{after_b}', expected LeakyReLU(0.2)")
    if len(set(acts_a)) != 1:
        raise ModelImportError(f"{path}: the up-blocks disagree on an activation after convA ({acts_a})")
    src = inbound.get("conv2", [])
    if len(src) != 1:
        raise ModelImportError(f"{path}: layer 'conv2' reads {src}, expected DenseNet's 'relu' or 'bn'")
    lay = need(src[0])
    cls, act = lay.get("class_name"), lay.get("config", {}).get("activation")
    if (cls == "Activation" and act == "relu") or cls == "ReLU":
        bottleneck_relu = True
    elif cls == "BatchNormalization":
        bottleneck_relu = False
    else:
        raise ModelImportError(f"{path}: layer 'conv2' reads '{src[0]}' ({cls}), expected DenseNet's final "
                               "'relu' or 'bn'")
    return acts_a[0], bottleneck_relu


DENSENET169_BLOCKS = (6, 12, 32, 32)  # keras.applications.DenseNet169's dense blocks


def expected_graph(act_a: bool, bottleneck_relu: bool) -> dict[str, tuple[str, list[str]]]:
    """DenseDepth's whole Keras graph: layer -> (class, inbound layers), keras.applications' DenseNet-169 (its
    layer names) + DenseDepth's decoder. Keras numbers unnamed layers itself, so they have fixed stand-in
    names here: <input>, <pad1>, <pad2> (the zero paddings before conv1/conv and pool1), <upN_actA>,
    <upN_actB> (the LeakyReLUs after upN_convA / upN_convB)."""
    g: dict[str, tuple[str, list[str]]] = {}

    def add(name: str, cls: str, *src: str) -> str:
        g[name] = (cls, list(src))
        return name

    x = add("conv1/relu", "Activation", add("conv1/bn", "BatchNormalization", add(
        "conv1/conv", "Conv2D", add("<pad1>", "ZeroPadding2D", add("<input>", "InputLayer")))))
    x = add("pool1", "MaxPooling2D", add("<pad2>", "ZeroPadding2D", x))
    for b, n in enumerate(DENSENET169_BLOCKS, 2):
        for i in range(1, n + 1):
            p = f"conv{b}_block{i}"
            y = add(f"{p}_0_relu", "Activation", add(f"{p}_0_bn", "BatchNormalization", x))
            y = add(f"{p}_1_relu", "Activation", add(f"{p}_1_bn", "BatchNormalization", add(f"{p}_1_conv", "Conv2D", y)))
            x = add(f"{p}_concat", "Concatenate", x, add(f"{p}_2_conv", "Conv2D", y))
        if b < 5:
            t = f"pool{b}"
            x = add(f"{t}_pool", "AveragePooling2D", add(f"{t}_conv", "Conv2D", add(
                f"{t}_relu", "Activation", add(f"{t}_bn", "BatchNormalization", x))))
    x = add("bn", "BatchNormalization", x)
    if bottleneck_relu:
        x = add("relu", "Activation", x)
    x = add("conv2", "Conv2D", x)
    for i in range(1, 5):
        up = f"up{i}"
        x = add(f"{up}_convA", "Conv2D", add(f"{up}_concat", "Concatenate",
                                             add(f"{up}_upsampling2d", "BilinearUpSampling2D", x), SKIPS[up]))
        if act_a:
            x = add(f"<{up}_actA>", "LeakyReLU", x)
        x = add(f"<{up}_actB>", "LeakyReLU", add(f"{up}_convB", "Conv2D", x))
    add("conv3", "Conv2D", x)
    return g


def _stand_in_names(layers: list[dict[str, Any]]) -> dict[str, str]:
    """Actual name -> `expected_graph`'s stand-in for the layers Keras names itself (found by their place)."""
    cls = {_layer_name(lay): lay.get("class_name") for lay in layers}
    inbound = {_layer_name(lay): list(_inbound_names(lay.get("inbound_nodes", []))) for lay in layers}
    rename = {n: "<input>" for n, c in cls.items() if c == "InputLayer"}
    consumers_of: dict[str, list[str]] = defaultdict(list)
    for n, srcs in inbound.items():
        for s in srcs:
            consumers_of[s].append(n)
    for src, stand_in, want in [(n, "<pad1>", "ZeroPadding2D") for n in rename] + [
            ("conv1/relu", "<pad2>", "ZeroPadding2D")] + [
            (f"up{i}_conv{ab}", f"<up{i}_act{ab}>", "LeakyReLU") for i in range(1, 5) for ab in "AB"]:
        for c in consumers_of.get(src, []):
            if cls.get(c) == want and c not in rename:
                rename[c] = stand_in
    return rename


def _check_exact_graph(path: Path, layers: list[dict[str, Any]], act_a: bool, bottleneck_relu: bool) -> None:
    """Refuse any model_config that is not exactly DenseDepth's graph (`expected_graph`): an added layer (a
    Lambda, an extra activation), a missing one, another class, or other wiring, naming the first difference.
    The weights of a layer that is not in our network would otherwise be silently dropped."""
    expected = expected_graph(act_a, bottleneck_relu)
    rename = _stand_in_names(layers)
    seen = set()
    for lay in layers:
        name = _layer_name(lay)
        key = rename.get(name, name)
        if key in seen:
            raise ModelImportError(f"{path}: model_config has two layers named '{name}'; not DenseDepth's graph")
        seen.add(key)
        if key not in expected:
            raise ModelImportError(f"{path}: model_config has a layer '{name}' ({lay.get('class_name')}) that "
                                   "DenseDepth's graph does not have; refusing a graph whose extra layers would be "
                                   "silently dropped")
        want_cls, want_src = expected[key]
        src = [rename.get(s, s) for s in _inbound_names(lay.get("inbound_nodes", []))]
        if lay.get("class_name") != want_cls or src != want_src:
            shown = [s for s in _inbound_names(lay.get("inbound_nodes", []))]
            raise ModelImportError(f"{path}: layer '{name}' is {lay.get('class_name')} reading {shown}; DenseDepth's "
                                   f"is {want_cls} reading {want_src}")
    missing = [k for k in expected if k not in seen]
    if missing:
        raise ModelImportError(f"{path}: model_config lacks {len(missing)} layer(s) of DenseDepth's graph, e.g. "
                               f"'{missing[0]}'")


def _layer_name(lay: dict[str, Any]) -> str:
    return str(lay.get("name") or lay.get("config", {}).get("name"))


def _inbound_names(obj: Any) -> Iterator[str]:
    """Layer names in a Keras `inbound_nodes` entry (Keras 2: [[name, node, tensor, kwargs]]; Keras 3 dicts)."""
    if isinstance(obj, dict):
        if "keras_history" in obj:
            yield str(obj["keras_history"][0])
            return
        for v in obj.values():
            yield from _inbound_names(v)
    elif isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            yield obj[0]
            return
        for v in obj:
            yield from _inbound_names(v)


def _layer_vars(mw: Any, name: str) -> dict[str, np.ndarray]:
    """Keras layer group -> {'kernel': array, 'bias': ..., 'gamma': ...} (':0' suffixes dropped)."""
    if name not in mw:
        return {}
    g = mw[name]
    out = {}
    for wn in (_text(w) for w in g.attrs.get("weight_names", [])):
        out[wn.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(g[wn])
    return out


def _walk_layers(mw: Any) -> list[str]:
    """Layer names of a model_weights group without a `layer_names` attribute: groups with weight_names."""
    found: list[str] = []
    mw.visit(lambda n: found.append(n) if "weight_names" in mw[n].attrs else None)
    return found


def _mapped_modules(model: DepthNet) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d):
            yield name, m


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes | np.bytes_) else str(v)


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
