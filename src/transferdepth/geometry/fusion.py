"""Multi-view fusion: posed depth maps (metres) -> a TSDF volume (Open3D) -> a triangle mesh (marching cubes).

`TSDFFusion` wraps Open3D's tensor `VoxelBlockGrid` (a hash of 16^3-voxel blocks allocated only near
surfaces, so memory grows with the surface area seen, not with the room's volume). Open3D is the optional extra `[3d]`
(`open3d-cpu`), imported on first use; without it the error is one line naming the extra.

Conventions: depth in metres (0 or non-finite = no measurement), intrinsics in pixels at the depth map's
size, poses camera-to-world 4x4 (camera x right, y down, z forward; the 7-Scenes / SUN3D convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferdepth.geometry.mesh import ply_bytes
from transferdepth.geometry.points import depth_to_points
from transferdepth.utils import atomic_write

EXTRA_3D = "pip install 'transferdepth[3d]'"


class FusionError(ValueError):
    """Fusion that cannot run (Open3D missing, bad settings, nothing to mesh); one line."""


def open3d() -> Any:
    """The `open3d` module, or FusionError naming the `[3d]` extra."""
    try:
        import open3d as o3d
    except ImportError:
        raise FusionError(f"TSDF fusion needs Open3D (open3d-cpu): {EXTRA_3D}") from None
    return o3d


@dataclass
class Mesh:
    """A triangle mesh: vertices float32 (N, 3) metres, faces int32 (M, 3) vertex indices, colours uint8 (N, 3)
    (or None)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None


def _matrix(intrinsics: np.ndarray | tuple[float, ...]) -> tuple[float, float, float, float]:
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape == (3, 3):
        return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])
    fx, fy, cx, cy = (float(v) for v in k.reshape(-1))
    return fx, fy, cx, cy


class TSDFFusion:
    """A truncated signed distance volume that posed depth maps are integrated into (Open3D's tensor
    `VoxelBlockGrid` on the CPU: blocks of BLOCK^3 voxels allocated where surfaces are seen, the hash map
    growing as needed).

    voxel_m: voxel edge (metres). trunc_m: truncation distance of the signed distance (metres; default
    4 voxels). max_depth_m: depth beyond this is ignored (metres). color: also fuse the RGB colours.
    min_views: marching cubes keeps voxels seen in at least this many frames (Open3D's own default is 3).
    """

    BLOCK = 16  # voxels per block edge
    INITIAL_BLOCKS = 1000  # the hash map's first capacity (80 MB with colour at 16^3); it grows when full

    def __init__(self, voxel_m: float = 0.01, trunc_m: float | None = None, max_depth_m: float = 5.0,
                 color: bool = True, min_views: int = 1):
        if not (np.isfinite(voxel_m) and voxel_m > 0):
            raise FusionError(f"voxel size must be > 0 metres, got {voxel_m}")
        trunc_m = 4.0 * voxel_m if trunc_m is None else trunc_m
        if not (np.isfinite(trunc_m) and trunc_m >= voxel_m):
            raise FusionError(f"truncation must be at least one voxel ({voxel_m} m), got {trunc_m}")
        if min_views < 1:
            raise FusionError(f"min_views must be >= 1 frame, got {min_views}")
        self.min_views = min_views
        if not (np.isfinite(max_depth_m) and max_depth_m > 0):
            raise FusionError(f"maximum depth must be > 0 metres, got {max_depth_m}")
        self.voxel_m, self.trunc_m, self.max_depth_m, self.color = voxel_m, trunc_m, max_depth_m, color
        o3d = open3d()
        f32 = o3d.core.float32
        names, dtypes, channels = ("tsdf", "weight", "color"), (f32, f32, f32), (1, 1, 3)
        n = 3 if color else 2
        self._o3d = o3d
        self._grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=names[:n], attr_dtypes=dtypes[:n], attr_channels=channels[:n], voxel_size=voxel_m,
            block_resolution=self.BLOCK, block_count=self.INITIAL_BLOCKS, device=o3d.core.Device("CPU:0"))
        self.frames = 0

    def integrate(self, depth_m: np.ndarray, rgb: np.ndarray | None, intrinsics: np.ndarray | tuple[float, ...],
                  cam_to_world: np.ndarray) -> None:
        """Add one view: depth HxW metres (0 / non-finite = none), rgb uint8 HxWx3 (None: grey), intrinsics
        3x3 or (fx, fy, cx, cy) pixels, cam_to_world 4x4."""
        o3d, core = self._o3d, self._o3d.core
        depth = np.array(depth_m, dtype=np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        h, w = depth.shape
        if rgb is not None and rgb.shape[:2] != (h, w):
            raise FusionError(f"colour image {rgb.shape[1]}x{rgb.shape[0]} and depth {w}x{h} differ in size")
        self.frames += 1
        if not ((depth > 0) & (depth <= self.max_depth_m)).any():
            return  # nothing within range in this view (Open3D would refuse it)
        fx, fy, cx, cy = _matrix(intrinsics)
        k = core.Tensor(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64))
        extrinsic = core.Tensor(np.linalg.inv(np.asarray(cam_to_world, dtype=np.float64)))
        image = o3d.t.geometry.Image(core.Tensor(depth))
        mult = self.trunc_m / self.voxel_m
        blocks = self._grid.compute_unique_block_coordinates(image, k, extrinsic, 1.0, self.max_depth_m, mult)
        if self.color:
            colour = np.full((h, w, 3), 0.5, np.float32) if rgb is None else rgb.astype(np.float32) / 255.0
            self._grid.integrate(blocks, image, o3d.t.geometry.Image(core.Tensor(colour)), k, extrinsic, 1.0,
                                 self.max_depth_m, mult)
        else:
            self._grid.integrate(blocks, image, k, extrinsic, 1.0, self.max_depth_m, mult)

    def blocks(self) -> int:
        """Voxel blocks allocated so far (each BLOCK^3 voxels)."""
        return int(self._grid.hashmap().size())

    def mesh(self) -> Mesh:
        """Marching cubes over the volume: the zero crossing of the signed distance as a triangle mesh."""
        if self.blocks() == 0:
            return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), None)
        m = self._grid.extract_triangle_mesh(weight_threshold=float(self.min_views) - 0.5)
        vertices = m.vertex.positions.numpy().astype(np.float32)
        faces = m.triangle.indices.numpy().astype(np.int32) if "indices" in m.triangle else np.zeros((0, 3), np.int32)
        colors = None
        if self.color and "colors" in m.vertex:
            colors = np.clip(m.vertex.colors.numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Mesh(vertices, faces, colors)


def world_points(depth_m: np.ndarray, intrinsics: np.ndarray | tuple[float, ...], cam_to_world: np.ndarray,
                 stride: int = 1) -> np.ndarray:
    """Back-project every `stride`-th pixel with depth > 0 (metres) and move it to the world frame:
    float64 (N, 3) metres."""
    xyz, _ = depth_to_points(depth_m, np.zeros((*depth_m.shape, 3), np.uint8), _matrix(intrinsics), stride)
    pose = np.asarray(cam_to_world, dtype=np.float64)
    return xyz.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]


def write_mesh_ply(path: str | Path, mesh: Mesh, comment: str = "") -> None:
    """Binary little-endian PLY (geometry.mesh.ply_bytes: float x, y, z in metres, uchar colours if any),
    written atomically; `comment`: header lines."""
    data = ply_bytes(mesh.vertices, mesh.faces, mesh.colors, comment)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(data)
