"""DenseDepth's `nyu_data.zip`: RGB/depth pairs listed in `data/nyu2_{train,test}.csv`, read lazily.

Depth units: the train split stores 8-bit PNGs with metres = v / 255 * 10; the test split stores 16-bit
PNGs in millimetres (metres = v / 1000). Valid pixels: depth in (0, 10] m. Members are read one at a time
from the zip (never extracted); each process opens its own ZipFile handle, so the dataset is safe to use
with DataLoader workers (fork or spawn).
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, Sample, check_sample, normalize_index
from transferdepth.data.io import (
    check_same_size,
    decode_depth_raw,
    decode_rgb,
    raw_to_metres,
)
from transferdepth.recipe import MAX_DEPTH_M, nyu_intrinsics

# split -> (csv member, depth bit depth, metres per raw unit)
SPLITS = {
    "train": ("data/nyu2_train.csv", 8, 10.0 / 255.0),
    "test": ("data/nyu2_test.csv", 16, 0.001),
}


class NyuZip(Dataset):
    """Samples of one split of DenseDepth's nyu_data.zip (rgb uint8 HxWx3, depth float32 metres)."""

    def __init__(self, path: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise DatasetError(f"nyu-zip:{path}", f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        self.path, self.split = Path(path), split
        self.source = f"nyu-zip:{self.path} ({split})"
        self.csv_member, self.bits, self.scale = SPLITS[split]
        self._zf: zipfile.ZipFile | None = None
        self._pid: int | None = None
        self.rows = self._read_rows()
        if not self.rows:
            raise DatasetError(self.source, "no samples: the CSV lists no rows", path=self.csv_member)

    def _read_rows(self) -> list[tuple[str, str]]:
        try:
            with zipfile.ZipFile(self.path) as zf:
                text = zf.read(self.csv_member).decode("utf-8-sig")
        except FileNotFoundError as e:
            raise DatasetError(self.source, "file not found", path=str(self.path)) from e
        except zipfile.BadZipFile as e:
            raise DatasetError(self.source, f"not a zip file: {e}", path=str(self.path)) from e
        except KeyError as e:
            raise DatasetError(self.source, "CSV member missing from the zip (expected DenseDepth's "
                               "nyu_data.zip layout)", path=self.csv_member) from e
        rows = []
        for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            row = [c.strip() for c in row]
            if not any(row):
                continue
            if len(row) != 2 or not all(row):
                raise DatasetError(self.source, f"line {line_no}: expected 'rgb_path,depth_path', got {row}",
                                   path=self.csv_member)
            rows.append((row[0], row[1]))
        return rows

    def _zip(self) -> zipfile.ZipFile:
        if self._zf is None or self._pid != os.getpid():
            self._zf, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zf

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_zf"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def _member(self, name: str, index: int) -> bytes:
        try:
            return self._zip().read(name)
        except KeyError as e:
            raise DatasetError(self.source, "member listed in the CSV is missing from the zip",
                               index, name) from e
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # corrupt member data / CRC mismatch
            raise DatasetError(self.source, f"cannot read member: {e}", index, name) from e

    def __getitem__(self, index: int) -> Sample:
        index = normalize_index(index, len(self), self.source)
        rgb_name, depth_name = self.rows[index]
        rgb = decode_rgb(self._member(rgb_name, index), self.source, index, rgb_name)
        raw = decode_depth_raw(self._member(depth_name, index), self.source, index, depth_name, self.bits)
        check_same_size(rgb, raw, self.source, index, rgb_name, depth_name)
        depth, valid = raw_to_metres(raw, self.scale, invalid=(0,), max_depth=MAX_DEPTH_M)
        h, w = depth.shape
        sample = {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": nyu_intrinsics(h, w),
                  "name": rgb_name}
        return check_sample(sample, self.source, index)
