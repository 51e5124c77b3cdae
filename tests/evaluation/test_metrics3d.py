"""3D metrics against values computed by hand on analytic shapes: a plane vs a shifted, longer plane; a cube vs
a larger concentric cube. Distances are between points sampled on both surfaces, so they exceed the
point-to-surface distance by about the sampling spacing (a few mm here): the tolerances say how much."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from transferdepth.evaluation.metrics3d import (
    MeshError,
    mesh_metrics,
    point_metrics,
    read_mesh,
    sample_surface,
)
from transferdepth.geometry.fusion import Mesh, write_mesh_ply

pytest.importorskip("open3d")


def rectangle(x1: float, z: float) -> Mesh:
    """[0, x1] x [0, 1] at height z, two triangles."""
    v = np.array([[0, 0, z], [x1, 0, z], [x1, 1, z], [0, 1, z]], np.float32)
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]], np.int32))


def cube(half: float) -> Mesh:
    """The axis-aligned cube [-half, half]^3, 12 triangles."""
    v = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)], np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return Mesh(v, np.array(faces, np.int32))


def test_sampling_is_uniform_by_area():
    pts = sample_surface(rectangle(2.0, 0.0), 100_000, seed=3)
    assert pts.shape == (100_000, 3) and np.all(pts[:, 2] == 0)
    assert np.all((pts[:, 0] >= 0) & (pts[:, 0] <= 2) & (pts[:, 1] >= 0) & (pts[:, 1] <= 1))
    # uniform on [0, 2] x [0, 1]: half the points in x < 1, mean x = 1, mean y = 0.5
    assert abs(np.mean(pts[:, 0] < 1) - 0.5) < 0.01 and abs(pts[:, 0].mean() - 1) < 0.01
    assert abs(pts[:, 1].mean() - 0.5) < 0.01


def test_point_metrics_on_a_few_points_by_hand():
    pred = np.array([[0, 0, 0], [1, 0, 0]], float)
    ref = np.array([[0, 0, 0.02], [0, 0, 0.5], [1, 0, 0.1]], float)
    m = point_metrics(pred, ref, threshold=0.05)
    # pred -> ref: 0.02, 0.1; ref -> pred: 0.02, 0.5, 0.1
    assert m["accuracy"] == pytest.approx(0.06) and m["completeness"] == pytest.approx(0.62 / 3)
    assert m["chamfer"] == pytest.approx((0.06 + 0.62 / 3) / 2)
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 3)
    assert m["fscore"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert point_metrics(pred, ref + 1.0)["fscore"] == 0.0


def test_plane_against_a_shifted_longer_plane():
    c, tau = 0.03, 0.05
    m = mesh_metrics(rectangle(1.0, 0.0), rectangle(2.0, c), threshold=tau, n_points=100_000)
    # every predicted point is c above... below the reference plane, which covers it
    assert m["accuracy"] == pytest.approx(c, abs=5e-4) and m["precision"] == pytest.approx(1.0, abs=1e-3)
    # reference points over x in [0, 1] are c away; over x = 1 + u (u in [0, 1]) sqrt(u^2 + c^2) away
    strip = 0.5 * math.sqrt(1 + c * c) + c * c / 2 * math.asinh(1 / c)  # integral of sqrt(u^2 + c^2), 0..1
    # sampled points stop short of the predicted plane's edge by about the spacing, 1/sqrt(100,000) = 3 mm
    assert m["completeness"] == pytest.approx(0.5 * c + 0.5 * strip, abs=2e-3)
    recall = (1 + math.sqrt(tau**2 - c**2)) / 2  # u < sqrt(tau^2 - c^2) = 0.04 of the far half
    assert m["recall"] == pytest.approx(recall, abs=5e-3)
    assert m["fscore"] == pytest.approx(2 * recall / (1 + recall), abs=5e-3)
    assert m["chamfer"] == pytest.approx((m["accuracy"] + m["completeness"]) / 2)


def test_cube_against_a_larger_concentric_cube():
    a, d, tau = 0.5, 0.04, 0.05
    m = mesh_metrics(cube(a), cube(a + d), threshold=tau, n_points=100_000)
    side = 2 * (a + d)
    # inner -> outer: every inner point is d from the nearest outer face
    assert m["accuracy"] == pytest.approx(d, abs=5e-4) and m["precision"] == pytest.approx(1.0, abs=1e-3)
    # outer face point (x, y): distance sqrt(ex^2 + ey^2 + d^2) to the inner cube, ex = max(|x| - a, 0);
    # the face is a centre square (2a)^2, four strips 2a x d and four corners d x d
    strip = integrate.quad(lambda u: math.hypot(u, d), 0, d)[0]
    corner = integrate.dblquad(lambda u, v: math.sqrt(u * u + v * v + d * d), 0, d, 0, d)[0]
    comp = ((2 * a) ** 2 * d + 4 * 2 * a * strip + 4 * corner) / side**2
    assert m["completeness"] == pytest.approx(comp, abs=1e-3)
    r = math.sqrt(tau**2 - d**2)  # within tau: u < r in a strip, a quarter disc of radius r in a corner
    recall = ((2 * a) ** 2 + 4 * 2 * a * r + math.pi * r * r) / side**2
    # the nearest inner samples to a strip point lie near the inner cube's edges, which samples approach only
    # to about their spacing (sqrt(6 / 100,000) = 8 mm): recall comes out low by 0.007 (0.005 at 200,000)
    assert m["recall"] == pytest.approx(recall, abs=0.012) and m["recall"] < recall
    assert m["fscore"] == pytest.approx(2 * recall / (1 + recall), abs=0.012)


def test_identical_meshes_score_perfectly_and_round_trip_through_ply(tmp_path):
    mesh = cube(0.5)
    write_mesh_ply(tmp_path / "c.ply", mesh)
    back = read_mesh(tmp_path / "c.ply")
    np.testing.assert_allclose(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    m = mesh_metrics(back, mesh, threshold=0.05, n_points=50_000)
    assert m["fscore"] > 0.999 and m["chamfer"] < 0.01  # about the sampling spacing, sqrt(6 / 50,000)


def test_unreadable_or_empty_meshes_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such mesh file"):
        read_mesh(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_text("not a mesh")
    with pytest.raises(MeshError, match="junk.ply: no vertices"):
        read_mesh(tmp_path / "junk.ply")
    with pytest.raises(MeshError, match="nothing to compare"):
        point_metrics(np.zeros((0, 3)), np.zeros((3, 3)))
