"""Collating a batch for a DataLoader: the named arrays are stacked into one shared-memory buffer that each
worker process reuses.

torch's `default_collate` stacks every batch into fresh shared memory. Creating it and faulting its pages
in costs a worker about as much as decoding a 640x480 NYU sample (benchmarks/data/data_throughput.py). Here
each worker keeps a few buffers (`slots`) and stacks a batch into a free one. All of a batch's arrays sit
in that one buffer.

A buffer is written again only after the main process has dropped every tensor that uses it, views
included. The check is on the storage (`StorageWeakRef.expired`), so a batch a caller keeps can never be
overwritten. Such a buffer is simply not reused; when a worker has no free buffer it falls back to fresh
shared memory, so nothing ever waits.

The main process learns that a buffer is free when it unpickles a later batch of the same collate: it
then checks the batches it has handed out and marks those whose storage is gone.

Bookkeeping is kept in the collate object (created in the main process before the workers start):
- `_flags`: one int64 per (worker row, slot); 0 means free, otherwise it holds the token of the batch
  the buffer holds;
- `_owners`: the pid that owns each row, claimed under a file lock when a worker first collates.

A batch sent on from the main process to yet another process must be copied first. That process's mapping
does not keep the buffer from being reused, in the same way as for any shared-memory tensor that is
modified.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info

try:  # the row claim needs a file lock; without fcntl (Windows) every batch takes fresh shared memory
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

ALIGN = 64  # bytes: each array in a buffer starts on a cache line
_RINGS: weakref.WeakValueDictionary[str, SharedCollate] = weakref.WeakValueDictionary()  # main process, by id


class CollateError(ValueError):
    """A batch that cannot be stacked (arrays of different shapes or types under one key)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_array(value: Any, key: str, index: int) -> np.ndarray | torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu() if value.device.type != "cpu" else value.detach()
    if isinstance(value, np.ndarray):
        return value
    raise CollateError(f"collate: key {key!r} of sample {index} is {type(value).__name__}; expected a numpy "
                       f"array or a torch tensor")


def _torch_dtype(value: np.ndarray | torch.Tensor, key: str, index: int) -> torch.dtype:
    if isinstance(value, torch.Tensor):
        return value.dtype
    try:
        return torch.from_numpy(np.empty(0, value.dtype)).dtype
    except TypeError as e:
        raise CollateError(f"collate: key {key!r} of sample {index} is a numpy array of {value.dtype}, which torch "
                           f"cannot hold ({e})") from e


def _layout(items: Sequence[dict[str, Any]], keys: Sequence[str]
            ) -> tuple[list[tuple[str, list[Any], tuple[int, ...], torch.dtype, int]], int]:
    """Per key (key, values, batch shape, dtype, byte offset) and the bytes the whole batch needs."""
    if not items:
        raise CollateError("collate: an empty batch")
    out, offset = [], 0
    for key in keys:
        values = []
        for i, item in enumerate(items):
            if key not in item:
                raise CollateError(f"collate: sample {i} has no {key!r} (it has {sorted(item)})")
            values.append(_as_array(item[key], key, i))
        first = values[0]
        dtype = _torch_dtype(first, key, 0)
        for i, v in enumerate(values):
            vdtype = _torch_dtype(v, key, i)
            if tuple(v.shape) != tuple(first.shape) or vdtype != dtype:
                raise CollateError(f"collate: key {key!r}: sample {i} is {tuple(v.shape)} {vdtype}, sample 0 is "
                                   f"{tuple(first.shape)} {dtype}; a batch needs one shape and type per key "
                                   f"(resize the samples, or use batch size 1)")
        shape = (len(values), *first.shape)
        out.append((key, values, shape, dtype, offset))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        offset += -(-nbytes // ALIGN) * ALIGN
    return out, max(offset, ALIGN)


def _fill(storage: torch.UntypedStorage, layout: Iterable[tuple[str, list[Any], tuple[int, ...], torch.dtype, int]]
          ) -> dict[str, torch.Tensor]:
    """Stack each key's values into its place in `storage`."""
    out = {}
    for key, values, shape, dtype, offset in layout:
        t = torch.empty(0, dtype=dtype).set_(storage, offset // dtype.itemsize, shape)
        if all(isinstance(v, torch.Tensor) for v in values):
            torch.stack(values, out=t)
        else:
            np.stack([v.numpy() if isinstance(v, torch.Tensor) else v for v in values], out=t.numpy())
        out[key] = t
    return out


def _lists(items: Sequence[dict[str, Any]], lists: dict[str, Any]) -> dict[str, list[Any]]:
    """Each key of `lists` as a list over the items (a missing value as the key's default)."""
    return {k: [it.get(k, d) for it in items] for k, d in lists.items()}


class _HeldBatch(dict):
    """A batch on its way from a worker: unpickled in the main process as a plain dict, after telling the
    collate that made it which buffer its tensors use."""

    ticket: tuple[str, int, int]

    def __reduce__(self) -> tuple[Any, ...]:
        return _received, (dict(self), self.ticket)


def _received(batch: dict[str, Any], ticket: tuple[str, int, int]) -> dict[str, Any]:
    ring = _RINGS.get(ticket[0])
    if ring is not None:
        ring._hold(ticket[1], ticket[2], batch)
    return batch


class SharedCollate:
    """`collate_fn` for a DataLoader: stacks `keys` (numpy arrays or tensors of one shape and type per key)
    into torch tensors of shape (N, ...), every other key into a list (missing ones as `default`). In a
    worker the tensors share one reused shared-memory buffer (see the module's docstring), in the main
    process they are ordinary tensors. `slots`: buffers per worker (prefetched batches, plus the one the
    loop holds, plus one); `max_workers`: workers that get buffers (others use fresh shared memory)."""

    def __init__(self, keys: Sequence[str], lists: dict[str, Any] | None = None, slots: int = 4,
                 max_workers: int = 64):
        if slots < 1 or max_workers < 1:
            raise ValueError(f"SharedCollate: slots and max_workers must be >= 1, got {slots}, {max_workers}")
        if not keys or isinstance(keys, str):
            raise ValueError(f"SharedCollate: keys must name at least one array key, e.g. ('rgb', 'depth'); got "
                             f"{keys!r}")
        self.keys, self.lists = tuple(keys), dict(lists or {})
        self.slots, self.max_workers = slots, max_workers
        self.id = uuid.uuid4().hex
        self._flags = multiprocessing.RawArray("q", slots * max_workers)
        self._owners = multiprocessing.RawArray("q", max_workers)
        # made by the first worker that claims a row (so an in-process collate leaves no file behind)
        self._lock_path = os.path.join(tempfile.gettempdir(), f"transferdepth-collate-{self.id}.lock")
        weakref.finalize(self, _unlink, self._lock_path, os.getpid())
        self._init_main()

    def _init_main(self) -> None:
        self._held: list[tuple[int, int, StorageWeakRef]] = []
        self._held_lock = threading.Lock()
        self._pid, self._row, self._buffers, self._seq = 0, None, [], 0
        _RINGS[self.id] = self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_held", "_held_lock", "_buffers"):
            state.pop(k)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_main()

    # -- main process ------------------------------------------------------------------------------------
    def _hold(self, index: int, token: int, batch: dict[str, Any]) -> None:
        storage = next(v for k, v in batch.items() if k in self.keys).untyped_storage()
        with self._held_lock:
            self._held.append((index, token, StorageWeakRef(storage)))
            still = []
            for entry in self._held:
                if entry[2].expired():
                    if self._flags[entry[0]] == entry[1]:
                        self._flags[entry[0]] = 0
                else:
                    still.append(entry)
            self._held = still

    # -- worker --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _claim_row(self) -> int | None:
        """This process's row of buffers: one no living process owns, claimed under the file lock."""
        if fcntl is None:
            return None
        pid = os.getpid()
        try:
            with self._claim_lock():
                for row in range(self.max_workers):
                    owner = self._owners[row]
                    if owner == 0 or owner == pid or not _alive(owner):
                        self._owners[row] = pid
                        for k in range(self.slots):
                            self._flags[row * self.slots + k] = 0
                        return row
        except OSError:  # the temp folder is not writable: fresh shared memory for every batch
            return None
        return None

    def _slot(self, nbytes: int) -> tuple[torch.UntypedStorage, int, int] | None:
        """(buffer, flag index, token) of a free slot of this worker, or None."""
        pid = os.getpid()
        if self._pid != pid:
            self._pid, self._row, self._buffers, self._seq = pid, self._claim_row(), [None] * self.slots, 0
        if self._row is None:
            return None
        for k in range(self.slots):
            index = self._row * self.slots + k
            if self._flags[index] == 0:
                buf = self._buffers[k]
                if buf is None or buf.nbytes() < nbytes:
                    buf = self._buffers[k] = torch.UntypedStorage._new_shared(nbytes)
                self._seq += 1
                token = (pid << 32) | self._seq
                self._flags[index] = token
                return buf, index, token
        return None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if get_worker_info() is None:  # main process: nothing to share
            return stack(items, self.keys, self.lists)
        layout, nbytes = _layout(items, self.keys)
        lists = _lists(items, self.lists)
        slot = self._slot(nbytes)
        if slot is None:
            return {**_fill(torch.UntypedStorage._new_shared(nbytes), layout), **lists}
        storage, index, token = slot
        batch = _HeldBatch(_fill(storage, layout), **lists)
        batch.ticket = (self.id, index, token)
        return batch


def stack(items: Sequence[dict[str, Any]], keys: Sequence[str], lists: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """What `SharedCollate(keys, lists)` returns in the main process: `keys` stacked into (N, ...) tensors
    (one storage), the keys of `lists` as lists (a missing value as the given default)."""
    layout, nbytes = _layout(items, keys)
    return {**_fill(torch.UntypedStorage(nbytes), layout), **_lists(items, lists or {})}


def _unlink(path: str, pid: int) -> None:
    if os.getpid() == pid:  # only the process that made the collate (a forked worker inherits the finalizer)
        with contextlib.suppress(OSError):
            os.unlink(path)
