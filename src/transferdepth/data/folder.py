"""A generic folder of RGB-D pairs, matched by two glob patterns.

`rgb` and `depth` are globs relative to the root (`*.color.jpg`, `color/*.png`, `rgb/rgb_*.jpg`). The part
of each file name matched by the wildcards is its key: `frame-000012.color.jpg` and `frame-000012.depth.png`
share the key `frame-000012`. Pairs are matched by key; when the two key sets are disjoint but equally
many (e.g. `img_0001.jpg` vs `d_1.png`) they are paired in natural sorted order; anything else is an error.

Depth images: 16-bit PNG or 16-bit binary PGM (`bits=16`, default), or 8-bit (`bits=8`; `bits=None` takes
either). metres = raw * scale; raw values in `invalid` (and 0 m) are holes; `max_depth` (metres) marks
farther pixels invalid. `index=(lo, hi)` keeps pairs whose frame number (the last integer in the key)
is in [lo, hi); either end may be None; bounds are frame numbers >= 0 with lo <= hi (not Python slice
positions: a negative bound is an error). Intrinsics: given (fx, fy, cx, cy), else a 3x3
`camera-intrinsics.txt` in the root if present, else None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, Sample, check_sample, normalize_index
from transferdepth.data.io import check_same_size, decode_depth_raw, decode_rgb, raw_to_metres
from transferdepth.data.io import intrinsics as camera_matrix
from transferdepth.data.registry import no_split, opt_float, opt_floats, opt_text, register_source

INTRINSICS_FILE = "camera-intrinsics.txt"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob pattern as a regex whose groups capture what each wildcard matched."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):  # zero or more folders
            out.append("((?:[^/]*/)*)")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif c == "*":
            out.append("([^/]*)")
            i += 1
        elif c == "?":
            out.append("([^/])")
            i += 1
        elif c == "[" and "]" in pattern[i + 2:]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1:j]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append(f"([{body.replace(chr(92), chr(92) * 2)}])")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders numbers numerically: 2 < 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def frame_number(key: str) -> int | None:
    """The last integer in a key (`frame-000800` -> 800), or None."""
    nums = re.findall(r"\d+", key)
    return int(nums[-1]) if nums else None


def check_frame_range(lo: int | None, hi: int | None) -> None:
    """ValueError unless lo, hi are None or frame numbers >= 0 with lo <= hi."""
    for name, v in (("LO", lo), ("HI", hi)):
        if v is not None and v < 0:
            raise ValueError(f"{name}={v}: frame numbers are >= 0 (index=LO:HI selects frame numbers, "
                             "it is not a Python slice; leave an end empty for 'from the start'/'to the end')")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"LO={lo} > HI={hi}: expected LO <= HI")


class Folder(Dataset):
    """RGB-D pairs under `root` matched by the `rgb` and `depth` glob patterns."""

    def __init__(
        self,
        root: str | Path,
        rgb: str,
        depth: str,
        scale: float = 0.001,
        invalid: Sequence[float] = (0,),
        max_depth: float | None = None,
        bits: int | None = 16,
        intrinsics: Sequence[float] | None = None,
        index: tuple[int | None, int | None] | None = None,
    ):
        self.root = Path(root)
        self.source = f"folder:{self.root}"
        if not self.root.is_dir():
            raise DatasetError(self.source, "root folder not found", path=str(self.root))
        if bits not in (8, 16, None):
            raise DatasetError(self.source, f"bits must be 8, 16 or None, got {bits!r}")
        self.scale, self.invalid, self.max_depth, self.bits = scale, tuple(invalid), max_depth, bits
        self.camera = self._camera(intrinsics)
        self.pairs = self._pair(self._keys(rgb), self._keys(depth), rgb, depth)
        if index is not None:
            self.pairs = self._filter(self.pairs, index)

    def _keys(self, pattern: str) -> dict[str, str]:
        regex = glob_regex(pattern)
        found = {}
        for p in self.root.glob(pattern):
            rel = p.relative_to(self.root).as_posix()
            m = regex.match(rel)
            if m and p.is_file():
                found["/".join(m.groups())] = rel
        if not found:
            raise DatasetError(self.source, f"no files match {pattern!r}", path=str(self.root))
        return found

    def _pair(self, rgbs: dict[str, str], depths: dict[str, str], rgb_pat: str, depth_pat: str):
        if rgbs.keys() == depths.keys():
            keys = sorted(rgbs, key=natural_key)
            return [(k, rgbs[k], depths[k]) for k in keys]
        if len(rgbs) == len(depths) and not rgbs.keys() & depths.keys():
            rk, dk = sorted(rgbs, key=natural_key), sorted(depths, key=natural_key)
            return [(r, rgbs[r], depths[d]) for r, d in zip(rk, dk)]
        only_rgb = sorted(rgbs.keys() - depths.keys(), key=natural_key)
        only_depth = sorted(depths.keys() - rgbs.keys(), key=natural_key)
        raise DatasetError(
            self.source, f"{len(rgbs)} files match rgb={rgb_pat!r} but {len(depths)} match depth={depth_pat!r}; "
            f"expected one depth per RGB (rgb without depth: {only_rgb[:3]}, depth without rgb: "
            f"{only_depth[:3]})", path=str(self.root))

    def _filter(self, pairs, index: tuple[int | None, int | None]):
        lo, hi = index
        try:
            check_frame_range(lo, hi)
        except ValueError as e:
            raise DatasetError(self.source, f"index={'' if lo is None else lo}:{'' if hi is None else hi}: {e}") \
                from None
        kept = []
        for pair in pairs:
            n = frame_number(pair[0])
            if n is None:
                raise DatasetError(self.source, "index=LO:HI needs a frame number in each file name",
                                   path=pair[1])
            if (lo is None or n >= lo) and (hi is None or n < hi):
                kept.append(pair)
        if not kept:
            raise DatasetError(self.source, f"no pairs with frame number in [{lo}, {hi}) "
                               f"(of {len(pairs)} pairs)", path=str(self.root))
        return kept

    def _camera(self, given: Sequence[float] | None) -> np.ndarray | None:
        if given is not None:
            if len(given) != 4:
                raise DatasetError(self.source, f"intrinsics must be fx,fy,cx,cy, got {list(given)}")
            return camera_matrix(*given)
        file = self.root / INTRINSICS_FILE
        if not file.exists():
            return None
        try:
            k = np.loadtxt(file, dtype=np.float64)
        except ValueError as e:
            raise DatasetError(self.source, f"cannot parse a 3x3 matrix: {e}", path=str(file)) from e
        if k.shape != (3, 3):
            raise DatasetError(self.source, f"expected a 3x3 matrix, got shape {k.shape}", path=str(file))
        return k

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        index = normalize_index(index, len(self), self.source)
        _, rgb_rel, depth_rel = self.pairs[index]
        rgb_path, depth_path = str(self.root / rgb_rel), str(self.root / depth_rel)
        rgb = decode_rgb(rgb_path, self.source, index, rgb_path)
        raw = decode_depth_raw(depth_path, self.source, index, depth_path, self.bits)
        check_same_size(rgb, raw, self.source, index, rgb_path, depth_path)
        depth, valid = raw_to_metres(raw, self.scale, self.invalid, self.max_depth)
        k = None if self.camera is None else self.camera.copy()
        sample = {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": k, "name": rgb_rel}
        return check_sample(sample, self.source, index)


# --- spec options and registration ---------------------------------------------------------------------

def _intrinsics(text: str) -> tuple[float, ...]:
    values = opt_floats(text)
    if len(values) != 4:
        raise ValueError("expected fx,fy,cx,cy (4 numbers, pixels)")
    return values


def _bits(text: str) -> int | None:
    if text not in ("8", "16", "any"):
        raise ValueError("expected 8, 16 or any")
    return None if text == "any" else int(text)


def _index(text: str) -> tuple[int | None, int | None]:
    lo, colon, hi = text.partition(":")
    if not colon:
        raise ValueError("expected LO:HI (frame numbers, HI excluded; either may be empty)")
    try:
        bounds = (int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)
    except ValueError:
        raise ValueError("expected LO:HI with integer frame numbers") from None
    check_frame_range(*bounds)
    return bounds


FOLDER_OPTIONS: dict[str, Callable[[str], Any]] = {
    "rgb": opt_text, "depth": opt_text, "scale": opt_float, "invalid": opt_floats, "max_depth": opt_float,
    "bits": _bits, "intrinsics": _intrinsics, "index": _index,
}


def open_folder(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Folder:
    """The `folder` source (also used by `rgbd` presets): a Folder from parsed FOLDER_OPTIONS."""
    no_split(spec, split, "select frames with index=LO:HI")
    missing = [k for k in ("rgb", "depth") if k not in opts]
    if missing:
        raise DatasetError(spec, f"folder needs {' and '.join(f'{k}=GLOB' for k in missing)}")
    return Folder(path, **opts)


register_source("folder", open_folder, FOLDER_OPTIONS)
