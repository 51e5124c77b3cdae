import math

import numpy as np
import pytest

from transferdepth.data.base import DatasetError, check_sample
from transferdepth.data.procedural import (
    MAX_DEPTH_M,
    MIN_DEPTH_M,
    ProceduralScenes,
    _box,
    _cast,
    _Object,
    _Part,
)
from transferdepth.recipe import nyu_intrinsics

FLIP = np.diag([-1.0, -1.0, 1.0])  # camera looking along world +z, upright (yaw = pitch = roll = 0)


def test_sample_contract_and_name():
    scenes = ProceduralScenes(3, seed=7, height=60, width=80)
    assert len(scenes) == 3
    s = check_sample(scenes[2], "procedural", 2)
    assert s["rgb"].shape == (60, 80, 3) and s["rgb"].dtype == np.uint8
    assert s["depth"].shape == (60, 80) and s["depth"].dtype == np.float32
    assert s["valid"].dtype == np.bool_
    assert s["name"] == "procedural/seed7/000002"
    np.testing.assert_array_equal(s["intrinsics"], nyu_intrinsics(60, 80))
    assert scenes[-1]["name"] == "procedural/seed7/000002"


def test_nyu_intrinsics_scaling():
    np.testing.assert_allclose(nyu_intrinsics(480, 640), [[518.8579, 0, 325.5824], [0, 519.4696, 253.7362], [0, 0, 1]])
    k = nyu_intrinsics(240, 320)
    np.testing.assert_allclose(k[[0, 1, 0, 1], [0, 1, 2, 2]], [259.42895, 259.7348, 162.5412, 126.6181])


def test_depth_range_and_valid_mask():
    s = ProceduralScenes(1, seed=3, height=48, width=64)[0]
    assert s["depth"].min() >= MIN_DEPTH_M and s["depth"].max() <= MAX_DEPTH_M
    inside = (s["depth"] > MIN_DEPTH_M) & (s["depth"] < MAX_DEPTH_M)
    assert np.all(s["valid"][inside])  # clipped values are the only invalid ones
    assert s["valid"].mean() > 0.5


def test_deterministic_per_seed_and_index_regardless_of_order():
    a, b = ProceduralScenes(10, seed=1, height=48, width=64), ProceduralScenes(10, seed=1, height=48, width=64)
    b[9], b[3]  # other accesses first must not change sample 5
    sa, sb = a[5], b[5]
    np.testing.assert_array_equal(sa["rgb"], sb["rgb"])
    np.testing.assert_array_equal(sa["depth"], sb["depth"])
    other = ProceduralScenes(10, seed=2, height=48, width=64)[5]
    assert not np.array_equal(sa["depth"], other["depth"])
    assert not np.array_equal(sa["depth"], a[6]["depth"])


@pytest.mark.parametrize("size", [(120, 160), (90, 200)])
def test_other_sizes_look_like_images(size):
    s = ProceduralScenes(1, seed=0, height=size[0], width=size[1])[0]
    assert s["rgb"].shape == (*size, 3)
    grey = s["rgb"].astype(np.float64).mean(axis=2)
    # structured image, not noise: neighbouring pixels strongly correlated, yet with real contrast
    assert grey.std() > 10
    assert np.corrcoef(grey[:, 1:].ravel(), grey[:, :-1].ravel())[0, 1] > 0.8
    assert s["depth"].max() - s["depth"].min() > 1.0


def test_scenes_differ_in_depth_layout():
    scenes = ProceduralScenes(4, seed=0, height=30, width=40)
    medians = [float(np.median(scenes[i]["depth"])) for i in range(4)]
    assert len({round(m, 2) for m in medians}) == 4


def test_bad_arguments():
    with pytest.raises(DatasetError, match="n must be an integer >= 0"):
        ProceduralScenes(-1)
    with pytest.raises(DatasetError, match="height"):
        ProceduralScenes(2, height=0)
    with pytest.raises(IndexError, match="out of range"):
        ProceduralScenes(2)[2]


# ---- exact ray casting against known geometry (120x160 NYU camera)
ROOM = _Part((0.0, 0.0, 0.0), (4.0, 3.0, 5.0), 0)
ORIGIN = np.array([2.0, 1.5, 1.0])


def _depth(objects, h=120, w=160):
    t, face, _, _ = _cast(ROOM, objects, ORIGIN, FLIP, h, w)
    return t.reshape(h, w), face.reshape(h, w)


def test_fronto_parallel_wall_has_constant_z_depth_and_floor_is_exact():
    depth, face = _depth([])
    k = nyu_intrinsics(120, 160)
    u0, v0 = round(k[0, 2]), round(k[1, 2])
    # far wall z = 5, camera at z = 1: z-depth is 4 for every pixel that sees it
    wall = face == 5
    assert wall[v0, u0] and wall.sum() > 1000
    np.testing.assert_allclose(depth[wall], 4.0, rtol=1e-6)
    # floor under the camera (1.5 m): bottom row hits it at z = 1.5 / ((v - cy) / fy)
    y = (119 - k[1, 2]) / k[1, 1]
    assert face[119, u0] == 2
    np.testing.assert_allclose(depth[119, u0], 1.5 / y, rtol=1e-5)
    assert face[0, u0] == 3  # ceiling


@pytest.mark.parametrize("yaw,w,d,local_face", [(0.0, 1.0, 0.5, 4), (math.pi / 2, 0.5, 1.0, 1)])
def test_box_in_front_of_camera(yaw, w, d, local_face):
    # footprint 1.0 (x) by 0.5 (z) in the world either way; front face at z = 2.75
    obj = _Object(2.0, 3.0, yaw, [_box(w, 2.0, d, 0)])
    depth, face = _depth([obj])
    k = nyu_intrinsics(120, 160)
    u0, v0 = round(k[0, 2]), round(k[1, 2])
    # part 1 (the room is part 0); facing the camera: local z- face, or local x+ face when turned by 90 deg
    assert face[v0, u0] == 6 + local_face
    np.testing.assert_allclose(depth[v0, [u0, u0 + 30]], 1.75, rtol=1e-6)
    # beyond the box's edge (|x/z| > 0.5 / 1.75) the ray reaches the far wall
    assert face[v0, u0 - 50] == 5
    np.testing.assert_allclose(depth[v0, u0 - 50], 4.0, rtol=1e-6)
