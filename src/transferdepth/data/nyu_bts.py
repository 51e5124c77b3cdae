"""NYU Depth V2 in the BTS layout, selected by a BTS file list.

Tree: `sync/<scene>/rgb_NNNNN.jpg` + `sync/<scene>/sync_depth_NNNNN.png` (train) and
`official_splits/test/<scene>/rgb_NNNNN.jpg` + `sync_depth_NNNNN.png` (test). Depth PNGs are 16-bit
millimetres (metres = v / 1000, 0 = hole); valid pixels: depth in (0, 10] m.
File list: one sample per line, `rgb_rel_path depth_rel_path focal`; lines whose depth is `None` are skipped.
Paths are taken relative to ROOT; as BTS's own lists are relative to `sync/` (train) or
`official_splits/test/` (test), those two sub-folders are tried too. Intrinsics: fx = fy = focal,
cx = W/2, cy = H/2 (NYU Kinect defaults when a line has no focal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, Sample, check_sample, normalize_index
from transferdepth.data.io import (
    check_same_size,
    decode_depth_raw,
    decode_rgb,
    find_under,
    intrinsics,
    raw_to_metres,
)
from transferdepth.data.registry import opt_text, register_source
from transferdepth.recipe import MAX_DEPTH_M, nyu_intrinsics

SUBFOLDERS = ("", "sync", "official_splits/test")


class NyuBts(Dataset):
    """Samples listed in a BTS file list under a BTS-layout NYU root."""

    def __init__(self, root: str | Path, list_file: str | Path):
        self.root = Path(root)
        self.source = f"nyu-bts:{self.root}"
        if not self.root.is_dir():
            raise DatasetError(self.source, "root folder not found", path=str(self.root))
        list_path = Path(list_file)
        if not list_path.is_absolute() and not list_path.exists() and (self.root / list_path).exists():
            list_path = self.root / list_path
        self.list_path = list_path
        self.entries = self._read_list()
        if not self.entries:
            raise DatasetError(self.source, "no samples: the file list has no lines with depth",
                               path=str(list_path))

    def _read_list(self) -> list[tuple[str, str, float | None]]:
        try:
            lines = self.list_path.read_text().splitlines()
        except OSError as e:
            raise DatasetError(self.source, f"cannot read file list: {e}", path=str(self.list_path)) from e
        entries = []
        for line_no, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3):
                raise DatasetError(self.source, f"line {line_no}: expected 'rgb_path depth_path focal', "
                                   f"got {line!r}", path=str(self.list_path))
            if parts[1] == "None":
                continue
            try:
                focal = float(parts[2]) if len(parts) == 3 else None
            except ValueError as e:
                raise DatasetError(self.source, f"line {line_no}: focal must be a number, got {parts[2]!r}",
                                   path=str(self.list_path)) from e
            entries.append((parts[0], parts[1], focal))
        return entries

    def _resolve(self, rel: str) -> Path:
        return find_under(self.root, SUBFOLDERS, rel)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        index = normalize_index(index, len(self), self.source)
        rgb_rel, depth_rel, focal = self.entries[index]
        rgb_path, depth_path = self._resolve(rgb_rel), self._resolve(depth_rel)
        rgb = decode_rgb(rgb_path, self.source, index, str(rgb_path))
        raw = decode_depth_raw(depth_path, self.source, index, str(depth_path), bits=16)
        check_same_size(rgb, raw, self.source, index, str(rgb_path), str(depth_path))
        depth, valid = raw_to_metres(raw, 0.001, invalid=(0,), max_depth=MAX_DEPTH_M)
        h, w = depth.shape
        k = intrinsics(focal, focal, w / 2, h / 2) if focal is not None else nyu_intrinsics(h, w)
        sample = {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": k, "name": rgb_rel.lstrip("/")}
        return check_sample(sample, self.source, index)


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    list_file = opts.get("list")
    if list_file is None:
        if split is None:
            raise DatasetError(spec, "nyu-bts needs list=FILE (a BTS file list) or a split "
                               "(uses ROOT/nyudepthv2_{split}_files_with_gt.txt)")
        list_file = str(Path(path) / f"nyudepthv2_{split}_files_with_gt.txt")
    return NyuBts(path, list_file)


register_source("nyu-bts", _open, {"list": opt_text})
