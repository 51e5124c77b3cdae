"""Processes under torchrun: the process group, each rank's device and CPU threads, its share of a list of
work, and small results gathered from every rank. Without torchrun (no WORLD_SIZE, or 1) each function is
the one-process case: rank 0 of 1, the whole list, [its own result].

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (this process on its machine), LOCAL_WORLD_SIZE (processes on
this machine) and MASTER_ADDR/PORT, which `init_process_group` reads. Training (`training/setup.py`) and
batch prediction (`cli/predict.py`) both start here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from transferdepth.utils import resolve_device

T = TypeVar("T")


def dist_setup(device: str, timeout: timedelta | None = None) -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, owned); initialises the process group under torchrun (nccl on CUDA, else
    gloo). owned: this call created the group, so the caller destroys it (`dist_teardown`) when done.
    timeout: how long a collective waits for the slowest rank (None: torch's default, 30 minutes for gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owned = world > 1 and not dist.is_initialized()
    if owned:
        on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if on_cuda else "gloo", **({"timeout": timeout} if timeout else {}))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned
    return 0, 1, 0, False


def dist_teardown(owned: bool) -> None:
    """Destroy the process group `dist_setup` created. Left to interpreter exit, gloo's threads can abort the
    process ("terminate called without an active exception", SIGABRT) after the work has finished."""
    if owned and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(name: str | None, local_rank: int) -> torch.device:
    """The device of this process: `utils.resolve_device(name)`, with plain 'cuda' (or 'auto' on a CUDA
    machine) meaning cuda:LOCAL_RANK, made the current CUDA device. Raises ValueError (one line naming
    --device) for an unknown name or a device this machine lacks."""
    device = resolve_device(name, what="--device")
    if device.type == "cuda" and device.index is None:
        device = resolve_device(f"cuda:{local_rank}", what="--device (cuda on LOCAL_RANK)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def cpu_threads() -> int:
    """CPU threads for one process: the cores this process may use divided by the processes on this machine
    (LOCAL_WORLD_SIZE, 1 without torchrun), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank `rank`'s share of `items`: items rank, rank + world, rank + 2 world, ... (round robin, so ranks get
    equal counts within one and similar mixes of the list; the same list and world always give the same
    shares). Every item belongs to exactly one rank."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world} processes")
    return list(items[rank::world])


def gather(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a collective: every rank must call it); [obj]
    without a process group. Objects are pickled: keep them small (counts, messages)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
