"""int8 exports keep a fine-tuned model's accuracy on real data, and this check can fail (issue 13 item 3).

The smaller version of `benchmarks/deploy/quantization.py` (one encoder, one seed, the default int8 settings; same
code: the real-data study's `fine_tune`, `export_onnx`, the ONNX engine scored by `evaluate`): MobileNetV2 with ImageNet
weights fine-tuned STEPS steps at 128x96 on 7-Scenes redkitchen frames < 800 (seed 0), exported fp32 and int8
(export's default settings, calibrated on 32 training frames at 96x128), both run on the ONNX engine and
scored on 7-Scenes frames >= 800 (metric) and SUN3D office (median-scaled).
- good calibration, on both sets: delta1 drops by at most 0.02 (the issue's bound) and abs rel moves by at
  most 0.02 either way (a bad calibration can push depth up or down);
- one black image as the calibration set: the same bound is violated (proof that the check can fail).
Figures that set the bounds (docs/using.md, "int8 accuracy on real data"; models fine-tuned in channels_last,
27 Nov 2026): the default export (bias-corrected) at seeds 0, 1, 2 changes kitchen delta1 by -0.0031, -0.0026,
+0.0147 and abs rel by at most 0.0031 on either set; without bias correction the changes were +0.0116,
-0.0396, +0.0389 (MobileNetV2's depth sits near delta1's 1.25 threshold, so a 1% change of scale moves it by
about 0.03; a two-sided delta1 bound would fail seed 2). One black image drops kitchen delta1 by 0.293, 0.225,
0.050 and raises its abs rel by 0.099, 0.085, 0.052. CI runs seed 0; with the correction every seed measured
stays inside the bound with a margin of about 0.017, so another CPU kind's slightly different fine-tune
stays inside it too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from transferdepth.inference.checkpoint import load_checkpoint
from transferdepth.study.compare import Variant

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "deploy"))
from quantization import (  # noqa: E402
    CALIBRATION,
    CALIBRATION_COUNT,
    black_folder,
    cached,
    change,
    export_and_score,
)
from real_data_study import KITCHEN_HELD, OFFICE, eval_sets, fine_tune  # noqa: E402

STEPS = 100  # the study's recipe (real_data_study.STEPS)
MAX_D1_DROP, MAX_ABS_REL_CHANGE = 0.02, 0.02


def within_bound(delta: dict[str, dict[str, float]]) -> bool:
    """Both test sets: delta1 change >= -MAX_D1_DROP and |abs rel change| <= MAX_ABS_REL_CHANGE."""
    return all(d["d1"] >= -MAX_D1_DROP and abs(d["abs_rel"]) <= MAX_ABS_REL_CHANGE for d in delta.values())


@pytest.fixture(scope="module")
def fine_tuned(rgbd_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantization")
    tests = eval_sets(cached(KITCHEN_HELD), cached(OFFICE))
    (run,) = fine_tune([Variant("mobilenetv2", "mobilenetv2", True)], [0], out / "runs", steps=STEPS, tests=tests)
    model = load_checkpoint(run.run_dir / "checkpoint")
    fp32 = export_and_score(model, out, "fp32", tests, precision="fp32")["metrics"]
    return model, tests, fp32, out


@pytest.mark.slow
def test_int8_keeps_accuracy_on_real_data(fine_tuned):
    model, tests, fp32, out = fine_tuned
    int8 = export_and_score(model, out, "int8", tests, calibration=CALIBRATION, count=CALIBRATION_COUNT)["metrics"]
    delta = change(fp32, int8)
    print("\nint8 vs fp32 (good calibration):", json.dumps({"fp32": fp32, "int8": int8, "change": delta}))
    assert within_bound(delta), delta


@pytest.mark.slow
def test_one_black_calibration_image_fails_the_bound(fine_tuned):
    model, tests, fp32, out = fine_tuned
    int8 = export_and_score(model, out, "int8_black", tests, calibration=black_folder(out / "black"),
                            count=1)["metrics"]
    delta = change(fp32, int8)
    print("\nint8 vs fp32 (one black calibration image):", json.dumps({"int8": int8, "change": delta}))
    assert not within_bound(delta), delta


def _float_nodes(path: Path) -> dict[str, list[str]]:
    """Per op type, the nodes of an int8 QDQ file left out of quantisation: a Conv whose weight is a float
    initializer (not dequantised int8); a Resize whose output is not requantised with its input's own scale
    (the quantiser ties a quantised Resize's output to its input's scale and zero point, and onnxruntime
    then runs it in int8; a Resize left out gets its own calibrated scale and runs in float32 unless the
    two scales happen to be equal)."""
    import onnx

    from transferdepth.deploy.bias_correction import graph_links

    graph = onnx.load(str(path)).graph
    init = {t.name for t in graph.initializer}
    producer, consumers = graph_links(graph)
    out: dict[str, list[str]] = {}
    for n in graph.node:
        if n.op_type == "Conv" and n.input[1] in init:
            out.setdefault("Conv", []).append(n.name)
        if n.op_type == "Resize":
            dq, qs = producer.get(n.input[0]), consumers.get(n.output[0], [])
            shared = (dq is not None and dq.op_type == "DequantizeLinear" and len(qs) == 1
                      and qs[0].op_type == "QuantizeLinear" and dq.input[1] == qs[0].input[1])
            if not shared:
                out.setdefault("Resize", []).append(n.name)
    return out


def test_default_int8_keeps_last_conv_and_resizes_float(tmp_path):
    """The default (exclude "last-conv+resize") leaves the last convolution and every Resize out of
    quantisation; "none" quantises them (the setting was chosen from the figures in docs/using.md)."""
    from helpers import tiny_model

    from transferdepth.deploy.export import export_onnx

    model = tiny_model()
    calib = dict(calibration="procedural:n=2&seed=1&height=64&width=96", calibration_count=2,
                 calibration_size=(64, 96))
    default = _float_nodes(export_onnx(model, tmp_path / "default.onnx", precision="int8", **calib))
    plain = _float_nodes(export_onnx(model, tmp_path / "none.onnx", precision="int8", quantization={"exclude": "none"},
                                     **calib))
    assert default["Conv"] == ["/model/decoder/conv3/Conv"], default
    assert len(default["Resize"]) == 5, default  # the decoder's four upsamplings and the output's
    assert "Conv" not in plain and not [n for n in plain.get("Resize", []) if "/decoder/" in n], plain


def test_unknown_quantization_settings_are_one_line_errors(tmp_path):
    from helpers import tiny_model

    from transferdepth.deploy.export import ExportError, export_onnx

    for options, message in (({"method": "mse"}, "calibration method mse: choose one of minmax, entropy, percentile"),
                              ({"exclude": "all"}, "quantisation exclude all: choose one of none, head, last-conv, "
                                                   "last-conv+resize"),
                             ({"activations": "int16"}, "quantisation activations int16: choose one of uint8, int8"),
                             ({"bias_correction": "no"}, "bias_correction must be True or False, got 'no'")):
        with pytest.raises(ExportError) as e:
            export_onnx(tiny_model(), tmp_path / "x.onnx", precision="int8", quantization=options)
        assert str(e.value) == message
    assert not (tmp_path / "x.onnx").exists()
