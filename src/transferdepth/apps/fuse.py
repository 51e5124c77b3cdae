"""`transferdepth fuse`: the frames of a posed RGB-D sequence -> depth per frame -> one TSDF -> one mesh.

Depth per frame comes from a model (any `predict_rgb(list of uint8 HxWx3) -> list of HxW metres`, e.g.
`DepthEstimator`), the sensor (`depth="gt"`), or a constant (`ConstantDepth`, a baseline). Each predicted
map may be scaled to the sensor's depth of the same frame (`align`): `median-gt` by median(gt) / median(pred),
`scale-gt` by the least-squares factor sum(pred gt) / sum(pred^2), both over the frame's valid sensor pixels;
a frame without valid sensor pixels is then left out (counted). Poses and intrinsics are the sequence's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transferdepth.data.sequence import RGBDSequence
from transferdepth.geometry.fusion import Mesh, TSDFFusion, write_mesh_ply
from transferdepth.utils import progress

ALIGNS = ("none", "median-gt", "scale-gt")


class Predictor(Protocol):
    def predict_rgb(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class ConstantDepth:
    """A baseline predictor: the same depth (metres) at every pixel of every frame."""

    def __init__(self, metres: float):
        if not (np.isfinite(metres) and metres > 0):
            raise ValueError(f"constant depth must be > 0 metres, got {metres}")
        self.metres = float(metres)

    def predict_rgb(self, rgbs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.full(rgb.shape[:2], self.metres, np.float32) for rgb in rgbs]


def align_scale(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, mode: str) -> float | None:
    """The factor a predicted depth map (metres) is multiplied by under `mode` (one of ALIGNS), from the
    sensor's depth `gt` at `valid` pixels; None when the frame has no valid pixel to align with."""
    if mode == "none":
        return 1.0
    ok = valid & np.isfinite(pred) & (pred > 0)
    if not ok.any():
        return None
    p, g = pred[ok].astype(np.float64), gt[ok].astype(np.float64)
    if mode == "median-gt":
        return float(np.median(g) / np.median(p))
    if mode == "scale-gt":
        return float((p * g).sum() / (p * p).sum())
    raise ValueError(f"align: expected one of {', '.join(ALIGNS)}, got {mode!r}")


@dataclass
class FuseSettings:
    """voxel_m, trunc_m (None: 4 voxels), max_depth_m (metres) of the TSDF; align: one of ALIGNS."""

    voxel_m: float = 0.01
    trunc_m: float | None = None
    max_depth_m: float = 5.0
    align: str = "none"

    def __post_init__(self) -> None:
        if self.align not in ALIGNS:
            raise ValueError(f"--align: expected one of {', '.join(ALIGNS)}, got {self.align!r}")


@dataclass
class FuseResult:
    """The mesh, each fused frame's alignment factor (1.0 without alignment), frames left out, what was done."""

    mesh: Mesh
    scales: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: frames, depth source, alignment (with the median factor), the mesh's size."""
        s = self.info
        line = f"fused {len(self.scales)} frames of {s['sequence']} (depth: {s['depth']}; align: {s['align']}"
        if s["align"] in ALIGNS[1:] and self.scales:
            q = np.percentile(self.scales, [0, 50, 100])
            line += f", scale median {q[1]:.3f}, range {q[0]:.3f}-{q[2]:.3f}"
        line += f"; voxel {s['voxel_m'] * 100:g} cm)"
        if self.skipped:
            line += f"; {len(self.skipped)} frames left out without valid sensor depth ({self.skipped[0]}, ...)"
        return line + f": {len(self.mesh.vertices)} vertices, {len(self.mesh.faces)} triangles"


def fuse_sequence(seq: RGBDSequence, predictor: Predictor | None, settings: FuseSettings | None = None,
                  depth_name: str = "gt", desc: str = "fusing") -> FuseResult:
    """Fuse every frame of `seq`: depth from `predictor` (None: the sensor's), aligned per `settings.align`,
    into one TSDF; returns the mesh (metres, world frame of the poses) and what was done."""
    settings = settings or FuseSettings()
    if predictor is None and settings.align != "none":
        raise ValueError(f"--align {settings.align}: aligns predicted depth to the sensor's; with --depth gt use "
                         "--align none")
    fusion = TSDFFusion(settings.voxel_m, settings.trunc_m, settings.max_depth_m)
    result = FuseResult(Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)))
    for i in progress(range(len(seq)), desc=desc, unit="frame"):
        frame = seq.frame(i)
        depth = frame["depth"] if predictor is None else predictor.predict_rgb([frame["rgb"]])[0]
        scale = 1.0 if predictor is None else align_scale(depth, frame["depth"], frame["valid"], settings.align)
        if scale is None:
            result.skipped.append(frame["name"])
            continue
        fusion.integrate(depth * scale, frame["rgb"], frame["intrinsics"], frame["pose"])
        result.scales.append(scale)
    result.mesh = fusion.mesh()
    result.info = {"sequence": str(seq.root), "frames": len(result.scales), "depth": depth_name,
                   "align": settings.align if predictor is not None else "none (sensor depth)",
                   "voxel_m": settings.voxel_m, "trunc_m": fusion.trunc_m, "max_depth_m": settings.max_depth_m,
                   "first_frame": seq.frames[0].name, "last_frame": seq.frames[-1].name}
    return result


def write_result(path: str | Path, result: FuseResult) -> None:
    """The mesh as a binary PLY (atomically), what was done in its header comments."""
    if len(result.mesh.faces) == 0:
        raise ValueError(f"{path}: nothing to write: the fused model has no surface (no depth within "
                         f"{result.info.get('max_depth_m')} m in any frame?)")
    comment = "\n".join(f"transferdepth fuse {k} {v}" for k, v in result.info.items())
    write_mesh_ply(path, result.mesh, comment)
