"""3D reconstruction metrics: a predicted surface against a reference one, on points sampled from both.

As in the 3D reconstruction literature (e.g. Atlas, Murez et al. ECCV 2020; NeuralRecon, Sun et al. CVPR
2021), with P points sampled uniformly by area on the predicted mesh and R on the reference mesh, and
d(x, S) the distance from x to the nearest point of the set S (metres):

    accuracy     = mean over p in P of d(p, R)           (how far the prediction is from the truth)
    completeness = mean over r in R of d(r, P)           (how far the truth is from the prediction)
    chamfer      = (accuracy + completeness) / 2         (the mean of the two; some papers use their sum)
    precision    = fraction of p in P with d(p, R) < t
    recall       = fraction of r in R with d(r, P) < t
    F-score      = 2 precision recall / (precision + recall)   (0 when both are 0)

at a threshold t (default 5 cm). Point-to-point distances overestimate the point-to-surface distance by up
to about the sampling spacing (sqrt(area / n)); sample densely enough (default 200,000 points per surface).
A mesh file without faces is taken as a point cloud: its vertices are the points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferdepth.geometry.fusion import Mesh, open3d

DEFAULT_THRESHOLD_M = 0.05
DEFAULT_POINTS = 200_000


class MeshError(ValueError):
    """A mesh file that cannot be read or holds nothing to measure; one line naming it."""


def read_mesh(path: str | Path) -> Mesh:
    """A triangle mesh (or point cloud) file Open3D reads (PLY, OBJ, STL, OFF, GLB) -> Mesh in its units."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mesh file")
    o3d = open3d()
    m = o3d.io.read_triangle_mesh(str(path))
    vertices = np.asarray(m.vertices, dtype=np.float64)
    faces = np.asarray(m.triangles, dtype=np.int64)
    if len(vertices) == 0:
        cloud = o3d.io.read_point_cloud(str(path))
        vertices, faces = np.asarray(cloud.points, dtype=np.float64), np.zeros((0, 3), np.int64)
    if len(vertices) == 0:
        raise MeshError(f"{path}: no vertices read (expected a mesh or point cloud: PLY, OBJ, STL, OFF, GLB)")
    if not np.isfinite(vertices).all():
        raise MeshError(f"{path}: vertices hold NaN or infinite coordinates")
    return Mesh(vertices, faces, None)


def sample_surface(mesh: Mesh, n: int = DEFAULT_POINTS, seed: int = 0) -> np.ndarray:
    """n points (float64 (n, 3)) uniform by area on the mesh's triangles; a mesh without faces (or with zero
    area) gives its vertices instead."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return v
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        return v
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)  # uniform on a triangle: (1 - sqrt(r1)) a + sqrt(r1) (1 - r2) b + sqrt(r1) r2 c
    return ((1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri])


def point_metrics(pred: np.ndarray, ref: np.ndarray, threshold: float = DEFAULT_THRESHOLD_M) -> dict[str, Any]:
    """Accuracy, completeness, chamfer (their mean), precision, recall and F-score at `threshold` between
    two point sets (N, 3) and (M, 3) in metres (see the module's docstring)."""
    from scipy.spatial import cKDTree

    if len(pred) == 0 or len(ref) == 0:
        raise MeshError(f"nothing to compare: {len(pred)} predicted and {len(ref)} reference points")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be > 0 metres, got {threshold}")
    d_pred = cKDTree(ref).query(pred, workers=1)[0]  # each predicted point to the reference
    d_ref = cKDTree(pred).query(ref, workers=1)[0]
    precision, recall = float(np.mean(d_pred < threshold)), float(np.mean(d_ref < threshold))
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    acc, comp = float(d_pred.mean()), float(d_ref.mean())
    return {"accuracy": acc, "completeness": comp, "chamfer": (acc + comp) / 2, "precision": precision,
            "recall": recall, "fscore": fscore, "threshold": float(threshold), "n_pred": len(pred),
            "n_ref": len(ref)}


def mesh_metrics(pred: Mesh, ref: Mesh, threshold: float = DEFAULT_THRESHOLD_M, n_points: int = DEFAULT_POINTS,
                 seed: int = 0) -> dict[str, Any]:
    """`point_metrics` on `n_points` sampled from each surface (`sample_surface`, seeds `seed`, `seed + 1`)."""
    out = point_metrics(sample_surface(pred, n_points, seed), sample_surface(ref, n_points, seed + 1), threshold)
    out["chamfer_definition"] = "(accuracy + completeness) / 2"
    return out


METRIC_LINES = (("accuracy", "mean distance predicted -> reference", "m"),
                ("completeness", "mean distance reference -> predicted", "m"),
                ("chamfer", "(accuracy + completeness) / 2", "m"),
                ("precision", "predicted points within the threshold", ""),
                ("recall", "reference points within the threshold", ""),
                ("fscore", "2 P R / (P + R)", ""))


def format_metrics(m: dict[str, Any]) -> str:
    """The metrics as aligned lines for a terminal (distances in centimetres)."""
    lines = [f"3D metrics at threshold {m['threshold'] * 100:g} cm ({m['n_pred']} predicted, {m['n_ref']} "
             "reference points)"]
    for key, what, unit in METRIC_LINES:
        value = f"{m[key] * 100:8.2f} cm" if unit == "m" else f"{m[key]:8.4f}   "
        lines.append(f"  {key:<13}{value}  {what}")
    return "\n".join(lines)
