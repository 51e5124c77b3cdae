"""The 3-seed version of the real-data transfer test, waiting for its 5-seed calibration (docs/seeds.md).

NOT collected by pytest (it lives in benchmarks/): `benchmarks/real_data_seeds.py` imports its study. Once
the calibration has run on a quiet machine, it replaces tests/test_real_data.py with calibrated bounds.

The transfer-learning claim on real RGB-D data, as a small multi-seed study.

MobileNetV2 with ImageNet weights (registry mirror) and the same network from scratch are fine-tuned on
7-Scenes "redkitchen" frames numbered below 800 at 128x96 for STEPS steps, once per seed in SEEDS, through
the study code path of `transferdepth compare --seeds` (`transferdepth.study.run_grid`; seeds pair runs).
The claims, on means over seeds (bounds from a 5-seed calibration, `benchmarks/real_data_seeds.py`,
docs/seeds.md: each bound sits beyond the worst 3-seed mean of the calibration by a margin):
- in-scene: on 7-Scenes frames 800 and above (held out, a contiguous block; metric depth, validity mask, full
  frame), pretrained beats predicting the training set's median depth everywhere (abs rel ratio bound);
- unseen building: on SUN3D office (another building and sensor; median-scaled per image, since a model
  trained on one scene carries its scale), pretrained delta1 exceeds scratch delta1 (paired over seeds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transferdepth.config import TrainConfig, load_config
from transferdepth.data import InMemory, open_dataset
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.metrics import depth_metrics
from transferdepth.models import get_spec
from transferdepth.study import EvalSet, Run, Variant, run_grid

SIZE = (96, 128)
STEPS = 100
SEEDS = (0, 1, 2)
TRAIN = "rgbd:7scenes-redkitchen?index=:800"
VARIANTS = (Variant("pretrained", "mobilenetv2", True), Variant("scratch", "mobilenetv2", False))
FIGURES = ("kitchen_abs_rel_pretrained", "kitchen_abs_rel_scratch", "kitchen_ratio_pretrained",
           "kitchen_ratio_scratch", "office_d1_pretrained", "office_d1_scratch", "office_d1_gap")
# bounds on the means over SEEDS (calibration: docs/seeds.md)
MAX_KITCHEN_RATIO_PRETRAINED = 0.75
MIN_OFFICE_D1_GAP = 0.05


KITCHEN_HELD = "rgbd:7scenes-redkitchen?index=800:"
OFFICE = "rgbd:sun3d-office"


def recipe_config(encoder: str = "mobilenetv2", steps: int = STEPS) -> TrainConfig:
    """The study's training config (128x96, batch 8, `steps` steps; the seed and pretrained flag are set per
    run by run_grid)."""
    return load_config(overrides=dict(encoder=encoder, height=SIZE[0], width=SIZE[1], batch_size=8,
                                      max_steps=steps, num_workers=0, log_every=10, tensorboard=False,
                                      progress=False, ckpt_every=10**6))


def eval_sets(kitchen: Any = KITCHEN_HELD, office: Any = OFFICE, limit: int | None = None) -> list[EvalSet]:
    """The two test sets: 7-Scenes frames >= 800 (metric, full frame) and SUN3D office (median-scaled);
    each a spec or an opened dataset of it."""
    return [EvalSet("kitchen", kitchen, crop="full", key=KITCHEN_HELD, limit=limit),
            EvalSet("office", office, crop="full", median_scaling=True, key=OFFICE, limit=limit)]


def fine_tune(variants, seeds, out: Path, *, steps: int = STEPS, tests: list[EvalSet] | None = None,
              kitchen_train: Any = None, log=None) -> list[Run]:
    """Fine-tune each variant per seed on 7-Scenes frames < 800 with the study's recipe (run_grid: finished
    runs in `out` are reused) and evaluate each (torch engine) on `tests` (default `eval_sets()`)."""
    kitchen_train = InMemory(open_dataset(TRAIN), SIZE) if kitchen_train is None else kitchen_train

    def dataset(cfg):
        spec = get_spec(cfg.encoder)
        return TransformedDataset(kitchen_train, TrainTransform(spec.mean, spec.std, SIZE, cfg.flip_p, cfg.swap_p),
                                  seed=cfg.seed)

    return run_grid(variants, list(seeds), recipe_config(steps=steps), out, tests or eval_sets(),
                    train_dataset=dataset, data_key=f"{TRAIN}@{SIZE[0]}x{SIZE[1]}", device="cpu", log=log)


def run_study(seeds, out: Path, log=None, variants=VARIANTS) -> dict[str, Any]:
    """Train/evaluate both variants for each seed (run_grid) and the constant baseline; returns
    {"constant": {...}, "runs": [study.Run]}."""
    kitchen_train = InMemory(open_dataset(TRAIN), SIZE)
    held = open_dataset(KITCHEN_HELD)
    office = open_dataset(OFFICE)
    assert len(kitchen_train) == 400 and len(held) == 100 and len(office) == 50
    train_depths = np.concatenate([s["depth"][s["valid"]] for s in (kitchen_train[i] for i in range(400))])
    median = float(np.median(train_depths))
    gt = np.stack([held[i]["depth"] for i in range(len(held))])
    constant = depth_metrics(np.full_like(gt, median), gt, "eigen", crop=(0, 479, 0, 639))
    runs = fine_tune(variants, seeds, out, tests=eval_sets(held, office), kitchen_train=kitchen_train, log=log)
    return {"constant": {"median_m": median, "abs_rel": constant["abs_rel"], "d1": constant["d1"]}, "runs": runs}


def figures(study: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Per seed: each variant's kitchen abs rel (and its ratio to the constant's) and office delta1, and the
    paired office delta1 gap (pretrained - scratch)."""
    by = {(r.variant.name, r.seed): r.metrics for r in study["runs"]}
    const = study["constant"]["abs_rel"]
    out = {}
    for seed in sorted({s for _, s in by}):
        f = {}
        for v in ("pretrained", "scratch"):
            f[f"kitchen_abs_rel_{v}"] = by[v, seed]["kitchen"]["abs_rel"]
            f[f"kitchen_ratio_{v}"] = by[v, seed]["kitchen"]["abs_rel"] / const
            f[f"office_d1_{v}"] = by[v, seed]["office"]["d1"]
        f["office_d1_gap"] = f["office_d1_pretrained"] - f["office_d1_scratch"]
        out[seed] = f
    return out


@pytest.mark.slow
def test_imagenet_pretraining_transfers_to_real_depth(rgbd_root, tmp_path):
    study = run_study(SEEDS, tmp_path / "study")
    per_seed = figures(study)
    mean = {k: float(np.mean([f[k] for f in per_seed.values()])) for k in FIGURES}
    summary = {"constant": study["constant"], "per_seed": per_seed, "mean": mean}
    print("\nreal-data transfer check:", json.dumps(summary, indent=1))
    assert sorted(per_seed) == list(SEEDS)
    assert mean["kitchen_ratio_pretrained"] <= MAX_KITCHEN_RATIO_PRETRAINED, summary
    assert mean["office_d1_gap"] >= MIN_OFFICE_D1_GAP, summary
