"""Process set-up for training: torchrun/DDP process group and the device (`inference.distributed`, shared with
batch prediction), mixed precision, collective checks."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
from torch import nn

from transferdepth.inference.distributed import dist_setup, dist_teardown, rank_device  # noqa: F401  (setup.dist_*)
from transferdepth.training.config import ConfigError, TrainConfig


def train_device(name: str, local_rank: int) -> torch.device:
    """The device of this process: `inference.distributed.rank_device` (plain 'cuda' means cuda:LOCAL_RANK).

    Raises ConfigError (one line naming --device) for an unknown name or a device this machine lacks.
    """
    try:
        return rank_device(name, local_rank)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: full precision). AMP runs on CUDA only."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]


def autocast(device: torch.device, amp: torch.dtype | None) -> AbstractContextManager:
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if `flag` holds on every process."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def all_sum(values: list[int], device: torch.device) -> list[int]:
    """Element-wise sum of integer counts over all processes."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [int(v) for v in t.tolist()]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap_ddp(model: nn.Module, cfg: TrainConfig, device: torch.device, world: int) -> nn.Module:
    """The network the step runs: `model` itself, or under DDP (SyncBatchNorm on CUDA when BN trains)."""
    if world == 1:
        return model
    net: nn.Module = model
    if device.type == "cuda" and cfg.batchnorm == "train":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
