"""An RGB-D sequence with camera poses, in the 7-Scenes / SUN3D (3DMatch) layout, for multi-view fusion.

A folder holds, per frame, `frame-NNNNNN.color.jpg` (or `.color.png`), `frame-NNNNNN.depth.png` (uint16
millimetres; `invalid` raw values such as 0 and 65535 are holes) and `frame-NNNNNN.pose.txt` (a 4x4
camera-to-world rigid transform, metres; camera axes x right, y down, z forward), plus one
`camera-intrinsics.txt` (3x3 matrix in pixels) for the whole sequence. Frames are ordered by their number.

Everything is checked when the sequence is opened, before any work: a missing intrinsics, depth or pose file
is one line naming the first one missing; a pose that is not a rigid transform (non-finite, last row not
0 0 0 1, rotation not orthonormal within POSE_TOL or a reflection) is one line naming its frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferdepth.data.base import DatasetError
from transferdepth.data.folder import INTRINSICS_FILE, check_frame_range, frame_number, natural_key
from transferdepth.data.io import check_same_size, decode_depth_raw, decode_rgb, raw_to_metres

COLOR_SUFFIXES = (".color.jpg", ".color.png")
DEPTH_SUFFIX = ".depth.png"
POSE_SUFFIX = ".pose.txt"
POSE_TOL = 1e-2  # max |R^T R - I| of a pose's rotation (7-Scenes' poses: 4e-4, SUN3D's: 7e-6)


@dataclass(frozen=True)
class SequenceFrame:
    """One frame's files (absolute paths) and its camera-to-world pose (4x4 float64, metres)."""

    name: str
    color: Path
    depth: Path
    pose: np.ndarray


def read_pose(path: Path, source: str) -> np.ndarray:
    """A 4x4 camera-to-world rigid transform from a text file; DatasetError (one line naming the file) else."""
    try:
        pose = np.loadtxt(path, dtype=np.float64)
    except (ValueError, OSError) as e:
        raise DatasetError(source, f"cannot read a 4x4 pose: {e}", path=str(path)) from None
    if pose.shape != (4, 4):
        raise DatasetError(source, f"pose must be a 4x4 matrix, got shape {pose.shape}", path=str(path))
    why = rigid_problem(pose)
    if why:
        raise DatasetError(source, f"pose is not a rigid camera-to-world transform: {why}", path=str(path))
    return pose


def rigid_problem(pose: np.ndarray) -> str | None:
    """Why a 4x4 matrix is not a rigid transform (rotation + translation), or None when it is one."""
    if not np.isfinite(pose).all():
        return "holds NaN or infinite values"
    if np.abs(pose[3] - (0.0, 0.0, 0.0, 1.0)).max() > 1e-6:
        return f"last row is {pose[3].tolist()}, expected [0, 0, 0, 1]"
    r = pose[:3, :3]
    err = float(np.abs(r.T @ r - np.eye(3)).max())
    if err > POSE_TOL:
        return f"rotation is not orthonormal (max |R^T R - I| = {err:.3g} > {POSE_TOL:g})"
    if np.linalg.det(r) < 0:
        return "rotation is a reflection (det < 0)"
    return None


def read_intrinsics(root: Path, source: str) -> np.ndarray:
    """The 3x3 camera matrix in `root/camera-intrinsics.txt` (pixels); DatasetError naming the file else."""
    file = root / INTRINSICS_FILE
    if not file.is_file():
        raise DatasetError(source, f"missing {INTRINSICS_FILE} (a 3x3 camera matrix in pixels)", path=str(file))
    try:
        k = np.loadtxt(file, dtype=np.float64)
    except ValueError as e:
        raise DatasetError(source, f"cannot parse a 3x3 matrix: {e}", path=str(file)) from None
    if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DatasetError(source, "expected a finite 3x3 camera matrix with positive focal lengths",
                           path=str(file))
    return k


class RGBDSequence:
    """The frames of a posed RGB-D folder; `frame(i)` reads one (rgb, depth metres, valid, pose, intrinsics).

    root: the folder. index: (lo, hi) frame numbers kept, lo included, hi excluded (None = open end).
    every: keep every n-th of those. max_frames: at most this many (after `every`). scale: metres per raw
    depth unit. invalid: raw values that are holes. max_depth: farther pixels are invalid (metres).
    """

    def __init__(self, root: str | Path, index: tuple[int | None, int | None] | None = None, every: int = 1,
                 max_frames: int | None = None, scale: float = 0.001, invalid: tuple[int, ...] = (0, 65535),
                 max_depth: float | None = None):
        self.root = Path(root)
        self.source = f"sequence:{self.root}"
        if not self.root.is_dir():
            raise DatasetError(self.source, "sequence folder not found", path=str(self.root))
        if every < 1 or (max_frames is not None and max_frames < 1):
            raise DatasetError(self.source, f"every and max_frames must be >= 1, got {every}, {max_frames}")
        self.scale, self.invalid, self.max_depth = scale, tuple(invalid), max_depth
        self.intrinsics = read_intrinsics(self.root, self.source)
        names = self._names(index)[::every][:max_frames]
        self.frames = [self._frame(name) for name in names]

    def _names(self, index: tuple[int | None, int | None] | None) -> list[tuple[str, Path]]:
        found = {}
        for suffix in COLOR_SUFFIXES:
            for p in self.root.glob(f"frame-*{suffix}"):
                found.setdefault(p.name[: -len(suffix)], p)
        if not found:
            raise DatasetError(self.source, "no frame-*.color.jpg or frame-*.color.png files", path=str(self.root))
        lo, hi = index or (None, None)
        try:
            check_frame_range(lo, hi)
        except ValueError as e:
            raise DatasetError(self.source, f"index: {e}") from None
        def inside(name: str) -> bool:
            n = frame_number(name)
            return lo is None and hi is None or n is not None and (lo is None or n >= lo) and (hi is None or n < hi)

        kept = [(n, p) for n, p in sorted(found.items(), key=lambda kv: natural_key(kv[0])) if inside(n)]
        if not kept:
            raise DatasetError(self.source, f"no frames numbered in [{lo}, {hi}) (of {len(found)})",
                               path=str(self.root))
        return kept

    def _frame(self, name_color: tuple[str, Path]) -> SequenceFrame:
        name, color = name_color
        depth, pose = self.root / f"{name}{DEPTH_SUFFIX}", self.root / f"{name}{POSE_SUFFIX}"
        for need, what in ((depth, "depth image (uint16 millimetres)"), (pose, "pose (4x4 camera-to-world)")):
            if not need.is_file():
                raise DatasetError(self.source, f"missing {need.name}, the {what} of frame {name}", path=str(need))
        return SequenceFrame(name, color, depth, read_pose(pose, self.source))

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> dict[str, Any]:
        """Frame i: rgb uint8 HxWx3, depth float32 HxW metres (0 at holes), valid bool HxW, pose 4x4
        camera-to-world, intrinsics 3x3 pixels, name."""
        f = self.frames[i]
        rgb = decode_rgb(str(f.color), self.source, i, str(f.color))
        raw = decode_depth_raw(str(f.depth), self.source, i, str(f.depth), 16)
        check_same_size(rgb, raw, self.source, i, str(f.color), str(f.depth))
        depth, valid = raw_to_metres(raw, self.scale, self.invalid, self.max_depth)
        return {"rgb": rgb, "depth": depth, "valid": valid, "pose": f.pose, "intrinsics": self.intrinsics.copy(),
                "name": f.name}
