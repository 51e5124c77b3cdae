"""int8 accuracy on real data, a smaller version of benchmarks/quantization.py (runs in CI, a few minutes).

MobileNetV2 (ImageNet weights from the registry mirror) is fine-tuned briefly on 7-Scenes redkitchen
frames < 800 at 160x120; its fp32 and int8 ONNX exports are scored by the ONNX engine on every 4th frame
>= 800 (metric depth, full frame). int8 calibrated on training frames must keep delta1 within 0.02 of fp32,
either way: a briefly trained model is far from converged, so a broken int8 graph can move delta1 up as
well as down (benchmarks/quantization.py, 40 steps: one-black-image calibration moved kitchen delta1 from
0.104 to 0.172, a +0.068 change, while abs rel rose 0.009). The same check fails for that deliberately bad
calibration (activation ranges far too narrow, so real images saturate), so it can fail.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.checkpoint import load_checkpoint
from transferdepth.config import load_config
from transferdepth.data import InMemory, open_dataset
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.export import export_onnx
from transferdepth.metrics import depth_metrics
from transferdepth.models import get_spec
from transferdepth.train import train

pytest.importorskip("onnxruntime.quantization")
SIZE = (120, 160)
STEPS = 80
MAX_D1_DROP = 0.02


@pytest.fixture(scope="module")
def tuned(rgbd_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "run"
    cfg = load_config(overrides=dict(encoder="mobilenetv2", pretrained=True, height=SIZE[0], width=SIZE[1],
                                     batch_size=8, max_steps=STEPS, num_workers=0, seed=0, log_every=10**6,
                                     tensorboard=False, progress=False, ckpt_every=10**6))
    spec = get_spec("mobilenetv2")
    ds = TransformedDataset(InMemory(open_dataset("rgbd:7scenes-redkitchen?index=:800"), SIZE),
                            TrainTransform(spec.mean, spec.std, SIZE, cfg.flip_p, cfg.swap_p), seed=cfg.seed)
    train(cfg, out, train_dataset=ds)
    return load_checkpoint(out / "checkpoint")


def _d1_abs_rel(onnx_path) -> dict[str, float]:
    est = DepthEstimator.from_onnx(onnx_path, input_size=SIZE, threads=2)
    held = open_dataset("rgbd:7scenes-redkitchen?index=800:")
    idx = range(0, len(held), 4)
    samples = [held[i] for i in idx]
    pred = np.stack([est.predict_rgb([s["rgb"]])[0] for s in samples])
    gt = np.stack([s["depth"] for s in samples])
    r = depth_metrics(pred, gt, "eigen", crop=(0, gt.shape[1] - 1, 0, gt.shape[2] - 1))
    return {"d1": float(r["d1"]), "abs_rel": float(r["abs_rel"])}


@pytest.mark.slow
def test_int8_keeps_accuracy_and_a_bad_calibration_fails_the_check(tuned, tmp_path):
    black = tmp_path / "black"
    black.mkdir()
    Image.new("RGB", (SIZE[1], SIZE[0])).save(black / "black.png")
    fp32 = _d1_abs_rel(export_onnx(tuned, tmp_path / "fp32.onnx"))
    good = _d1_abs_rel(export_onnx(tuned, tmp_path / "int8.onnx", precision="int8", calibration_size=SIZE,
                                   calibration="rgbd:7scenes-redkitchen?index=:800", calibration_count=8))
    bad = _d1_abs_rel(export_onnx(tuned, tmp_path / "bad.onnx", precision="int8", calibration_size=SIZE,
                                  calibration=str(black)))
    summary = json.dumps({"fp32": fp32, "int8": good, "int8 calibrated on one black image": bad})
    print("\nint8 accuracy:", summary)
    assert fp32["d1"] > 0.5, summary  # a model worth quantising
    assert abs(fp32["d1"] - good["d1"]) <= MAX_D1_DROP, summary
    assert abs(fp32["d1"] - bad["d1"]) > MAX_D1_DROP, summary  # the check above can fail
