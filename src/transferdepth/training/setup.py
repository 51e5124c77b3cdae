"""Process set-up for training: torchrun/DDP process group, the device, mixed precision, collective checks."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
from torch import nn

from transferdepth.training.config import ConfigError, TrainConfig
from transferdepth.utils import resolve_device


def dist_setup(device: str) -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, owned); initialises the process group under torchrun (nccl on CUDA, else
    gloo). owned: this call created the group, so the caller destroys it (`dist_teardown`) when done."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owned = world > 1 and not dist.is_initialized()
    if owned:
        on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if on_cuda else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned
    return 0, 1, 0, False


def dist_teardown(owned: bool) -> None:
    """Destroy the process group `dist_setup` created. Left to interpreter exit, gloo's threads can abort the
    process ("terminate called without an active exception", SIGABRT) after training has finished."""
    if owned and dist.is_initialized():
        dist.destroy_process_group()


def train_device(name: str, local_rank: int) -> torch.device:
    """The device of this process: `utils.resolve_device(name)`, with plain 'cuda' meaning cuda:LOCAL_RANK.

    Raises ConfigError (one line naming --device) for an unknown name or a device this machine lacks.
    """
    try:
        device = resolve_device(name, what="--device")
        if device.type == "cuda" and device.index is None:
            device = resolve_device(f"cuda:{local_rank}", what="--device (cuda on LOCAL_RANK)")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


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
