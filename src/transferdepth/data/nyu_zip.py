"""DenseDepth's `nyu_data.zip`: RGB/depth pairs listed in `data/nyu2_{train,test}.csv`, read lazily.

Depth units: the train split stores 8-bit PNGs with metres = v / 255 * 10; the test split stores 16-bit
PNGs in millimetres (metres = v / 1000). Valid pixels: depth in (0, 10] m. Members are read one at a time
from the zip (never extracted); each process opens its own ZipFile handle, so the dataset is safe to use
with DataLoader workers (fork or spawn).
"""

from __future__ import annotations

import csv
import functools
import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, Sample, check_sample, normalize_index
from transferdepth.data.handles import PerProcess
from transferdepth.data.io import check_same_size, decode_depth_raw, decode_rgb, raw_to_metres
from transferdepth.data.registry import opt_float, opt_text, register_source
from transferdepth.recipe import MAX_DEPTH_M, nyu_intrinsics

# split -> (csv member, depth bit depth, metres per raw unit)
SPLITS = {
    "train": ("data/nyu2_train.csv", 8, 10.0 / 255.0),
    "test": ("data/nyu2_test.csv", 16, 0.001),
}
# Largest member read (uncompressed, MB = 1e6 bytes): NYU's PNGs/JPEGs are under 1 MB; a member this big is
# not an NYU image and would cost its size (and more) in RAM. Option max_member_mb= changes it.
MAX_MEMBER_MB = 64.0
# What reading a damaged member can raise: CRC/format errors, bad deflate data, unsupported or encrypted
# compression (NotImplementedError / RuntimeError from zipfile).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError)


class NyuZip(Dataset):
    """Samples of one split of DenseDepth's nyu_data.zip (rgb uint8 HxWx3, depth float32 metres).

    `max_member_mb`: members larger than this (uncompressed) are bad samples, never read (None: no cap).
    """

    def __init__(self, path: str | Path, split: str = "train", max_member_mb: float | None = MAX_MEMBER_MB):
        if split not in SPLITS:
            raise DatasetError(f"nyu-zip:{path}", f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
        self.path, self.split = Path(path), split
        self.source = f"nyu-zip:{self.path} ({split})"
        if max_member_mb is not None and not max_member_mb > 0:
            raise DatasetError(self.source, f"max_member_mb must be > 0 (MB), got {max_member_mb}")
        self.max_member_bytes = None if max_member_mb is None else int(max_member_mb * 1e6)
        self.csv_member, self.bits, self.scale = SPLITS[split]
        self._handle: PerProcess[zipfile.ZipFile] = PerProcess(functools.partial(zipfile.ZipFile, self.path))
        self.rows = self._read_rows()
        if not self.rows:
            raise DatasetError(self.source, "no samples: the CSV lists no rows", path=self.csv_member)

    @property
    def _zf(self) -> zipfile.ZipFile | None:
        """This process's zip handle, or None if it has not opened one."""
        return self._handle.peek()

    def _read_rows(self) -> list[tuple[str, str]]:
        """The CSV's rows, streamed from the zip (never read whole)."""
        rows = []
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.csv_member) as raw:
                reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
                for row in reader:
                    row = [c.strip() for c in row]
                    if not any(row):
                        continue
                    if len(row) != 2 or not all(row):
                        raise DatasetError(self.source, f"line {reader.line_num}: expected 'rgb_path,depth_path'"
                                           f", got {row[:3]}", path=self.csv_member)
                    rows.append((row[0], row[1]))
        except FileNotFoundError as e:
            raise DatasetError(self.source, "file not found", path=str(self.path)) from e
        except zipfile.BadZipFile as e:
            raise DatasetError(self.source, f"not a zip file: {e}", path=str(self.path)) from e
        except KeyError as e:
            raise DatasetError(self.source, "CSV member missing from the zip (expected DenseDepth's "
                               "nyu_data.zip layout)", path=self.csv_member) from e
        except (csv.Error, UnicodeDecodeError, *ZIP_READ_ERRORS) as e:
            raise DatasetError(self.source, f"cannot read the CSV after {len(rows)} rows: {e}",
                               path=self.csv_member) from e
        return rows

    def __len__(self) -> int:
        return len(self.rows)

    def _member(self, name: str, index: int) -> bytes:
        zf = self._handle.get()
        try:
            info = zf.getinfo(name)
        except KeyError as e:
            raise DatasetError(self.source, "member listed in the CSV is missing from the zip",
                               index, name) from e
        if self.max_member_bytes is not None and info.file_size > self.max_member_bytes:
            raise DatasetError(self.source, f"member is {info.file_size / 1e6:.3g} MB uncompressed, over the "
                               f"{self.max_member_bytes / 1e6:g} MB cap (option max_member_mb=)", index, name)
        try:
            return zf.read(info)
        except ZIP_READ_ERRORS as e:  # corrupt member data / CRC mismatch / unsupported compression
            raise DatasetError(self.source, f"cannot read member: {type(e).__name__}: {e}", index, name) from e

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


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    return NyuZip(path, split or "train", opts.get("max_member_mb", MAX_MEMBER_MB))


register_source("nyu-zip", _open, {"split": opt_text, "max_member_mb": opt_float})
