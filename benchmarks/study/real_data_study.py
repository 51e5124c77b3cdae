"""The real-data transfer study: its protocol, shared by tests/study/test_real_data.py (the CI test, seeds 0-2),
benchmarks/study/real_data_seeds.py (its 5-seed calibration) and benchmarks/deploy/quantization.py (int8 on real data).

MobileNetV2 is fine-tuned on 7-Scenes "redkitchen" frames numbered below 800 at 128x96 for STEPS steps,
once per seed, through the study code path of `transferdepth compare --seeds` (`transferdepth.study.compare.run_grid`;
seeds pair runs: the same data order and augmentation). Three rows (VARIANTS):
- "pretrained": ImageNet weights (registry mirror), the default recipe (`densedepth`);
- "finetune": ImageNet weights, `--recipe finetune` (the row `mobilenetv2@finetune` of a study);
- "scratch": random initialisation, the default recipe (frozen BatchNorm statistics make no sense from scratch).
Tested on 7-Scenes frames 800 and above (held out, a contiguous block; metric depth, validity mask, full
frame) and on SUN3D office (another building and sensor; median-scaled per image, since a model trained on
one scene carries its scale). The claims and their calibrated bounds: tests/study/test_real_data.py, docs/seeds.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferdepth.data import InMemory, open_dataset
from transferdepth.data.transforms import TrainTransform, TransformedDataset
from transferdepth.evaluation.metrics import depth_metrics
from transferdepth.models import get_spec
from transferdepth.study.compare import EvalSet, Run, Variant, run_grid
from transferdepth.training.config import TrainConfig, load_config

SIZE = (96, 128)
STEPS = 100
SEEDS = (0, 1, 2)
TRAIN = "rgbd:7scenes-redkitchen?index=:800"
VARIANTS = (Variant("pretrained", "mobilenetv2", True), Variant("finetune", "mobilenetv2", True, "finetune"),
            Variant("scratch", "mobilenetv2", False))
FIGURES = ("kitchen_abs_rel_pretrained", "kitchen_abs_rel_finetune", "kitchen_abs_rel_scratch",
           "kitchen_ratio_pretrained", "kitchen_ratio_finetune", "kitchen_ratio_scratch",
           "office_d1_pretrained", "office_d1_finetune", "office_d1_scratch",
           "office_d1_gap", "office_d1_gap_finetune")


KITCHEN_HELD = "rgbd:7scenes-redkitchen?index=800:"
OFFICE = "rgbd:sun3d-office"


def recipe_config(encoder: str = "mobilenetv2", steps: int = STEPS,
                  overrides: dict[str, Any] | None = None, size: tuple[int, int] = SIZE) -> TrainConfig:
    """The study's training config (`size` (H, W), default 128x96, batch 8, `steps` steps, the default
    recipe; the seed, pretrained flag and a row's recipe are set per run by run_grid). `overrides`: config
    keys (e.g. `recipe`, `batch_size`, `amp`) on top."""
    return load_config(overrides=dict(encoder=encoder, height=size[0], width=size[1], batch_size=8,
                                      max_steps=steps, num_workers=0, log_every=10, tensorboard=False,
                                      progress=False, ckpt_every=10**6) | (overrides or {}))


def eval_sets(kitchen: Any = KITCHEN_HELD, office: Any = OFFICE, limit: int | None = None) -> list[EvalSet]:
    """The two test sets: 7-Scenes frames >= 800 (metric, full frame) and SUN3D office (median-scaled);
    each a spec or an opened dataset of it."""
    return [EvalSet("kitchen", kitchen, crop="full", key=KITCHEN_HELD, limit=limit),
            EvalSet("office", office, crop="full", median_scaling=True, key=OFFICE, limit=limit)]


def fine_tune(variants, seeds, out: Path, *, steps: int = STEPS, tests: list[EvalSet] | None = None,
              kitchen_train: Any = None, log=None, overrides: dict[str, Any] | None = None,
              size: tuple[int, int] = SIZE, device: str = "cpu") -> list[Run]:
    """Fine-tune each variant per seed on 7-Scenes frames < 800 at `size` (H, W) with the study's recipe
    (run_grid: finished runs in `out` are reused) and evaluate each (torch engine, at `size`) on `tests`
    (default `eval_sets()`)."""
    kitchen_train = InMemory(open_dataset(TRAIN), size) if kitchen_train is None else kitchen_train

    def dataset(cfg):
        spec = get_spec(cfg.encoder)
        return TransformedDataset(kitchen_train, TrainTransform(spec.mean, spec.std, size, cfg.flip_p, cfg.swap_p),
                                  seed=cfg.seed)

    return run_grid(variants, list(seeds), recipe_config(steps=steps, overrides=overrides, size=size), out,
                    tests or eval_sets(), train_dataset=dataset, data_key=f"{TRAIN}@{size[0]}x{size[1]}",
                    device=device, log=log)


def run_study(seeds, out: Path, log=None, variants=VARIANTS, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
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
    runs = fine_tune(variants, seeds, out, tests=eval_sets(held, office), kitchen_train=kitchen_train, log=log,
                     overrides=overrides)
    return {"constant": {"median_m": median, "abs_rel": constant["abs_rel"], "d1": constant["d1"]}, "runs": runs}


def figures(study: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Per seed: each variant's kitchen abs rel (and its ratio to the constant's) and office delta1, and the
    paired office delta1 gaps over scratch (`office_d1_gap`: pretrained - scratch; `_finetune`: finetune -
    scratch). Variants not in the study are left out."""
    by = {(r.variant.name, r.seed): r.metrics for r in study["runs"]}
    names = [v.name for v in VARIANTS if any(n == v.name for n, _ in by)]
    const = study["constant"]["abs_rel"]
    out = {}
    for seed in sorted({s for _, s in by}):
        f = {}
        for v in names:
            f[f"kitchen_abs_rel_{v}"] = by[v, seed]["kitchen"]["abs_rel"]
            f[f"kitchen_ratio_{v}"] = by[v, seed]["kitchen"]["abs_rel"] / const
            f[f"office_d1_{v}"] = by[v, seed]["office"]["d1"]
        if "scratch" in names:
            for v, key in (("pretrained", "office_d1_gap"), ("finetune", "office_d1_gap_finetune")):
                if v in names:
                    f[key] = f[f"office_d1_{v}"] - f["office_d1_scratch"]
        out[seed] = f
    return out
