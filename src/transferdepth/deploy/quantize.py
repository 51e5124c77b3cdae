"""int8 quantisation of an exported float32 ONNX graph: calibration sets, settings, `quantize_onnx`.

float32 graph -> onnxruntime `quant_pre_process` -> `quantize_static` (QDQ, uint8 activations per tensor,
per-channel int8 weights, calibrated on a few images: a dataset spec, an image folder, or by default a fixed
set of procedural rooms) -> `bias_correction.correct_biases` (against the float graph, same images). The last
convolution, the DepthNorm inversion and every Resize stay float32 by default (the most accurate setting
measured on real data, docs/using.md). The settings go into the file's metadata (`quant_method`).

`quantizer="nncf"`: NNCF's post-training quantisation instead (`nncf.quantize`: MinMax, preset "mixed", i.e.
int8 symmetric per-channel weights and 8-bit asymmetric activations, then its fast bias correction), with the
same nodes left float32, on the ONNX graph (`quantize_onnx`, run by onnxruntime) or on the OpenVINO model read
from it (`quantize_openvino`, run by OpenVINO). Accuracy of both against ours: docs/using.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from transferdepth.deploy.bias_correction import correct_biases
from transferdepth.deploy.contract import INPUT_NAME, ExportError, quiet
from transferdepth.utils import progress

DEFAULT_CALIBRATION = "procedural:n=16&seed=1234&height=240&width=320"
DEFAULT_CALIBRATION_SIZE = (240, 320)  # (H, W) calibration images are resized to
CALIBRATION_SIDE_RANGE = (16, 4096)  # pixels, each side of --calibration-size
MAX_CALIBRATION_COUNT = 10_000  # --calibration-count; onnxruntime keeps every calibration output in memory


def check_calibration(count: int, size: tuple[int, int]) -> None:
    """--calibration-count in [1, MAX_CALIBRATION_COUNT] and each side of --calibration-size in
    CALIBRATION_SIDE_RANGE pixels, else ExportError naming the flag (checked before anything is read)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CALIBRATION_COUNT:
        raise ExportError(f"--calibration-count must be an integer in [1, {MAX_CALIBRATION_COUNT}], got {count!r}")
    lo, hi = CALIBRATION_SIDE_RANGE
    if len(size) != 2 or not all(isinstance(v, int) and lo <= v <= hi for v in size):
        raise ExportError(f"--calibration-size must be HEIGHTxWIDTH with each side in [{lo}, {hi}] pixels, got "
                          f"{'x'.join(str(v) for v in size)}")


def _quantization_tools() -> Any:
    try:
        import onnxruntime.quantization as q
    except ImportError:
        raise ExportError("--precision int8 needs onnxruntime's quantisation tools (onnxruntime.quantization): "
                          "pip install 'transferdepth[export]'") from None
    return q


def calibration_batches(spec: str, count: int = 16, size: tuple[int, int] = DEFAULT_CALIBRATION_SIZE
                        ) -> list[np.ndarray]:
    """Up to `count` calibration inputs, each (1,3,H,W) float32 RGB in [0,1] at `size` (H, W), from a dataset
    spec (`transferdepth.data.open_dataset`) or a folder of images (evenly spaced over the set).
    An empty set or one that fails to open raises ExportError naming the spec."""
    from PIL import Image

    from transferdepth.data import open_dataset
    from transferdepth.inference.imageio import IMAGE_EXTENSIONS, load_image

    check_calibration(count, tuple(size))
    rgbs: list[np.ndarray] = []
    try:
        if Path(spec).is_dir():
            files = sorted(f for f in Path(spec).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            pick = [files[i] for i in _spread(len(files), count)]
            rgbs = [load_image(f) for f in pick]
        else:
            data = open_dataset(spec)
            rgbs = [data[i]["rgb"] for i in _spread(len(data), count)]
    except (ValueError, OSError) as e:  # DatasetError, ImageError are ValueErrors
        raise ExportError(f"--calibration {spec}: cannot open it ({str(e).splitlines()[0]})") from None
    if not rgbs:
        raise ExportError(f"--calibration {spec}: no images to calibrate on (an empty set)")
    h, w = size
    out = []
    for rgb in rgbs:
        im = Image.fromarray(rgb)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        out.append(np.ascontiguousarray(np.asarray(im).transpose(2, 0, 1)[None], dtype=np.float32) / 255.0)
    return out


def _spread(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n) (all of them when n <= count)."""
    if n <= count:
        return list(range(n))
    return sorted({int(i * n / count) for i in range(count)})


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_EXCLUDES = ("none", "head", "last-conv", "last-conv+resize")
ACTIVATION_TYPES = ("uint8", "int8")
DEFAULT_CALIBRATION_METHOD = "minmax"
# uint8 activations: onnxruntime's CPU QDQ fusion turns every Conv into QLinearConv (U8S8, the VNNI
# kernels); with int8 activations it left a Conv fed by (or feeding) a shared tensor in float32 between
# DequantizeLinear/QuantizeLinear with layout transposes around it (MobileNetV2 480x640: 77 ms -> 36 ms)
DEFAULT_ACTIVATIONS = "uint8"
DEFAULT_QUANT_EXCLUDE = "last-conv+resize"  # the best of those tried on real data (docs/using.md)
QUANTIZERS = ("ours", "nncf")  # ours: onnxruntime quantize_static + bias_correction; nncf: nncf.quantize
DEFAULT_QUANTIZER = "ours"
# asymmetric activations; MobileNetV2 seed 0 of docs/using.md's NNCF table, office set, a throw-away script:
# delta1 -0.0160, abs rel +0.0167 with "mixed"; -0.0177, +0.0206 with "performance" (NNCF's default)
NNCF_PRESET = "mixed"


def quant_method(method: str = DEFAULT_CALIBRATION_METHOD, per_channel: bool = True,
                 exclude: str = DEFAULT_QUANT_EXCLUDE, activations: str = DEFAULT_ACTIVATIONS,
                 bias_correction: bool = True) -> str:
    """The `transferdepth.quantization` metadata line for these settings."""
    kept = {"none": "every supported op quantised",
            "head": "float32 after the last convolution (DepthNorm inversion, resize, clamps)",
            "last-conv": "float32 from the last convolution on (it, the DepthNorm inversion, resize, clamps)",
            "last-conv+resize": "float32 from the last convolution on and every Resize (the decoder's upsampling)"
            }[exclude]
    return (f"onnxruntime quantize_static: QDQ, {activations} activations (per tensor, asymmetric, {method}), "
            f"int8 weights (symmetric) "
            f"{'per channel' if per_channel else 'per tensor'}; {kept}"
            + ("; biases corrected on the calibration images (empirical bias correction)" if bias_correction else ""))


def _excluded_nodes(model: Any, exclude: str) -> list[str]:
    """Names of the nodes left in float32: none; the head (every node fed, directly or not, by the last Conv's
    output); the last Conv and its head; or those and every Resize node."""
    if exclude == "none":
        return []
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        return []
    last = convs[-1]
    tainted, names = set(last.output), [] if exclude == "head" else [last.name]
    for n in model.graph.node:  # topologically sorted (checked by onnx.checker)
        if n is not last and any(i in tainted for i in n.input):
            tainted.update(n.output)
            names.append(n.name)
    if exclude == "last-conv+resize":
        names += [n.name for n in model.graph.node if n.op_type == "Resize" and n.name not in names]
    return names


def nncf_method(exclude: str = DEFAULT_QUANT_EXCLUDE, bias_correction: bool = True, backend: str = "onnx") -> str:
    """The `transferdepth.quantization` metadata line of an NNCF quantisation (`backend`: "onnx" or "openvino")."""
    kept = quant_method(exclude=exclude, bias_correction=False).split("; ", 1)[1]
    return (f"NNCF {_nncf().__version__} post-training quantisation on the {backend} model: MinMax, preset "
            f"{NNCF_PRESET} (int8 symmetric per-channel weights, 8-bit asymmetric per-tensor activations); {kept}"
            + ("; NNCF fast bias correction" if bias_correction else ""))


def _check_quantization(method: str = DEFAULT_CALIBRATION_METHOD, exclude: str = DEFAULT_QUANT_EXCLUDE,
                        per_channel: bool = True, activations: str = DEFAULT_ACTIVATIONS,
                        bias_correction: bool = True, quantizer: str = DEFAULT_QUANTIZER) -> None:
    if quantizer not in QUANTIZERS:
        raise ExportError(f"quantizer {quantizer}: choose one of {', '.join(QUANTIZERS)}")
    if quantizer == "nncf":  # NNCF chooses these itself
        _nncf()  # installed? (before the export's work)
        for name, value, default in (("method", method, DEFAULT_CALIBRATION_METHOD), ("per_channel", per_channel, True),
                                     ("activations", activations, DEFAULT_ACTIVATIONS)):
            if value != default:
                raise ExportError(f"quantisation {name} {value}: only with quantizer ours (NNCF sets its own)")
    if not isinstance(bias_correction, bool):
        raise ExportError(f"bias_correction must be True or False, got {bias_correction!r}")
    if activations not in ACTIVATION_TYPES:
        raise ExportError(f"quantisation activations {activations}: choose one of {', '.join(ACTIVATION_TYPES)}")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method {method}: choose one of {', '.join(CALIBRATION_METHODS)}")
    if exclude not in QUANT_EXCLUDES:
        raise ExportError(f"quantisation exclude {exclude}: choose one of {', '.join(QUANT_EXCLUDES)}")


def quantize_onnx(proto: Any, batches: list[np.ndarray], *, method: str = DEFAULT_CALIBRATION_METHOD,
                  per_channel: bool = True, exclude: str = DEFAULT_QUANT_EXCLUDE,
                  activations: str = DEFAULT_ACTIVATIONS, bias_correction: bool = True,
                  quantizer: str = DEFAULT_QUANTIZER) -> tuple[Any, dict[str, str]]:
    """A float32 graph -> its 8-bit QDQ graph (int8 weights, per channel by default; `activations` "uint8"
    (default) or "int8", per tensor, calibrated with `method` ("minmax", "entropy", "percentile") on `batches`
    of (1,3,H,W) float32 RGB in [0,1]), and metadata describing the method. exclude: which nodes stay float32
    ("none"; "head": those after the last convolution; "last-conv": that convolution too; "last-conv+resize":
    also every Resize). bias_correction: shift each quantised convolution's bias so that its mean output on
    `batches` matches the float graph's (`transferdepth.deploy.bias_correction`; per convolution one pass of the
    part of the graph it depends on). quantizer "nncf": `nncf.quantize` on the graph instead (NNCF_PRESET, the
    same `exclude`, its fast bias correction unless bias_correction is False; method, per_channel and
    activations must stay at their defaults)."""
    import tempfile

    import onnx

    _check_quantization(method, exclude, per_channel, activations, bias_correction, quantizer)
    if quantizer == "nncf":
        out = _nncf_quantize(proto, batches, lambda x: {INPUT_NAME: x}, _excluded_nodes(proto, exclude),
                             bias_correction)
        return out, {"transferdepth.quantization": nncf_method(exclude, bias_correction, "onnx")}
    q = _quantization_tools()

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(progress(batches, desc="int8 calibration", unit="img"))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {INPUT_NAME: x}

    calib = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
             "percentile": q.CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="transferdepth-int8-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, str(src))
        with quiet():
            try:
                q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # pre-processing is an optimisation; quantise the plain graph if it fails
                pre = src
            excluded = _excluded_nodes(onnx.load(str(pre)), exclude)
            q.quantize_static(str(pre), str(dst), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                              activation_type={"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}[activations],
                              weight_type=q.QuantType.QInt8,
                              calibrate_method=calib, nodes_to_exclude=excluded,
                              extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        out = onnx.load(str(dst))
        if bias_correction:
            correct_biases(out, onnx.load(str(pre)), [{INPUT_NAME: b} for b in batches])
    return out, {"transferdepth.quantization": quant_method(method, per_channel, exclude, activations,
                                                            bias_correction)}


def _nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise ExportError("the nncf quantizer needs NNCF: pip install 'transferdepth[openvino]'") from None
    nncf.set_log_level(logging.ERROR)  # else one INFO line per node left out
    return nncf


def _nncf_quantize(model: Any, batches: list[np.ndarray], feed: Any, ignored: list[str], bias_correction: bool) -> Any:
    """`nncf.quantize` of `model` (an onnx ModelProto or an openvino Model) calibrated on every one of `batches`
    (`feed`: batch -> the model's input), the nodes named in `ignored` left float32 (names absent from the
    model are skipped), preset NNCF_PRESET, fast bias correction unless `bias_correction` is False."""
    nncf = _nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    with quiet():
        return nncf.quantize(model, nncf.Dataset(batches, feed), preset=nncf.QuantizationPreset(NNCF_PRESET),
                             subset_size=len(batches), fast_bias_correction=True,
                             ignored_scope=nncf.IgnoredScope(names=list(ignored), validate=False),
                             advanced_parameters=AdvancedQuantizationParameters(
                                 disable_bias_correction=not bias_correction))


def quantize_openvino(proto: Any, batches: list[np.ndarray], *, exclude: str = DEFAULT_QUANT_EXCLUDE,
                      bias_correction: bool = True) -> tuple[Any, dict[str, str]]:
    """A float32 ONNX graph -> an int8 OpenVINO model (`openvino.Model`, FakeQuantize nodes; save it with
    `openvino.save_model`) by NNCF (as `quantize_onnx(quantizer="nncf")`: NNCF_PRESET, calibrated on `batches`
    of (1,3,H,W) float32 RGB in [0,1], the same `exclude`, fast bias correction), and its metadata line."""
    import tempfile

    import onnx

    _check_quantization(exclude=exclude, bias_correction=bias_correction, quantizer="nncf")
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("OpenVINO int8 needs openvino: pip install 'transferdepth[openvino]'") from None
    names = _excluded_nodes(proto, exclude)
    names += [f"{n}/WithoutBiases" for n in names]  # OpenVINO splits a Conv with bias into Convolution + Add
    with tempfile.TemporaryDirectory(prefix="transferdepth-ov-int8-") as tmp:
        onnx.save(proto, str(Path(tmp) / "fp32.onnx"))
        model = ov.Core().read_model(str(Path(tmp) / "fp32.onnx"))
        out = _nncf_quantize(model, batches, lambda x: x, names, bias_correction)
    return out, {"transferdepth.quantization": nncf_method(exclude, bias_correction, "openvino")}
