"""Meshes from one depth map: the pixel grid triangulated in metres, coloured with the photo.

Every `stride`-th pixel (u, v) with a valid depth d (finite, > 0) is a vertex, back-projected by
`geometry.points.depth_to_points`: x = (u - cx) d / fx, y = (v - cy) d / fy, z = d. Each grid square of four neighbouring
samples gives two triangles, (u,v) (u,v+1) (u+1,v) and (u+1,v) (u,v+1) (u+1,v+1), counter-clockwise as
seen from the camera (their normals face it). A triangle is dropped when one of its corners has no valid
depth, or when it spans a depth discontinuity: its farthest corner is more than `max_jump` (relative,
default DEFAULT_MAX_JUMP = 0.05, 5 %) farther than its nearest, `max(d) > (1 + max_jump) min(d)`. Vertices
no triangle uses are left out.

Axes of the files (metres everywhere):

- GLB: glTF's convention, y up, the camera looking down -z: a vertex is (x, -y, -z) of the camera frame
  (a 180 degree rotation about x, so windings and normals keep their sense). Textured with the photo
  (PNG, full resolution; glTF's base colour texture is sRGB) and marked unlit (KHR_materials_unlit), so
  viewers show the photo's colours without shading.
- OBJ: the same y-up axes as GLB (what Blender's and most viewers' OBJ import expects); vertex colours
  as `v x y z r g b` (0-1).
- `_mesh.ply`: the camera frame (x right, y down, z forward), like the point cloud `.ply`, so the two
  overlay; uchar vertex colours; the frame and the intrinsics in `comment` lines.

Writers need trimesh (extra `3d`); each file is written atomically.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from transferdepth.geometry.points import depth_to_points
from transferdepth.utils import atomic_write

DEFAULT_MAX_JUMP = 0.05  # relative depth jump inside a triangle above which it is dropped (5 %)
MAX_JUMP_RANGE = (1e-6, 1e6)
PNG_LEVEL = 1  # zlib level of the GLB's PNG texture
MESH_FORMATS = ("glb", "obj", "mesh.ply")
GLTF_FROM_CAMERA = np.array([1.0, -1.0, -1.0], dtype=np.float32)  # camera frame -> glTF (y up, -z forward)
_Y_UP = "metres, y up: x right, y up, z backward (the camera at the origin looks down -z)"
AXES = {"glb": _Y_UP, "obj": _Y_UP, "mesh.ply": "camera frame, metres: x right, y down, z forward"}


@dataclass(frozen=True)
class GridMesh:
    """A triangulated depth map in the camera frame (x right, y down, z forward), metres.

    vertices float32 (N,3); faces int64 (F,3) into vertices, counter-clockwise seen from the camera;
    colors uint8 (N,3) from the photo; pixels float32 (N,2): each vertex's (u, v) in the image (column,
    row); size (W, H) of the image.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    pixels: np.ndarray
    size: tuple[int, int]


class MeshError(ValueError):
    """A mesh that cannot be made or written (bad option, missing trimesh); `str()` says what to change."""


def check_max_jump(value: float, what: str = "--mesh-max-jump") -> float:
    """A relative jump in MAX_JUMP_RANGE (0.05 = 5 %); MeshError naming `what` otherwise."""
    lo, hi = MAX_JUMP_RANGE
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not lo <= v <= hi:  # NaN fails too
        raise MeshError(f"{what}: need a relative depth jump between {lo:g} and {hi:g} (e.g. 0.05 = 5 %), "
                        f"got {value}")
    return v


def depth_to_mesh(depth_m: np.ndarray, rgb: np.ndarray, intrinsics: tuple[float, ...],
                  max_jump: float = DEFAULT_MAX_JUMP, stride: int = 1) -> GridMesh:
    """Triangulate every `stride`-th pixel of an (H,W) depth map in metres with (H,W,3) uint8 colours and
    (fx, fy, cx, cy) pixels; triangles across a relative depth jump over `max_jump` are dropped."""
    max_jump = check_max_jump(max_jump, "max_jump")
    h, w = depth_m.shape
    sampled = np.asarray(depth_m)[::stride, ::stride]
    valid = np.isfinite(sampled) & (sampled > 0)  # the samples depth_to_points keeps, in the same order
    z = np.where(valid, sampled, np.nan).astype(np.float32)
    gh, gw = z.shape
    idx = np.arange(gh * gw, dtype=np.int64).reshape(gh, gw)
    corners = (idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:], idx[1:, 1:])  # (u,v) (u,v+1) (u+1,v) (u+1,v+1)
    z00, z01, z10, z11 = (z[:-1, :-1], z[1:, :-1], z[:-1, 1:], z[1:, 1:])
    limit = np.float32(1.0 + max_jump)
    faces = []
    for (a, b, c), (za, zb, zc) in (((0, 1, 2), (z00, z01, z10)), ((2, 1, 3), (z10, z01, z11))):
        hi = np.maximum(np.maximum(za, zb), zc)
        lo = np.minimum(np.minimum(za, zb), zc)
        keep = hi <= lo * limit  # NaN (no depth) compares False: dropped
        faces.append(np.stack([corners[a][keep], corners[b][keep], corners[c][keep]], axis=1))
    faces_all = np.concatenate(faces)
    used = np.zeros(gh * gw, dtype=bool)
    used[faces_all.ravel()] = True
    remap = np.cumsum(used) - 1
    flat = np.flatnonzero(used)
    xyz, colors = depth_to_points(depth_m, np.asarray(rgb)[..., :3], intrinsics, stride)
    sample = (np.cumsum(valid.ravel()) - 1)[flat]  # grid sample -> its row in depth_to_points' output
    uv = np.stack([flat % gw, flat // gw], axis=1) * stride
    return GridMesh(xyz[sample], remap[faces_all], colors[sample], uv.astype(np.float32), (w, h))


def to_gltf_axes(vertices: np.ndarray) -> np.ndarray:
    """Camera frame (x right, y down, z forward) -> glTF / OBJ (y up, -z forward): (x, -y, -z)."""
    return (np.asarray(vertices, dtype=np.float32) * GLTF_FROM_CAMERA).astype(np.float32)


def _trimesh():
    try:
        import trimesh
    except ImportError:
        raise MeshError("meshes (--format glb, obj, mesh.ply) need trimesh: pip install 'transferdepth[3d]'") from None
    return trimesh


def mesh_bytes(mesh: GridMesh, fmt: str, texture: np.ndarray | None = None, comment: str = "",
               ascii: bool = False) -> bytes:
    """The file contents of `mesh` as `fmt` in MESH_FORMATS (axes in the module docstring).

    texture: the (H,W,3) uint8 photo for the GLB's texture (None: the vertex colours); comment: lines for
    the file's header (OBJ `#`, PLY `comment`, GLB `asset.extras.comment`), after the line AXES[fmt];
    ascii: an ASCII PLY (default binary little-endian). MeshError for a mesh without triangles."""
    if not len(mesh.faces):
        raise MeshError("no mesh to write: no 2x2 neighbouring pixels with valid depths within --mesh-max-jump "
                        "of each other")
    trimesh = _trimesh()
    comment = AXES.get(fmt, "") + ("\n" + comment if comment else "")
    if fmt == "glb":
        return _glb(trimesh, mesh, texture, comment)
    if fmt not in ("obj", "mesh.ply"):
        raise MeshError(f"unknown mesh format '{fmt}'; choose from {', '.join(MESH_FORMATS)}")
    ply = fmt == "mesh.ply"
    tm = trimesh.Trimesh(mesh.vertices if ply else to_gltf_axes(mesh.vertices), mesh.faces,
                         vertex_colors=mesh.colors, process=False, validate=False)
    if not ply:
        header = "\n# ".join(c for c in comment.splitlines() if c)
        return trimesh.exchange.obj.export_obj(tm, include_normals=False, include_texture=False, digits=6,
                                               header=header or None).encode("utf-8")
    return _ply(trimesh, tm, comment, ascii)


def ply_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, comment: str = "",
              ascii: bool = False) -> bytes:
    """A PLY file of any triangle mesh, as given (no axis change): vertices float (N,3) metres, faces (F,3)
    vertex indices, colors uint8 (N,3) or None; comment: header lines; binary little-endian unless ascii."""
    trimesh = _trimesh()
    tm = trimesh.Trimesh(np.asarray(vertices, dtype=np.float32), np.asarray(faces), vertex_colors=colors,
                         process=False, validate=False)
    return _ply(trimesh, tm, comment, ascii)


def _ply(trimesh, tm, comment: str, ascii: bool) -> bytes:
    data = trimesh.exchange.ply.export_ply(tm, encoding="ascii" if ascii else "binary", vertex_normal=False)
    intro, fmt_line, rest = data.split(b"\n", 2)  # "ply", "format ...", the rest of the header and the data
    lines = b"".join(f"comment {c}\n".encode("ascii", "replace") for c in comment.splitlines() if c)
    return intro + b"\n" + fmt_line + b"\n" + lines + rest


def _glb(trimesh, mesh: GridMesh, texture: np.ndarray | None, comment: str) -> bytes:
    from trimesh.exchange.gltf import export_glb

    vertices = to_gltf_axes(mesh.vertices)
    if texture is None:
        tm = trimesh.Trimesh(vertices, mesh.faces, vertex_colors=mesh.colors, process=False, validate=False)
    else:
        from PIL import Image

        w, h = mesh.size
        uv = np.empty((len(mesh.pixels), 2), dtype=np.float32)  # trimesh: origin bottom-left (flipped for glTF)
        uv[:, 0] = (mesh.pixels[:, 0] + 0.5) / w
        uv[:, 1] = 1.0 - (mesh.pixels[:, 1] + 0.5) / h
        image = Image.fromarray(np.ascontiguousarray(texture[..., :3], dtype=np.uint8))
        # trimesh saves the texture as a PNG with PIL's default zlib level 6; level 1 is about twice as fast
        # (most of a GLB's time at 640x480) for a texture ~15 % larger, still lossless
        image.save = functools.partial(image.save, compress_level=PNG_LEVEL)  # type: ignore[method-assign]
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0,
                                                       roughnessFactor=1.0, doubleSided=True)
        visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
        tm = trimesh.Trimesh(vertices, mesh.faces, visual=visual, process=False, validate=False)

    def unlit(tree: dict) -> None:
        for m in tree.get("materials", []):
            m.setdefault("extensions", {})["KHR_materials_unlit"] = {}
        if tree.get("materials"):
            tree["extensionsUsed"] = sorted(set(tree.get("extensionsUsed", [])) | {"KHR_materials_unlit"})
        if comment:
            tree.setdefault("asset", {}).setdefault("extras", {})["comment"] = comment

    return export_glb(trimesh.Scene(tm), include_normals=False, tree_postprocessor=unlit)


def write_mesh(path: str | os.PathLike, mesh: GridMesh, fmt: str, texture: np.ndarray | None = None,
               comment: str = "", ascii: bool = False) -> None:
    """Write `mesh_bytes(mesh, fmt, texture, comment, ascii)` to `path` atomically (nothing written on failure)."""
    data = mesh_bytes(mesh, fmt, texture, comment, ascii)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)

