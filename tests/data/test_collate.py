"""SharedCollate: batches equal a plain stack, a worker reuses its buffers once the main process has dropped a
batch, and never while any tensor of that batch (or a view of it) is still alive."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from transferdepth.data.collate import CollateError, SharedCollate, stack

KEYS = ("rgb", "depth", "valid")


def sample(i: int, h: int = 24, w: int = 32, tensors: bool = False) -> dict:
    rng = np.random.default_rng(i)
    s = {"rgb": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
         "depth": rng.uniform(0.1, 10, (h, w)).astype(np.float32),
         "valid": rng.random((h, w)) < 0.8, "name": f"s{i}"}
    if tensors:
        s = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
    if i % 3 == 0:
        s["skipped"] = f"{i}\tbad"
    return s


class Samples(Dataset):
    def __init__(self, n: int, tensors: bool = False):
        self.n, self.tensors = n, tensors

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return sample(i, tensors=self.tensors)


def expected(indices: list[int]) -> dict:
    items = [sample(i) for i in indices]
    return {k: np.stack([it[k] for it in items]) for k in KEYS}


def assert_batch(batch: dict, indices: list[int]) -> None:
    want = expected(indices)
    for k in KEYS:
        assert isinstance(batch[k], torch.Tensor)
        assert batch[k].dtype == torch.from_numpy(want[k]).dtype, k
        np.testing.assert_array_equal(batch[k].numpy(), want[k], err_msg=k)
    assert batch["name"] == [f"s{i}" for i in indices]
    assert batch["skipped"] == [f"{i}\tbad" if i % 3 == 0 else "" for i in indices]


def loader(n: int, workers: int, collate: SharedCollate, batch_size: int = 4, **kw) -> DataLoader:
    return DataLoader(Samples(n, kw.pop("tensors", False)), batch_size=batch_size, num_workers=workers,
                      collate_fn=collate, **kw)


def make() -> SharedCollate:
    return SharedCollate(KEYS, {"name": None, "skipped": ""})


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("tensors", [False, True])
def test_batches_equal_a_plain_stack(workers, tensors):
    collate = make()
    for _ in range(2):  # two epochs: fresh workers claim the rows again
        for b, batch in enumerate(loader(22, workers, collate, tensors=tensors)):
            assert_batch(batch, list(range(4 * b, min(4 * b + 4, 22))))  # the last batch is smaller


def test_batches_a_caller_keeps_are_never_overwritten():
    """Every batch (or only a view, or only a numpy array of one key) is kept while the loader runs on:
    its buffer must not be reused, whatever the main process does in between."""
    collate = make()
    kept = []
    for b, batch in enumerate(loader(64, 2, collate)):
        if b % 3 == 0:
            kept.append((b, batch))
        elif b % 3 == 1:
            kept.append((b, {"depth_view": batch["depth"][1:3], "rgb_np": batch["rgb"].numpy()}))
        del batch
    for b, held in kept:
        want = expected(list(range(4 * b, 4 * b + 4)))
        if "depth_view" in held:
            np.testing.assert_array_equal(held["depth_view"].numpy(), want["depth"][1:3])
            np.testing.assert_array_equal(held["rgb_np"], want["rgb"])
        else:
            assert_batch(held, list(range(4 * b, 4 * b + 4)))


def _shm_inode(t: torch.Tensor) -> int:
    fd, _ = t.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


def test_a_worker_reuses_its_buffers_once_batches_are_dropped():
    collate = make()
    inodes = set()
    n_batches = 0
    for batch in loader(4 * 40, 2, collate):
        inodes.add(_shm_inode(batch["rgb"]))
        assert _shm_inode(batch["depth"]) == _shm_inode(batch["rgb"])  # one buffer per batch
        n_batches += 1
    assert n_batches == 40
    # 2 workers x 4 slots; a worker that finds no free slot takes fresh shared memory (timing: allow 4)
    assert len(inodes) <= 2 * collate.slots + 4, f"{len(inodes)} buffers for {n_batches} batches"


def test_spawned_workers_use_the_buffers_too():
    collate = make()
    inodes = set()
    for b, batch in enumerate(loader(4 * 20, 2, collate, multiprocessing_context="spawn")):
        assert_batch(batch, list(range(4 * b, 4 * b + 4)))
        inodes.add(_shm_inode(batch["rgb"]))
    assert len(inodes) <= 2 * collate.slots + 2


def test_in_process_stack():
    batch = stack([sample(0), sample(1)], KEYS, {"name": None, "skipped": ""})
    assert_batch(batch, [0, 1])
    assert not batch["rgb"].is_shared()


@pytest.mark.parametrize("items, match", [
    ([sample(0), sample(1, h=20)], r"key 'rgb': sample 1 is \(20, 32, 3\) torch.uint8, sample 0 is \(24, 32, 3\)"),
    ([sample(0), {**sample(1), "depth": sample(1)["depth"].astype(np.float64)}], r"key 'depth': sample 1 .*float64"),
    ([sample(0), {"rgb": sample(1)["rgb"]}], r"sample 1 has no 'depth'"),
    ([{**sample(0), "valid": [True]}], r"key 'valid' of sample 0 is list; expected a numpy array or a torch tensor"),
    ([], r"an empty batch"),
    ([{**sample(0), "depth": np.array(["a", "b"])}], r"key 'depth' of sample 0 is a numpy array of <U1, which torch"),
])
def test_bad_batches_are_named(items, match):
    with pytest.raises(CollateError, match=match):
        make()(items)


def test_bad_batch_in_a_worker_is_one_clear_error():
    class Ragged(Samples):
        def __getitem__(self, i):
            return sample(i, h=24 if i != 5 else 16)

    dl = DataLoader(Ragged(8), batch_size=4, num_workers=1, collate_fn=make())
    with pytest.raises(CollateError, match=r"key 'rgb': sample 1 is \(16, 32, 3\)"):
        list(dl)


@pytest.mark.parametrize("kwargs, match", [({"keys": ()}, "at least one array key"),
                                           ({"keys": "rgb"}, "at least one array key"),
                                           ({"keys": KEYS, "slots": 0}, "slots and max_workers must be >= 1")])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SharedCollate(**kwargs)


def test_arrays_whose_sizes_are_not_multiples_of_64_bytes():
    """5x7 samples: 105-byte rgb, 140-byte depth, 35-byte mask per sample. Each key starts on its own 64-byte
    boundary after the previous one's end (rounded up, never down into it), in the main process and in a worker."""
    items = [sample(i, h=5, w=7) for i in range(3)]
    want = {k: np.stack([it[k] for it in items]) for k in KEYS}
    batch = stack(items, KEYS)
    base = batch["rgb"].untyped_storage().data_ptr()
    ends = []
    for k in KEYS:
        np.testing.assert_array_equal(batch[k].numpy(), want[k], err_msg=k)
        start = batch[k].data_ptr() - base
        assert start % 64 == 0 and all(start >= e for e in ends), (k, start, ends)
        ends.append(start + batch[k].numel() * batch[k].element_size())

    class Small(Samples):
        def __getitem__(self, i):
            return sample(i, h=5, w=7)

    for b, got in enumerate(DataLoader(Small(6), batch_size=3, num_workers=1, collate_fn=make())):
        items = [sample(i, h=5, w=7) for i in range(3 * b, 3 * b + 3)]
        for k in KEYS:
            np.testing.assert_array_equal(got[k].numpy(), np.stack([it[k] for it in items]), err_msg=k)


def test_a_later_larger_batch_in_a_reused_slot():
    """Batches grow (8x8, 16x16, ... per batch): a slot freed by a small batch must grow for the next one."""
    class Growing(Samples):
        def __getitem__(self, i):
            return sample(i, h=8 * (1 + i // 4), w=8 * (1 + i // 4))

    collate = make()
    for b, batch in enumerate(DataLoader(Growing(4 * 12), batch_size=4, num_workers=1, collate_fn=collate)):
        side = 8 * (1 + b)
        items = [sample(i, h=side, w=side) for i in range(4 * b, 4 * b + 4)]
        for k in KEYS:
            np.testing.assert_array_equal(batch[k].numpy(), np.stack([it[k] for it in items]), err_msg=(b, k))
        assert batch["rgb"].untyped_storage().nbytes() >= sum(batch[k].numel() * batch[k].element_size() for k in KEYS)


def test_buffers_are_reused_after_more_worker_generations_than_slots():
    """Every epoch starts new worker processes (a generation). Each claims a row whose owner has exited and
    starts with all its slots free: after more generations than slots (and rows), batches still go into
    reused buffers instead of fresh shared memory each."""
    collate = SharedCollate(KEYS, {"name": None, "skipped": ""}, slots=4, max_workers=2)
    for _ in range(6):
        inodes = {_shm_inode(batch["rgb"]) for batch in loader(4 * 40, 2, collate)}
    assert len(inodes) <= 2 * collate.slots + 4, f"{len(inodes)} buffers for 40 batches in the 6th epoch"


def test_a_batch_kept_across_an_epoch_then_dropped_while_the_next_epochs_are_held():
    """The last batch of epoch 1 is kept; in epoch 2 every batch is kept too, and the epoch-1 batch is dropped
    halfway. Its slot now holds an epoch-2 batch (another token): that batch must not be overwritten."""
    collate = make()
    old = None
    for b, batch in enumerate(loader(4 * 10, 2, collate)):
        old = (b, batch)
    kept = []
    for b, batch in enumerate(loader(4 * 30, 2, collate)):
        kept.append((b, batch))
        if b == 12:
            assert_batch(old[1], list(range(4 * old[0], 4 * old[0] + 4)))
            old = None  # dropped while the epoch-2 batches are held
    for b, batch in kept:
        assert_batch(batch, list(range(4 * b, 4 * b + 4)))
