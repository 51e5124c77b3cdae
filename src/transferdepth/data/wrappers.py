"""Datasets that wrap another dataset: the `DatasetWrapper` base, `SkipBad` and `InMemory`.

`SkipBad` replaces samples that raise DatasetError by the next good one and records them (see docs/data.md);
`InMemory` keeps samples after their first read, optionally resized (mask-aware) to a fixed size.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError
from transferdepth.data.transforms import resize_crop


class DatasetWrapper(Dataset):
    """Base of datasets that wrap another: same length, unknown attributes (`crop`, `source`) forwarded."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)


class SkipBad(DatasetWrapper):
    """Wraps a dataset: a sample that raises DatasetError is replaced by the next good one (i+1, i+2, ...).

    Bad indices are remembered (`skipped`: sorted list of (index, reason)) and not read again. Each returned
    sample carries `skipped`: a str with one `index<TAB>reason` line per bad index passed over to produce it
    ("" if none), which survives DataLoader workers and collation (a list of str per batch); call
    `note(sample_or_batch)` in the main process to merge those into this object's record, then `report()`.
    """

    def __init__(self, dataset: Dataset, max_consecutive: int = 64):
        super().__init__(dataset)
        self.max_consecutive = max_consecutive
        self.bad: dict[int, str] = {}

    @property
    def skipped(self) -> list[tuple[int, str]]:
        """(index, reason) of every bad sample seen so far (by this process, plus those noted)."""
        return sorted(self.bad.items())

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        passed: list[int] = []
        for step in range(min(n, self.max_consecutive)):
            i = (index + step) % n
            if i not in self.bad:
                try:
                    sample = dict(self.dataset[i])
                except DatasetError as e:
                    self.bad[i] = " ".join(str(e).split())  # one line
                else:
                    sample["skipped"] = "\n".join(f"{j}\t{self.bad[j]}" for j in passed)
                    return sample
            passed.append(i)
        source = getattr(self.dataset, "source", type(self.dataset).__name__)
        raise DatasetError(source, f"{len(passed)} consecutive bad samples from here, giving up; first: "
                           f"{self.bad[passed[0]]}", index)

    def note(self, sample_or_batch: dict[str, Any]) -> int:
        """Merge the `skipped` field of a sample or collated batch into `skipped`; returns how many are new."""
        field_ = sample_or_batch.get("skipped", "")
        texts = [field_] if isinstance(field_, str) else list(field_)
        new = 0
        for line in filter(None, "\n".join(texts).splitlines()):
            idx, _, reason = line.partition("\t")
            if int(idx) not in self.bad:
                self.bad[int(idx)] = reason
                new += 1
        return new

    def report(self) -> str:
        """One line: how many samples were skipped, and the first reason."""
        if not self.bad:
            return f"skip_bad: 0 of {len(self)} samples skipped"
        first, reason = self.skipped[0]
        return (f"skip_bad: {len(self.bad)} of {len(self)} samples skipped (bad); "
                f"first: index {first}: {reason}")


class InMemory(DatasetWrapper):
    """Keeps samples after their first read, resized to size=(H, W) (scale to cover, centre crop, depth
    mask-aware) if given.

    For small datasets read many times (a few hundred real frames, generated scenes): decoding a 640x480
    JPEG + PNG per step costs more than a small network's step on a CPU; resizing once keeps the cache small.
    """

    def __init__(self, dataset: Dataset, size: tuple[int, int] | None = None):
        super().__init__(dataset)
        self.size = size
        self.cache: dict[int, dict[str, Any]] = {}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i not in self.cache:
            sample = self.dataset[i]
            self.cache[i] = resize_crop(sample, self.size) if self.size is not None else sample
        return self.cache[i]
