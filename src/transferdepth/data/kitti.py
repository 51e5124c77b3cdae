"""KITTI as its users have it on disk: the raw sequences plus the depth benchmark's ground truth, paired by
an Eigen-split file list as BTS / AdaBins publish them (`eigen_test_files_with_gt.txt`, ...).

    kitti:IMAGES_ROOT?depth=DEPTH_ROOT&list=FILE[&kb_crop=1]

Images: `IMAGES_ROOT/<date>/<drive>/image_02/data/NNNNNNNNNN.png` (KITTI raw, 8-bit RGB, about 375x1242,
the size varies per drive). Depth: `DEPTH_ROOT/<drive>/proj_depth/groundtruth/image_02/NNNNNNNNNN.png`
(the depth benchmark's `data_depth_annotated`, whose drives sit in `train/` or `val/`; both sub-folders are
tried too): 16-bit PNG, **metres = value / 256**, 0 = no data; valid = value > 0 (no upper cap here; the
`kitti` evaluation protocol caps at 80 m). DEPTH_ROOT defaults to IMAGES_ROOT.

List: one sample per line, `rgb_path depth_path focal` (paths relative to the two roots). Lines whose
depth is `None` (frames without ground truth: 45 of the 697 Eigen test frames) are SKIPPED when the list
is read and counted in `ds.no_gt` (the listed RGB paths); evaluation needs ground truth and a sample with
no valid pixel would only dilute training batches. A line with another number of fields, or a focal that
is not a number, is a DatasetError naming the list file and the line.

Intrinsics: fx = fy = focal from the list line, principal point at the image centre (cx = W/2, cy = H/2, as
`nyu-bts` does); KITTI's calib files are not read.

`kb_crop=1`: BTS's `do_kb_crop`: the 352x1216 window at the bottom, horizontally centred (top = H - 352,
left = (W - 1216) // 2), applied to RGB, depth and the principal point. It gives every drive the same
size (for batching in training) and is what BTS feeds its network. The sample then carries `frame`:
`(top, left, full_height, full_width)`, so the `kitti` protocol still places the Garg crop in fractions
of the FULL ground truth frame, as BTS does after pasting its prediction back (see `metrics.py`).
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
from transferdepth.data.registry import opt_int, opt_text, register_source

KITTI_DEPTH_SCALE = 1.0 / 256.0  # metres per raw unit of the depth benchmark's 16-bit PNGs
KB_CROP_HW = (352, 1216)  # BTS's do_kb_crop window (height, width)
DEPTH_SUBFOLDERS = ("", "train", "val")  # data_depth_annotated keeps its drives in train/ and val/


def kb_crop_box(height: int, width: int) -> tuple[int, int]:
    """(top, left) of BTS's 352x1216 crop in an image of `height` x `width` (bottom, centred)."""
    return height - KB_CROP_HW[0], (width - KB_CROP_HW[1]) // 2


class Kitti(Dataset):
    """KITTI raw images + depth benchmark ground truth, listed by an Eigen-split file list."""

    def __init__(self, root: str | Path, list_file: str | Path, depth_root: str | Path | None = None,
                 kb_crop: bool = False):
        self.root = Path(root)
        self.depth_root = Path(depth_root) if depth_root is not None else self.root
        self.kb_crop = bool(kb_crop)
        self.source = f"kitti:{self.root}"
        for what, p in (("image root", self.root), ("depth root", self.depth_root)):
            if not p.is_dir():
                raise DatasetError(self.source, f"{what} folder not found", path=str(p))
        list_path = Path(list_file)
        if not list_path.is_absolute() and not list_path.exists() and (self.root / list_path).exists():
            list_path = self.root / list_path
        self.list_path = list_path
        self.no_gt: list[str] = []
        self.entries = self._read_list()
        if not self.entries:
            raise DatasetError(self.source, f"no samples: the file list has no lines with depth "
                               f"({len(self.no_gt)} without)", path=str(list_path))

    def _read_list(self) -> list[tuple[str, str, float]]:
        try:
            lines = self.list_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(self.source, f"cannot read file list: {e}", path=str(self.list_path)) from e
        entries = []
        for line_no, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise DatasetError(self.source, f"line {line_no}: expected 3 fields 'rgb_path depth_path focal', "
                                   f"got {len(parts)}: {line[:200]!r}", path=str(self.list_path))
            try:
                focal = float(parts[2])
            except ValueError:
                focal = float("nan")
            if not focal > 0 or focal == float("inf"):
                raise DatasetError(self.source, f"line {line_no}: focal must be a number > 0 (pixels), "
                                   f"got {parts[2]!r}", path=str(self.list_path))
            if parts[1] == "None":
                self.no_gt.append(parts[0])
                continue
            entries.append((parts[0].lstrip("/"), parts[1].lstrip("/"), focal))
        return entries

    def _depth_path(self, rel: str) -> Path:
        return find_under(self.depth_root, DEPTH_SUBFOLDERS, rel)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        index = normalize_index(index, len(self), self.source)
        rgb_rel, depth_rel, focal = self.entries[index]
        rgb_path, depth_path = self.root / rgb_rel, self._depth_path(depth_rel)
        rgb = decode_rgb(rgb_path, self.source, index, str(rgb_path))
        raw = decode_depth_raw(depth_path, self.source, index, str(depth_path), bits=16)
        check_same_size(rgb, raw, self.source, index, str(rgb_path), str(depth_path))
        depth, valid = raw_to_metres(raw, KITTI_DEPTH_SCALE, invalid=(0,))
        h, w = depth.shape
        k = intrinsics(focal, focal, w / 2, h / 2)
        sample: dict[str, Any] = {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": k, "name": rgb_rel}
        if self.kb_crop:
            ch, cw = KB_CROP_HW
            if h < ch or w < cw:
                raise DatasetError(self.source, f"kb_crop needs an image of at least {cw}x{ch} (WxH), got "
                                   f"{w}x{h}", index, str(rgb_path))
            top, left = kb_crop_box(h, w)
            win = (slice(top, top + ch), slice(left, left + cw))
            k = k.copy()
            k[0, 2] -= left
            k[1, 2] -= top
            sample.update(rgb=rgb[win], depth=depth[win], valid=valid[win], intrinsics=k, frame=(top, left, h, w))
        return check_sample(sample, self.source, index)


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    list_file = opts.get("list")
    if list_file is None:
        if split is None:
            raise DatasetError(spec, "kitti needs list=FILE (an Eigen-split list: rgb_path depth_path focal) or "
                               "a split (uses IMAGES_ROOT/eigen_{split}_files_with_gt.txt)")
        list_file = str(Path(path) / f"eigen_{split}_files_with_gt.txt")
    kb = opts.get("kb_crop", 0)
    if kb not in (0, 1):
        raise DatasetError(spec, f"kb_crop must be 0 or 1, got {kb}")
    return Kitti(path, list_file, depth_root=opts.get("depth"), kb_crop=bool(kb))


register_source("kitti", _open, {"list": opt_text, "depth": opt_text, "kb_crop": opt_int})
