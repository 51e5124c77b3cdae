"""DenseDepth's `nyu_test.zip`: the 654 Eigen test images as .npy arrays, read without copying them into RAM.

Members: `eigen_test_rgb.npy` (N,480,640,3 uint8), `eigen_test_depth.npy` (N,480,640 float, metres) and
`eigen_test_crop.npy` (4 ints: top, bottom, left, right of the Eigen evaluation crop), exposed as `crop`.
Members stored uncompressed are memory-mapped straight out of the zip file; deflated members are streamed,
one sample at a time, by seeking inside the member (fast in order, slow for random access: extract or
re-zip with `zip -0` for that). PATH may also be a folder holding the three .npy files (memory-mapped).
Valid pixels: depth in (0, 10] m. Intrinsics: NYU Kinect defaults.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from torch.utils.data import Dataset

from transferdepth.data.base import DatasetError, Sample, check_sample, normalize_index
from transferdepth.data.handles import PerProcess
from transferdepth.data.io import metres_valid
from transferdepth.data.nyu_zip import ZIP_READ_ERRORS
from transferdepth.data.registry import register_source
from transferdepth.recipe import MAX_DEPTH_M, nyu_intrinsics

RGB, DEPTH, CROP = "eigen_test_rgb.npy", "eigen_test_depth.npy", "eigen_test_crop.npy"
MAX_CROP_BYTES = 4096  # the crop member holds 4 ints: anything bigger is not a crop


@dataclass(frozen=True)
class _NpyMember:
    name: str  # member name in the zip, or file path for a folder
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_offset: int  # byte offset of the array data: in the zip file if stored, else inside the member
    stored: bool  # True: uncompressed member (or plain file), memory-mappable


def _read_npy_header(f: BinaryIO, source: str, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as e:
        raise DatasetError(source, f"not a readable .npy array: {e}", path=name) from e
    if dtype.hasobject:
        raise DatasetError(source, "object arrays are not supported", path=name)
    return shape, dtype, fortran


def _check_size(source: str, name: str, size: int, header_len: int, shape: tuple[int, ...],
                dtype: np.dtype) -> None:
    """The member (or file) must hold exactly header + prod(shape) * itemsize bytes: a truncated array
    would otherwise be read past its end (for a stored zip member: into the next member's bytes)."""
    want = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != want:
        what = "truncated" if size < want else "has trailing bytes"
        raise DatasetError(source, f"array {what}: the header promises shape {shape} of {dtype} "
                           f"({want} bytes with the header) but it holds {size} bytes", path=name)


def _find(names: list[str], base: str) -> str | None:
    hits = [n for n in names if n == base or n.endswith("/" + base)]
    return min(hits, key=len) if hits else None


class NyuNpy(Dataset):
    """The Eigen NYU test set from DenseDepth's nyu_test.zip (or a folder of its three .npy files)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.source = f"nyu-npy:{self.path}"
        self._handles: PerProcess[dict[str, Any]] = PerProcess(dict)  # zip handle, memmaps, member streams
        self._is_dir = self.path.is_dir()
        if self._is_dir:
            self.members = {k: self._file_member(k) for k in (RGB, DEPTH)}
            crop_file = self.path / CROP
            crop = np.load(crop_file) if crop_file.exists() else None
        else:
            self.members, crop = self._zip_members()
        self.crop: tuple[int, int, int, int] | None = None
        if crop is not None:
            crop = np.asarray(crop).ravel()
            if crop.size != 4:
                raise DatasetError(self.source, f"expected 4 crop ints, got shape {crop.shape}", path=CROP)
            self.crop = tuple(int(c) for c in crop)  # type: ignore[assignment]
        self._check_shapes()

    def _file_member(self, base: str) -> _NpyMember:
        file = self.path / base
        if not file.exists():
            raise DatasetError(self.source, f"missing {base} in the folder", path=str(file))
        with open(file, "rb") as f:
            shape, dtype, fortran = _read_npy_header(f, self.source, str(file))
            header_len = f.tell()
        _check_size(self.source, str(file), file.stat().st_size, header_len, shape, dtype)
        return _NpyMember(str(file), shape, dtype, fortran, header_len, True)

    def _zip_members(self) -> tuple[dict[str, _NpyMember], np.ndarray | None]:
        try:
            zf = zipfile.ZipFile(self.path)
        except FileNotFoundError as e:
            raise DatasetError(self.source, "file not found", path=str(self.path)) from e
        except zipfile.BadZipFile as e:
            raise DatasetError(self.source, f"not a zip file: {e}", path=str(self.path)) from e
        with zf:
            names = zf.namelist()
            found = {base: _find(names, base) for base in (RGB, DEPTH)}
            for base, name in found.items():
                if name is None:
                    raise DatasetError(self.source, f"member {base} missing from the zip "
                                       "(expected DenseDepth's nyu_test.zip)", path=str(self.path))
            members = {base: self._zip_member(zf, zf.getinfo(name)) for base, name in found.items()}
            crop_name = _find(names, CROP)
            crop = None
            if crop_name:
                if zf.getinfo(crop_name).file_size > MAX_CROP_BYTES:
                    raise DatasetError(self.source, f"crop member is {zf.getinfo(crop_name).file_size} bytes; "
                                       "expected 4 ints", path=crop_name)
                try:
                    crop = np.load(io.BytesIO(zf.read(crop_name)))
                except (ValueError, EOFError, *ZIP_READ_ERRORS) as e:
                    raise DatasetError(self.source, f"not a readable .npy array: {e}", path=crop_name) from e
        return members, crop

    def _zip_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _NpyMember:
        stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
        try:
            with zf.open(info) as f:
                shape, dtype, fortran = _read_npy_header(f, self.source, info.filename)
                header_len = f.tell()
        except ZIP_READ_ERRORS as e:
            raise DatasetError(self.source, f"cannot read member: {type(e).__name__}: {e}",
                               path=info.filename) from e
        _check_size(self.source, info.filename, info.file_size, header_len, shape, dtype)
        if not stored:
            if fortran:
                raise DatasetError(self.source, "Fortran-ordered arrays must be stored uncompressed",
                                   path=info.filename)
            return _NpyMember(info.filename, shape, dtype, fortran, header_len, False)
        with open(self.path, "rb") as f:  # member data start = local header + name + extra field
            f.seek(info.header_offset)
            local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DatasetError(self.source, "corrupt local zip header", path=info.filename)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        return _NpyMember(info.filename, shape, dtype, fortran, start + header_len, True)

    def _check_shapes(self) -> None:
        rgb, depth = self.members[RGB], self.members[DEPTH]
        if len(rgb.shape) != 4 or rgb.shape[3] != 3 or rgb.dtype != np.uint8:
            raise DatasetError(self.source, f"expected rgb uint8 (N,H,W,3), got {rgb.dtype} {rgb.shape}",
                               path=rgb.name)
        if depth.shape != rgb.shape[:3] or depth.dtype.kind != "f":
            raise DatasetError(self.source, f"expected depth float (N,H,W) = {rgb.shape[:3]} in metres, "
                               f"got {depth.dtype} {depth.shape}", path=depth.name)
        if rgb.shape[0] == 0:
            raise DatasetError(self.source, "no samples: the arrays are empty", path=rgb.name)

    @property
    def _cache(self) -> dict[str, Any]:
        """This process's handles: the zip, memmaps and open member streams (empty in a new process)."""
        return self._handles.get()

    def _read(self, key: str, index: int) -> np.ndarray:
        """One sample of member `key` as an in-RAM array (a copy of just that sample)."""
        m, cache = self.members[key], self._cache
        if m.stored:
            if key not in cache:
                file = m.name if self._is_dir else self.path
                order = "F" if m.fortran else "C"
                try:
                    cache[key] = np.memmap(file, m.dtype, "r", m.data_offset, m.shape, order)
                except (ValueError, OSError) as e:  # file shorter than the header promises
                    raise DatasetError(self.source, f"cannot map the array: {e}", index, m.name) from e
            return np.array(cache[key][index])
        if "zip" not in cache:
            cache["zip"] = zipfile.ZipFile(self.path)
        if key not in cache:
            cache[key] = cache["zip"].open(m.name)
        f = cache[key]
        nbytes = m.dtype.itemsize * int(np.prod(m.shape[1:]))
        try:
            f.seek(m.data_offset + index * nbytes)  # forward: decompresses up to there; backward: rewinds
            buf = f.read(nbytes)
        except ZIP_READ_ERRORS as e:
            raise DatasetError(self.source, f"cannot read member: {type(e).__name__}: {e}", index, m.name) from e
        if len(buf) != nbytes:
            raise DatasetError(self.source, f"member truncated: wanted {nbytes} bytes, got {len(buf)}",
                               index, m.name)
        return np.frombuffer(buf, m.dtype).reshape(m.shape[1:]).copy()

    def __len__(self) -> int:
        return self.members[RGB].shape[0]

    def __getitem__(self, index: int) -> Sample:
        index = normalize_index(index, len(self), self.source)
        rgb = self._read(RGB, index)
        depth, valid = metres_valid(self._read(DEPTH, index), MAX_DEPTH_M)
        h, w = depth.shape
        sample = {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": nyu_intrinsics(h, w),
                  "name": f"eigen_test_{index:04d}"}
        return check_sample(sample, self.source, index)


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Dataset:
    if split not in (None, "test"):
        raise DatasetError(spec, f"nyu-npy holds only the Eigen test split, not {split!r}")
    return NyuNpy(path)


register_source("nyu-npy", _open)
