"""`InMemory`: keep samples after their first read, optionally resized (mask-aware) to a fixed size.

For small datasets read many times (a few hundred real frames, generated scenes): decoding a 640x480
JPEG + PNG per step costs more than a small network's step on a CPU. Resizing once to the training size
(scale to cover, centre crop; depth resized mask-aware) keeps the cache small.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetWrapper
from transferdepth.data.transforms import resize_crop


class InMemory(DatasetWrapper):
    def __init__(self, dataset: Dataset, size: tuple[int, int] | None = None):
        super().__init__(dataset)
        self.size = size
        self.cache: dict[int, dict[str, Any]] = {}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i not in self.cache:
            sample = self.dataset[i]
            self.cache[i] = resize_crop(sample, self.size) if self.size is not None else sample
        return self.cache[i]
