"""Training data: datasets from the config, the per-epoch loader (resumable, seeded), up-front checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from transferdepth.data import open_dataset
from transferdepth.data.collate import SharedCollate, stack
from transferdepth.data.transforms import EvalTransform, TrainTransform, TransformedDataset, normalize_images
from transferdepth.models import DepthNet
from transferdepth.recipe import depth_to_output
from transferdepth.training.config import ConfigError, TrainConfig

TENSOR_KEYS = ("image", "depth", "valid")
LIST_KEYS = {"name": None, "skipped": ""}  # batch lists, with the value a sample without the key gets
VAL_MIN_DEPTH_M = 1e-3  # eigen masking of validation: 1e-3 < gt < the model's max_depth


class ResumeSampler(Sampler[int]):
    """A DistributedSampler for one epoch that skips the first `skip` indices (already trained on)."""

    def __init__(self, base: DistributedSampler, skip: int = 0):
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.base)
        for _ in range(self.skip):
            next(it, None)
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch made in this process: `image`, `depth`, `valid` stacked, names and skipped-notes as lists
    (what the loaders' `collate_fn` gives)."""
    return stack(items, TENSOR_KEYS, LIST_KEYS)


def loader_collate() -> SharedCollate:
    """The loaders' `collate_fn`: as `collate`, but a worker stacks into shared-memory buffers it reuses once
    the main process has dropped a batch (data/collate.py), so sending a batch copies nothing more."""
    return SharedCollate(TENSOR_KEYS, LIST_KEYS)


def batch_images(images: torch.Tensor, norm: tuple[tuple[float, ...], tuple[float, ...]],
                 device: torch.device) -> torch.Tensor:
    """A batch's `image` on `device`, as the model takes it. uint8 RGB (N,3,H,W) (what the training loader
    sends) is moved first (a quarter of the bytes), then normalised there with norm = (mean, std), the
    model's `normalization`; float images are taken as already normalised (a ready `train_dataset`)."""
    x = images.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = normalize_images(x, *norm)
    return x


def normalization(model: DepthNet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model itself applies (ImageNet's, or 0/1 for input_norm="none")."""
    return tuple(model.mean.flatten().tolist()), tuple(model.std.flatten().tolist())


def _train_transform(cfg: TrainConfig, model: DepthNet) -> TrainTransform:
    return TrainTransform(*normalization(model), (cfg.height, cfg.width), cfg.flip_p, cfg.swap_p,
                          target_resize=cfg.target_resize, min_depth=model.min_depth, max_depth=model.max_depth,
                          normalize=False)  # uint8 images cross the worker boundary; see batch_images


def target_mean(ds: Dataset, model: DepthNet, samples: int = 32) -> float:
    """The mean training target in `model`'s output space over the valid pixels of up to `samples` samples evenly
    spaced through `ds` (by index, so every process of a run gets the same value)."""
    n = len(ds)
    vals = []
    for i in sorted({int(round(x)) for x in np.linspace(0, n - 1, min(samples, n))}):
        s = ds[i]
        depth, valid = torch.as_tensor(s["depth"]).float(), torch.as_tensor(s["valid"]).bool()
        if valid.any():
            vals.append(depth_to_output(depth[valid], model.output_space, model.max_depth, model.min_depth))
    if not vals:
        raise ConfigError(f"output_init=targets: none of the {min(samples, n)} training samples read has a valid "
                          "depth pixel")
    return float(torch.cat(vals).mean())


def open_train_data(cfg: TrainConfig, model: DepthNet) -> tuple[Dataset, Any]:
    """(transformed training set, the raw dataset: it may `note`/`report` skipped samples)."""
    raw = open_dataset(cfg.train_data, cfg.train_split, skip_bad=cfg.skip_bad)
    return TransformedDataset(raw, _train_transform(cfg, model), seed=cfg.seed), raw


def open_val_data(cfg: TrainConfig, model: DepthNet) -> Dataset | None:
    """The first `val_max_images` of `cfg.val_data` through EvalTransform, or None without val_data."""
    if not cfg.val_data:
        return None
    val_raw = open_dataset(cfg.val_data, cfg.val_split)
    n = min(len(val_raw), cfg.val_max_images)
    transform = EvalTransform(*normalization(model), (cfg.height, cfg.width))
    return torch.utils.data.Subset(TransformedDataset(val_raw, transform), range(n))


def check_val_data(val_ds: Dataset, spec: str, max_depth: float) -> None:
    """Refuse, before training, a validation set in which no image has a pixel validation can score."""
    if len(val_ds) == 0:
        raise ConfigError(f"val_data {spec}: no samples")
    for i in range(len(val_ds)):
        s = val_ds[i]
        if bool((s["valid"] & (s["depth"] > VAL_MIN_DEPTH_M) & (s["depth"] < max_depth)).any()):
            return
    raise ConfigError(f"val_data {spec}: none of its {len(val_ds)} images has a valid depth pixel in "
                      f"({VAL_MIN_DEPTH_M}, {max_depth}) m, so validation could not score the model")


def loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """A DataLoader's own generator (its worker seeds): the global torch RNG is left to the training step."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def epoch_loader(train_ds: Dataset, sampler: DistributedSampler, cfg: TrainConfig, epoch: int, skip_batches: int,
                 rank: int, pin_memory: bool) -> DataLoader:
    """The loader of one epoch: order from `sampler` (reshuffled per epoch, or one fixed order), augmentation
    per (seed, epoch, index), the first `skip_batches` batches left out (a resumed epoch)."""
    sampler.set_epoch(epoch if cfg.shuffle == "epoch" else 0)
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    return DataLoader(train_ds, batch_size=cfg.batch_size, drop_last=True, num_workers=cfg.num_workers,
                      sampler=ResumeSampler(sampler, skip_batches * cfg.batch_size), collate_fn=loader_collate(),
                      pin_memory=pin_memory, generator=loader_generator(cfg.seed, epoch, rank))


def val_loader(val_ds: Dataset | None, cfg: TrainConfig, pin_memory: bool) -> DataLoader | None:
    if val_ds is None:
        return None
    return DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                      collate_fn=loader_collate(), pin_memory=pin_memory,
                      generator=loader_generator(cfg.seed, 1 << 30, 0))


class EmptyDepthCounter:
    """Counts training samples with no valid depth pixel (they add nothing to the loss) per epoch."""

    def __init__(self) -> None:
        self.empty = self.seen = 0

    def add(self, valid: torch.Tensor) -> None:
        self.empty += int((~valid.flatten(1).any(1)).sum())
        self.seen += valid.shape[0]

    def take(self) -> tuple[int, int]:
        """(empty, seen) since the last call on this process; resets."""
        out = (self.empty, self.seen)
        self.empty = self.seen = 0
        return out
