"""TSDF fusion, posed sequences and the fuse / evaluate-3d commands, on scenes whose geometry is known exactly:
a wall z = Z0 (world) seen by cameras with known poses, its depth maps computed here by ray-plane intersection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transferdepth.cli import main
from transferdepth.data.base import DatasetError
from transferdepth.data.sequence import RGBDSequence
from transferdepth.evaluation.metrics3d import read_mesh
from transferdepth.geometry.fusion import TSDFFusion, world_points

pytest.importorskip("open3d")

W, H, F = 64, 48, 60.0  # pixels; focal length (px)
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
WALL_Z = 2.0  # metres, world frame


def pose(yaw_deg: float = 0.0, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world: a rotation about the world's y axis by yaw, then a translation t (metres)."""
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    p = np.eye(4)
    p[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    p[:3, 3] = t
    return p


def wall_depth(cam_to_world: np.ndarray) -> np.ndarray:
    """Depth (camera z, metres) of the wall z = WALL_Z seen through K from the pose: ray-plane intersection."""
    v, u = np.mgrid[0:H, 0:W]
    rays = np.stack([(u - K[0, 2]) / F, (v - K[1, 2]) / F, np.ones_like(u, float)], -1)  # z_cam = 1
    dz = rays @ cam_to_world[2, :3]  # world z per unit camera z
    return ((WALL_Z - cam_to_world[2, 3]) / dz).astype(np.float32)


POSES = [pose(), pose(15, (0.2, 0.0, 0.1)), pose(-10, (-0.2, 0.1, -0.1))]


def test_world_points_follow_the_camera_to_world_convention():
    p = pose(90, (1.0, 2.0, 3.0))  # camera z (forward) points along world +x
    depth = np.zeros((H, W), np.float32)
    depth[int(K[1, 2] + 0.5) - 1, int(K[0, 2] + 0.5) - 1] = 2.0  # a pixel near the centre, 2 m ahead
    (x, y, z), = world_points(depth, K, p)
    assert x == pytest.approx(1.0 + 2.0, abs=0.02) and y == pytest.approx(2.0, abs=0.02)
    assert z == pytest.approx(3.0, abs=0.02)


def test_a_wall_seen_from_three_poses_fuses_onto_the_wall():
    fusion = TSDFFusion(voxel_m=0.02, max_depth_m=5.0)
    for p in POSES:
        depth = wall_depth(p)
        assert np.allclose(world_points(depth, K, p)[:, 2], WALL_Z, atol=1e-4)  # the depth maps are right
        fusion.integrate(depth, None, K, p)
    mesh = fusion.mesh()
    assert len(mesh.faces) > 100 and mesh.colors is not None
    assert np.abs(mesh.vertices[:, 2] - WALL_Z).max() < 0.02  # within a voxel of the wall
    # the fused surface spans the union of the views: at least the first camera's footprint (+-1.06 m x)
    half_w = (W - 1) / 2 / F * WALL_Z
    assert mesh.vertices[:, 0].min() < -0.9 * half_w and mesh.vertices[:, 0].max() > 0.9 * half_w + 0.2


def test_holes_and_far_depth_are_left_out():
    fusion = TSDFFusion(voxel_m=0.02, max_depth_m=1.0)  # the wall at 2 m is beyond the range
    fusion.integrate(wall_depth(pose()), None, K, pose())
    assert len(fusion.mesh().faces) == 0
    fusion = TSDFFusion(voxel_m=0.02, max_depth_m=5.0)
    depth = wall_depth(pose())
    depth[:, W // 2:] = np.nan  # right half: no measurement
    fusion.integrate(depth, None, K, pose())
    assert mesh_x_max(fusion) < 0.1


def mesh_x_max(fusion: TSDFFusion) -> float:
    return float(fusion.mesh().vertices[:, 0].max())


# --- posed sequences on disk and the commands ----------------------------------------------------------

def write_sequence(root, poses=POSES, intrinsics=True):
    root.mkdir(parents=True, exist_ok=True)
    if intrinsics:
        np.savetxt(root / "camera-intrinsics.txt", K)
    for i, p in enumerate(poses):
        name = f"frame-{i:06d}"
        Image.fromarray(np.full((H, W, 3), 100 + 40 * i, np.uint8)).save(root / f"{name}.color.png")
        Image.fromarray(np.round(wall_depth(p) * 1000).astype(np.uint16)).save(root / f"{name}.depth.png")
        np.savetxt(root / f"{name}.pose.txt", p)
    return root


def test_a_sequence_reads_frames_in_metres_with_poses(tmp_path):
    seq = RGBDSequence(write_sequence(tmp_path / "s"))
    assert len(seq) == 3 and [f.name for f in seq.frames] == ["frame-000000", "frame-000001", "frame-000002"]
    f = seq.frame(1)
    np.testing.assert_allclose(f["depth"], wall_depth(POSES[1]), atol=6e-4)  # millimetres -> metres
    np.testing.assert_allclose(f["pose"], POSES[1], atol=1e-9)
    np.testing.assert_allclose(f["intrinsics"], K)
    assert len(RGBDSequence(tmp_path / "s", index=(1, None))) == 2
    assert len(RGBDSequence(tmp_path / "s", every=2)) == 2 and len(RGBDSequence(tmp_path / "s", max_frames=1)) == 1


def test_missing_files_are_named_one_line(tmp_path):
    root = write_sequence(tmp_path / "s", intrinsics=False)
    with pytest.raises(DatasetError, match=r"camera-intrinsics.txt.*missing camera-intrinsics.txt"):
        RGBDSequence(root)
    np.savetxt(root / "camera-intrinsics.txt", K)
    (root / "frame-000001.pose.txt").unlink()
    (root / "frame-000002.pose.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing frame-000001.pose.txt") as e:
        RGBDSequence(root)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.__setitem__((0, 0), np.nan), "NaN"),
    (lambda p: p.__setitem__((0, 0), 1.5), "not orthonormal"),
    (lambda p: p.__setitem__((slice(0, 3), 0), -p[:3, 0]), "reflection"),
    (lambda p: p.__setitem__((3, 3), 2.0), "last row"),
])
def test_poses_that_are_not_rigid_are_named_by_frame(tmp_path, damage, reason):
    poses = [p.copy() for p in POSES]
    damage(poses[2])
    with pytest.raises(DatasetError, match=rf"frame-000002.pose.txt\): pose is not a rigid .*{reason}"):
        RGBDSequence(write_sequence(tmp_path / "s", poses))


def test_fuse_command_writes_the_mesh_and_compares_it(tmp_path, capsys):
    root = write_sequence(tmp_path / "s")
    out = tmp_path / "a.ply"
    assert main(["fuse", str(root), "--depth", "gt", "--voxel", "0.02", "--out", str(out), "--progress", "none"]) == 0
    mesh = read_mesh(out)
    assert np.abs(mesh.vertices[:, 2] - WALL_Z).max() < 0.02
    header = out.read_bytes().split(b"end_header")[0].decode()
    assert "transferdepth fuse align none (sensor depth)" in header and "frames 3" in header
    # a constant 1.5 m from the first (frontal) camera only, scaled per frame to the sensor: 2 / 1.5
    out_c = tmp_path / "c.ply"
    assert main(["fuse", str(root), "--depth", "constant:1.5", "--align", "median-gt", "--max-frames", "1",
                 "--voxel", "0.02", "--out", str(out_c), "--reference", str(out), "--progress", "none"]) == 0
    text = capsys.readouterr().out
    assert "align: median-gt, scale median 1.333" in text and "fscore" in text
    assert main(["evaluate-3d", str(out_c), str(out), "--json", str(tmp_path / "m.json"), "--points", "20000"]) == 0
    assert '"precision": 1.0' in (tmp_path / "m.json").read_text()


def test_fuse_errors_are_one_line_and_nothing_is_written_half(tmp_path, capsys):
    root = write_sequence(tmp_path / "s")
    out = tmp_path / "a.ply"
    out.write_bytes(b"previous")
    args = ["fuse", str(root), "--depth", "gt", "--voxel", "0.02", "--out", str(out), "--progress", "none"]
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    (root / "frame-000002.depth.png").write_bytes(b"not a png")  # the last frame is damaged
    assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "frame-000002.depth.png" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["a.ply", "s"]
    for bad, says in ((["--align", "median-gt"], "with --depth gt use --align none"),
                      (["--voxel", "0"], "--voxel must be"), (["--index", "5"], "--index must be LO:HI")):
        assert main(args + ["--overwrite"] + bad) == 2 and says in capsys.readouterr().err
    assert main(["fuse", str(root), "--out", str(tmp_path / "m.ply")]) == 2
    assert "--depth model needs --checkpoint" in capsys.readouterr().err


def test_per_frame_alignment_factors_by_hand():
    from transferdepth.apps.fuse import align_scale

    pred = np.array([[1.0, 2.0, 3.0, 10.0, 7.0]], np.float32)
    gt = np.array([[2.0, 4.0, 6.0, 8.0, 0.0]], np.float32)
    valid = gt > 0  # the last pixel has no sensor depth and is left out
    assert align_scale(pred, gt, valid, "median-gt") == pytest.approx(5.0 / 2.5)  # median(gt) / median(pred)
    assert align_scale(pred, gt, valid, "scale-gt") == pytest.approx(108.0 / 114.0)  # sum(p g) / sum(p^2)
    assert align_scale(pred, gt, valid, "none") == 1.0
    assert align_scale(pred, gt, np.zeros_like(valid), "median-gt") is None
