"""The official NYU Depth V2 labelled set: `nyu_depth_v2_labeled.mat` (MATLAB v7.3 = HDF5) + `splits.mat`.

MATLAB stores `images` as HxWx3xN and `depths` as HxWxN (metres) in column-major order, so h5py sees them
reversed: images (N,3,W,H) uint8 and depths (N,W,H). This reader transposes them back, so samples come out
upright and not mirrored. `splits.mat` holds 1-based `trainNdxs` (795) and `testNdxs` (654). Depths are the
in-painted maps; valid pixels: depth in (0, 10] m. Intrinsics: NYU Kinect defaults.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, Sample, check_sample, normalize_index
from transferdepth.data.handles import PerProcess
from transferdepth.data.io import metres_valid
from transferdepth.data.registry import opt_text, register_source
from transferdepth.recipe import MAX_DEPTH_M, nyu_intrinsics

SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}


def read_split_indices(path: str | Path, split: str, source: str) -> np.ndarray:
    """1-based MATLAB indices of `split` from splits.mat (MATLAB v5 via scipy, or v7.3 via h5py)."""
    key, path = SPLIT_KEYS[split], Path(path)
    if not path.exists():
        raise DatasetError(source, f"splits file not found (needed for split={split}; pass splits=PATH "
                           "or use split=all)", path=str(path))
    arrays: dict[str, Any] | None = None
    try:
        import scipy.io

        arrays = scipy.io.loadmat(str(path), variable_names=[key])
    except ImportError:
        pass
    except (NotImplementedError, ValueError):  # a v7.3 file: scipy says "use HDF reader"
        pass
    if arrays is None or key not in arrays:
        try:
            with h5py.File(path, "r") as f:
                arrays = {key: f[key][()]} if key in f else {}
        except OSError as e:
            raise DatasetError(source, f"cannot read splits file (expected MATLAB .mat with {key}): {e}",
                               path=str(path)) from e
    if key not in arrays:
        raise DatasetError(source, f"splits file has no variable {key}", path=str(path))
    return np.asarray(arrays[key]).astype(np.int64).ravel()


class NyuMat(Dataset):
    """Samples of the 1449 labelled NYU images (split=all) or its 795/654 train/test split."""

    def __init__(self, path: str | Path, split: str = "test", splits: str | Path | None = None):
        self.path, self.split = Path(path), split
        self.source = f"nyu-mat:{self.path} ({split})"
        if split not in (*SPLIT_KEYS, "all"):
            raise DatasetError(self.source, f"unknown split {split!r}; expected train, test or all")
        self._handle: PerProcess[h5py.File] = PerProcess(functools.partial(h5py.File, self.path, "r"))
        try:
            n = self._check_file()
        finally:  # reopened lazily, per process (an HDF5 handle must not cross a fork)
            self._handle.close()
        if split == "all":
            self.indices = np.arange(1, n + 1)
        else:
            self.splits_path = Path(splits) if splits else self.path.parent / "splits.mat"
            self.indices = read_split_indices(self.splits_path, split, self.source)
            bad = self.indices[(self.indices < 1) | (self.indices > n)]
            if bad.size:
                raise DatasetError(self.source, f"split indices must be 1-based in [1, {n}], got {bad[:5]}",
                                   path=str(self.splits_path))
        if len(self.indices) == 0:
            raise DatasetError(self.source, "no samples in this split", path=str(self.path))

    def _check_file(self) -> int:
        f = self._file()
        for name in ("images", "depths"):
            if name not in f:
                raise DatasetError(self.source, f"no dataset {name!r} (expected the labelled NYU .mat)",
                                   path=str(self.path))
        images, depths = f["images"], f["depths"]
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise DatasetError(self.source, "images must be uint8 (N,3,W,H) in h5py (MATLAB HxWx3xN), got "
                               f"{images.dtype} {images.shape}", path=str(self.path))
        if depths.shape != (images.shape[0], *images.shape[2:]):
            raise DatasetError(self.source, f"depths must be (N,W,H) = {(images.shape[0], *images.shape[2:])}"
                               f" in h5py, got {depths.shape}", path=str(self.path))
        return images.shape[0]

    def _file(self) -> h5py.File:
        try:
            return self._handle.get()
        except FileNotFoundError as e:
            raise DatasetError(self.source, "file not found", path=str(self.path)) from e
        except OSError as e:
            raise DatasetError(self.source, f"not an HDF5 (MATLAB v7.3) file: {e}", path=str(self.path)) from e

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        index = normalize_index(index, len(self), self.source)
        ndx = int(self.indices[index])  # 1-based MATLAB index
        f = self._file()
        try:
            rgb = np.ascontiguousarray(f["images"][ndx - 1].transpose(2, 1, 0))  # (3,W,H) -> (H,W,3)
            depth, valid = metres_valid(f["depths"][ndx - 1].T, MAX_DEPTH_M)  # (W,H) -> (H,W)
        except (OSError, KeyError, ValueError, RuntimeError) as e:  # h5py: corrupt chunks, filters
            raise DatasetError(self.source, f"cannot read image {ndx}: {type(e).__name__}: {e}", index,
                               str(self.path)) from e
        h, w = depth.shape
        sample = {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": nyu_intrinsics(h, w),
                  "name": f"labeled_{ndx:04d}"}
        return check_sample(sample, self.source, index)


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    return NyuMat(path, split or "test", opts.get("splits"))


register_source("nyu-mat", _open, {"split": opt_text, "splits": opt_text})
