"""One training loop for a single process and for `torchrun` (DDP), torchvision-references style.

    train(cfg, out_dir)              # python API
    transferdepth train --config c.yaml --out runs/x [--resume | --overwrite] [--batch-size 8 ...]
    torchrun --nproc_per_node 4 -m transferdepth train ...

Data order: a DistributedSampler (also with one process) seeded by `cfg.seed`, reshuffled per epoch;
augmentation depends only on (seed, epoch, index). With B images per process and P processes, a step sees
the same 2..P*B images as one process with batch P*B. A resumed run skips the batches already seen in its
epoch, restores model, optimizer, grad scaler and RNG states, and so continues exactly.

Outputs in `out_dir` (rank 0 only): `run.json` (resolved config, versions, git commit, seed), `config.yaml`,
`history.jsonl` (one line per logged step), `tb/` (TensorBoard), `checkpoint/` (`model.safetensors`,
`config.json`, `train_state.pt`; replaced atomically), `metrics.json` (last validation).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from transferdepth.build import build_model
from transferdepth.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint
from transferdepth.config import ARCHITECTURE_KEYS, ConfigError, TrainConfig, save_config
from transferdepth.data import open_dataset
from transferdepth.data.transforms import EvalTransform, TrainTransform, TransformedDataset
from transferdepth.inference import infer
from transferdepth.losses import depth_loss
from transferdepth.metrics import depth_metrics
from transferdepth.models import DepthNet
from transferdepth.utils import atomic_write

STATE_FILE = "train_state.pt"
TENSOR_KEYS = ("image", "depth", "valid")


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    skipped_steps: int
    seconds: float
    metrics: dict[str, Any] | None


# --- distributed helpers ------------------------------------------------------------------------


def _dist_setup(device: str) -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) \
            else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available")
    return torch.device(name)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


def _all_true(flag: bool, device: torch.device) -> bool:
    """True only if `flag` holds on every process."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


# --- data ---------------------------------------------------------------------------------------


class _ResumeSampler(Sampler[int]):
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


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {k: torch.stack([it[k] for it in items]) for k in TENSOR_KEYS}
    batch["name"] = [it["name"] for it in items]
    batch["skipped"] = [it.get("skipped", "") for it in items]
    return batch


def _datasets(cfg: TrainConfig, model: DepthNet) -> tuple[Dataset, Dataset | None, Any]:
    size = (cfg.height, cfg.width)
    raw = open_dataset(cfg.train_data, cfg.train_split, skip_bad=cfg.skip_bad)
    mean, std = model.spec.mean, model.spec.std
    train_ds = TransformedDataset(raw, TrainTransform(mean, std, size, cfg.flip_p, cfg.swap_p), seed=cfg.seed)
    val_ds = None
    if cfg.val_data:
        val_raw = open_dataset(cfg.val_data, cfg.val_split)
        n = min(len(val_raw), cfg.val_max_images)
        val_ds = torch.utils.data.Subset(TransformedDataset(val_raw, EvalTransform(mean, std, size)), range(n))
    return train_ds, val_ds, raw


# --- model --------------------------------------------------------------------------------------


def _set_train_mode(model: nn.Module, batchnorm: str) -> None:
    model.train()
    if batchnorm == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _build(cfg: TrainConfig) -> DepthNet:
    pretrained: bool | str = cfg.encoder_weights or cfg.pretrained
    return build_model(cfg.encoder, cfg.decoder_width, pretrained=pretrained)


# --- run bookkeeping ----------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(cfg: TrainConfig, world: int, device: torch.device) -> dict[str, Any]:
    import torchvision

    from transferdepth import __version__

    return {"transferdepth": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "git_commit": _git_commit(),
            "seed": cfg.seed, "world_size": world, "device": str(device),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "config": cfg.to_dict()}


def prepare_out_dir(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run needs --resume (same architecture) or --overwrite."""
    has_run = (out / "run.json").exists()
    if resume:
        if not (out / "checkpoint" / STATE_FILE).exists() and not (out / "checkpoint.old" / STATE_FILE).exists():
            raise ConfigError(f"--resume: {out} holds no checkpoint to resume from")
        saved = json.loads((out / "run.json").read_text())["config"] if has_run else {}
        for key in ARCHITECTURE_KEYS:
            if key in saved and saved[key] != getattr(cfg, key):
                raise ConfigError(f"--resume: {out} was trained with {key}={saved[key]!r}, but this run asks for "
                                  f"{key}={getattr(cfg, key)!r}")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            what = "another run" if has_run else "other files"
            raise ConfigError(f"output folder {out} already holds {what}; pass --resume to continue it or "
                              "--overwrite to replace it")
        shutil.rmtree(out)


def _save_state(out: Path, model: DepthNet, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                state: dict[str, Any], cfg: TrainConfig) -> None:
    """checkpoint/ = model + config + train_state, replaced as a whole (new dir, then swap)."""
    new, cur, old = out / "checkpoint.new", out / "checkpoint", out / "checkpoint.old"
    shutil.rmtree(new, ignore_errors=True)
    save_checkpoint(model, new, meta={"step": state["step"], "train_config": cfg.to_dict()})
    torch.save({**state, "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "rng_numpy": _np_state(), "rng_python": list(random.getstate()[1]),
                "rng_python_pos": random.getstate()[2]}, new / STATE_FILE)
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.replace(cur, old)
    os.replace(new, cur)
    shutil.rmtree(old, ignore_errors=True)


def _np_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _load_state(out: Path) -> tuple[Path, dict[str, Any]]:
    for d in (out / "checkpoint", out / "checkpoint.old"):
        if (d / STATE_FILE).exists() and (d / WEIGHTS_FILE).exists() and (d / CONFIG_FILE).exists():
            return d, torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
    raise ConfigError(f"--resume: no complete checkpoint in {out}")


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng_torch"])
    if torch.cuda.is_available() and state["rng_cuda"]:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    s = state["rng_numpy"]
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
    random.setstate((3, tuple(state["rng_python"]), state["rng_python_pos"]))


# --- validation ---------------------------------------------------------------------------------


@torch.no_grad()
def validate(model: DepthNet, loader: DataLoader, device: torch.device,
             amp: torch.dtype | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metrics at the target's (half) resolution: eigen masking (1e-3 < gt < 10 m), no crop, per image.

    Returns (metrics, first batch {image, depth, pred} for image grids).
    """
    was_training = model.training
    model.eval()
    preds, gts, first = [], [], {}
    for batch in loader:
        x = batch["image"].to(device)
        out_size = tuple(batch["depth"].shape[-2:])
        pred = infer(model, x, flip=False, normalized=True, output_size=out_size, amp=amp).cpu()
        gt = torch.where(batch["valid"], batch["depth"], torch.zeros_like(batch["depth"]))
        preds.append(pred[:, 0].numpy())
        gts.append(gt[:, 0].numpy())
        if not first:
            first = {"image": batch["image"], "depth": gt, "pred": pred}
    if was_training:
        model.train()
    pred_all, gt_all = np.concatenate(preds), np.concatenate(gts)
    h, w = gt_all.shape[1:]
    metrics = depth_metrics(pred_all, gt_all, "eigen", crop=(0, h - 1, 0, w - 1), max_depth=model.max_depth)
    metrics["protocol"] = "val: eigen masking, no crop, half resolution"
    return metrics, first


# --- the loop -----------------------------------------------------------------------------------


def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False,
          train_dataset: Dataset | None = None) -> TrainResult:
    """Train a DepthNet as `cfg` says and write the run to `out_dir` (see module docstring).

    train_dataset: optional ready dataset of transformed samples (dicts with `image` (3,H,W) normalised,
    `depth` (1,H/2,W/2) metres, `valid`), used instead of `cfg.train_data`; it must have `set_epoch`
    if it augments.
    """
    out = Path(out_dir)
    rank, world, local_rank = _dist_setup(cfg.device)
    device = _resolve_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    is_main = rank == 0
    if is_main:
        prepare_out_dir(out, cfg, resume, overwrite)
    if dist.is_initialized():
        dist.barrier()

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = _build(cfg)
    train_ds, val_ds, raw = _datasets(cfg, model) if train_dataset is None else (train_dataset, None, None)
    if cfg.val_data and train_dataset is not None:
        val_ds = _datasets(cfg, model)[1]
    if len(train_ds) < cfg.batch_size * world:
        raise ConfigError(f"training set has {len(train_ds)} samples, fewer than one global batch "
                          f"({cfg.batch_size} x {world} processes)")

    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped_steps": 0, "nan_streak": 0,
                             "train_seconds": 0.0}
    ckpt_dir = None
    if resume:
        ckpt_dir, state = _load_state(out)
        model.load_state_dict(load_checkpoint(ckpt_dir).state_dict())
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    amp = _amp_dtype(cfg, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                           weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    if resume:
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _restore_rng(state)

    net: nn.Module = model
    if world > 1:
        if device.type == "cuda" and cfg.batchnorm == "train":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    steps_per_epoch = len(sampler) // cfg.batch_size
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    loader_kw = {"num_workers": cfg.num_workers, "collate_fn": _collate, "pin_memory": device.type == "cuda"}
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, **loader_kw) if val_ds else None

    writer = history = bar = None
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "run.json") as tmp:
            tmp.write_text(json.dumps(run_info(cfg, world, device), indent=2))
        save_config(cfg, out / "config.yaml")
        history = open(out / "history.jsonl", "a")
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=state["step"] if resume else None)
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {cfg.encoder}", unit="step",
                       dynamic_ncols=True)

    bn_buffers = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                  for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    metrics = None
    t_start, t_window, imgs_window = time.perf_counter(), time.perf_counter(), 0
    step = state["step"]
    try:
        while step < total_steps:
            epoch = state["epoch"]
            sampler.set_epoch(epoch)
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch)
            skip = state["batch_in_epoch"] * cfg.batch_size
            loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=_ResumeSampler(sampler, skip),
                                drop_last=True, **loader_kw)
            _set_train_mode(net, cfg.batchnorm)
            for batch in loader:
                if raw is not None and hasattr(raw, "note"):
                    raw.note(batch)
                x = batch["image"].to(device, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                depth = batch["depth"].to(device, non_blocking=True)
                valid = batch["valid"].to(device, non_blocking=True)
                bn_saved = [b.clone() for b in bn_buffers]  # a non-finite batch must not poison BN statistics
                with _autocast(device, amp):
                    pred = net(x)
                loss, terms = depth_loss(pred, depth, valid, w_depth=cfg.w_depth, w_grad=cfg.w_grad,
                                         w_ssim=cfg.w_ssim, max_depth=model.max_depth,
                                         min_depth=model.min_depth, return_terms=True)
                opt.zero_grad(set_to_none=True)
                finite = _all_true(math.isfinite(terms["loss"]), device)
                if finite:
                    scaler.scale(loss).backward()
                    if cfg.grad_clip is not None:
                        scaler.unscale_(opt)
                        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        finite = _all_true(bool(torch.isfinite(norm)), device)
                if finite:
                    scaler.step(opt)
                    scaler.update()
                    state["nan_streak"] = 0
                else:
                    opt.zero_grad(set_to_none=True)
                    with torch.no_grad():
                        for b, saved in zip(bn_buffers, bn_saved):
                            b.copy_(saved)
                    state["skipped_steps"] += 1
                    state["nan_streak"] += 1
                    if state["nan_streak"] >= cfg.nan_patience:
                        raise TrainingDiverged(
                            f"{state['nan_streak']} steps in a row had a non-finite loss or gradient "
                            f"(last at step {step + 1}); stopping. Lower the learning rate, enable grad_clip, "
                            "or check the data")
                step += 1
                state["step"] = step
                state["batch_in_epoch"] += 1
                imgs_window += x.shape[0] * world
                if is_main:
                    if bar is not None:
                        bar.update(1)
                    if step % cfg.log_every == 0 or step == total_steps:
                        now = time.perf_counter()
                        ips = imgs_window / max(now - t_window, 1e-9)
                        t_window, imgs_window = now, 0
                        rec = {"step": step, "epoch": epoch, **terms, "lr": opt.param_groups[0]["lr"],
                               "images_per_s": ips, "skipped_steps": state["skipped_steps"],
                               "time_s": state["train_seconds"] + now - t_start}
                        history.write(json.dumps(rec) + "\n")
                        history.flush()
                        if bar is not None:
                            bar.set_postfix(loss=f"{terms['loss']:.4f}", img_s=f"{ips:.1f}")
                        if writer is not None:
                            for k in ("loss", "depth", "grad", "ssim"):
                                writer.add_scalar(f"train/{k}", terms[k], step)
                            writer.add_scalar("train/lr", rec["lr"], step)
                            writer.add_scalar("train/images_per_s", ips, step)
                end_of_epoch = state["batch_in_epoch"] >= steps_per_epoch
                if val_loader is not None and ((cfg.val_every and step % cfg.val_every == 0)
                                               or (not cfg.val_every and end_of_epoch) or step == total_steps):
                    if is_main:
                        metrics = _validate_and_log(model, val_loader, device, amp, writer, step, out)
                    if dist.is_initialized():
                        dist.barrier()
                if step % cfg.ckpt_every == 0 or step == total_steps:
                    _checkpoint(out, model, opt, scaler, state, cfg, t_start, is_main)
                if step >= total_steps:
                    break
            if state["batch_in_epoch"] >= steps_per_epoch:
                if is_main and raw is not None and hasattr(raw, "report"):
                    (bar.write if bar is not None else print)(f"epoch {epoch}: {raw.report()}")
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if history is not None:
            history.close()
    seconds = state["train_seconds"] + time.perf_counter() - t_start
    if is_main and raw is not None and hasattr(raw, "report"):
        print(raw.report())
    return TrainResult(out, step, state["skipped_steps"], seconds, metrics)


def _checkpoint(out: Path, model: DepthNet, opt, scaler, state: dict[str, Any], cfg: TrainConfig,
                t_start: float, is_main: bool) -> None:
    if is_main:
        saved = dict(state)
        saved["train_seconds"] = state["train_seconds"] + time.perf_counter() - t_start
        for key in ("optimizer", "scaler", "rng_torch", "rng_cuda", "rng_numpy", "rng_python", "rng_python_pos"):
            saved.pop(key, None)
        _save_state(out, model, opt, scaler, saved, cfg)
    if dist.is_initialized():
        dist.barrier()


def _validate_and_log(model: DepthNet, loader: DataLoader, device: torch.device, amp, writer, step: int,
                      out: Path) -> dict[str, Any]:
    metrics, first = validate(model, loader, device, amp)
    metrics["step"] = step
    with atomic_write(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    if writer is not None:
        for k in ("d1", "d2", "d3", "abs_rel", "rmse", "log10"):
            writer.add_scalar(f"val/{k}", metrics[k], step)
        writer.add_image("val/rgb|gt|pred", _grid(first, model), step)
    return metrics


def _grid(first: dict[str, torch.Tensor], model: DepthNet, n: int = 4) -> torch.Tensor:
    """(3, H', W') image: rows = images; columns = RGB | ground truth | prediction (plasma, shared range)."""
    import matplotlib

    cmap = matplotlib.colormaps["plasma"]
    img = first["image"][:n] * model.std.cpu().view(1, 3, 1, 1) + model.mean.cpu().view(1, 3, 1, 1)
    img = torch.nn.functional.interpolate(img.clamp(0, 1), scale_factor=0.5, mode="bilinear", align_corners=False)
    gt, pred = first["depth"][:n, 0], first["pred"][:n, 0]
    hi = float(torch.quantile(gt[gt > 0], 0.99)) if (gt > 0).any() else 10.0

    def colour(d: torch.Tensor) -> torch.Tensor:
        rgb = torch.from_numpy(cmap((d / hi).clamp(0, 1).numpy())[..., :3]).permute(0, 3, 1, 2).float()
        return torch.where(d[:, None] > 0, rgb, torch.zeros_like(rgb))

    rows = torch.cat([img, colour(gt), colour(pred)], dim=3)  # side by side
    return torch.cat(list(rows), dim=1)
