"""The transfer-learning claim on real RGB-D data (runs in CI; a few minutes on 2 cores).

MobileNetV2 with ImageNet weights (registry mirror) and the same network from scratch are fine-tuned with
the same seed and step budget on 7-Scenes "redkitchen" frames numbered below 800, at 160x120 input.
- 7-Scenes frames 800 and above (held out, a contiguous block; metric depth, validity mask, full frame):
  the pretrained model must beat predicting the training set's median depth everywhere (abs rel <= 0.6x
  the constant's; measured 0.168 and 0.180 against 0.245 on two CPU kinds).
- SUN3D office (another building and sensor; median-scaled per image, since a model trained on one scene
  carries its scale): pretrained delta1 must exceed scratch delta1 by at least 0.05 (gaps measured at
  seeds 0/1/2: 0.234 / 0.077 / 0.086; 0.21-0.28 at seed 0 on two CPU kinds).
The scratch model's in-scene bound is dropped (issue 8: not the point of the test, and inside seed and
machine noise: 0.2509 and 0.2481 against 0.245). Still one seed: the multi-seed study that replaces this
test waits for its calibration (benchmarks/real_data_study.py, docs/seeds.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferdepth.checkpoint import load_checkpoint
from transferdepth.config import load_config
from transferdepth.data import InMemory, open_dataset
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.evaluate import evaluate
from transferdepth.metrics import depth_metrics
from transferdepth.models import get_spec
from transferdepth.train import train

SIZE = (120, 160)
STEPS = 150
# The optimiser and initialisation these bounds were measured with (plain Adam, eps 1e-8, torch BatchNorm
# momentum 0.1, PyTorch's default decoder init). The `densedepth` preset's Keras values (AMSGrad, eps 1e-7,
# momentum 0.01, Glorot) failed the in-scene bound at seed 0 on this 150-step fine-tune (pretrained abs rel
# 0.555 against 0.6 x constant = 0.245): a short-fine-tune recipe is issue 14's work (docs/seeds.md).
CALIBRATED_RECIPE = dict(adam_amsgrad=False, adam_eps=1e-8, bn_momentum=None, decoder_init="torch")


@pytest.fixture(scope="module")
def kitchen_train(rgbd_root):
    return InMemory(open_dataset("rgbd:7scenes-redkitchen?index=:800"), SIZE)


def _fit(kitchen_train, pretrained: bool, out):
    spec = get_spec("mobilenetv2")
    cfg = load_config(overrides=dict(encoder="mobilenetv2", pretrained=pretrained, height=SIZE[0], width=SIZE[1],
                                     batch_size=8, max_steps=STEPS, num_workers=0, seed=0, log_every=10,
                                     tensorboard=False, progress=False, ckpt_every=10**6, **CALIBRATED_RECIPE))
    ds = TransformedDataset(kitchen_train, TrainTransform(spec.mean, spec.std, SIZE, cfg.flip_p, cfg.swap_p),
                            seed=cfg.seed)
    train(cfg, out, train_dataset=ds)
    return load_checkpoint(out / "checkpoint")


@pytest.mark.slow
def test_imagenet_pretraining_transfers_to_real_depth(kitchen_train, tmp_path):
    held = open_dataset("rgbd:7scenes-redkitchen?index=800:")
    office = open_dataset("rgbd:sun3d-office")
    assert len(kitchen_train) == 400 and len(held) == 100 and len(office) == 50

    train_depths = np.concatenate([s["depth"][s["valid"]] for s in (kitchen_train[i] for i in range(400))])
    median = float(np.median(train_depths))
    gt = np.stack([held[i]["depth"] for i in range(len(held))])
    constant = depth_metrics(np.full_like(gt, median), gt, "eigen", crop=(0, 479, 0, 639))

    results = {}
    for pretrained in (True, False):
        model = _fit(kitchen_train, pretrained, tmp_path / f"pretrained_{pretrained}")
        results[pretrained] = {
            "kitchen": evaluate(model, held, "eigen", crop="full", size=SIZE),
            "office": evaluate(model, office, "eigen", crop="full", size=SIZE, median_scaling=True),
        }
    summary = {"constant_median_m": median, "constant": {k: constant[k] for k in ("d1", "abs_rel")},
               **{("pretrained" if p else "scratch"): {where: {k: r[where][k] for k in ("d1", "abs_rel", "rmse")}
                                                      for where in r} for p, r in results.items()}}
    print("\nreal-data transfer check:", json.dumps(summary, indent=1))

    assert results[True]["kitchen"]["abs_rel"] <= 0.6 * constant["abs_rel"], summary
    assert results[True]["office"]["d1"] >= results[False]["office"]["d1"] + 0.05, summary
