"""Meshes from one depth map (geometry/mesh.py, `predict --format glb,obj,mesh.ply`): every file is read back
with trimesh and checked against a back-projection computed here, a synthetic 1 m -> 3 m step must not be
bridged by any face, faces face the camera, the GLB's texture is the photo, writes are atomic, and the CLI's
options and refusals are one line."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth.cli import main
from transferdepth.geometry import mesh as meshmod
from transferdepth.geometry.mesh import depth_to_mesh, write_mesh
from transferdepth.inference.checkpoint import save_checkpoint

trimesh = pytest.importorskip("trimesh", reason="the [3d] extra is not installed")

K = (60.0, 55.0, 15.2, 11.7)  # fx, fy, cx, cy: non-square pixels, off-centre, so a swapped term shows
SUFFIX = {"glb": ".glb", "obj": ".obj", "mesh.ply": "_mesh.ply"}
# the file's axes from the camera frame (x right, y down, z forward): glTF / OBJ y up, -z forward; PLY as is
FLIP = {"glb": np.array([1, -1, -1]), "obj": np.array([1, -1, -1]), "mesh.ply": np.array([1, 1, 1])}


def load(path):
    return trimesh.load(str(path), force="mesh", process=False)


def back_project(depth, k, stride=1):
    """Reference: x = (u - cx) z / fx, y = (v - cy) z / fy, z for every stride-th pixel, row-major, (N,3)."""
    fx, fy, cx, cy = k
    rows, cols = np.arange(0, depth.shape[0], stride), np.arange(0, depth.shape[1], stride)
    out = []
    for v in rows:
        for u in cols:
            z = float(depth[v, u])
            out.append(((u - cx) * z / fx, (v - cy) * z / fy, z))
    return np.array(out)


def smooth_scene(h=24, w=32):
    """A slanted wall 2-2.6 m (every neighbour within 2 %) and a photo of random colours."""
    v, u = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.012 * u + 0.008 * v + 0.01 * np.sin(u * 0.7)).astype(np.float32)
    rgb = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return depth, rgb


def write_all(tmp_path, mesh, rgb):
    paths = {}
    for fmt, suffix in SUFFIX.items():
        paths[fmt] = tmp_path / f"m{suffix}"
        write_mesh(paths[fmt], mesh, fmt, rgb, "test comment")
    return paths


@pytest.mark.parametrize("stride", [1, 3])
def test_vertices_read_back_equal_the_back_projection_in_each_format(tmp_path, stride):
    depth, rgb = smooth_scene()
    mesh = depth_to_mesh(depth, rgb, K, stride=stride)
    expected = back_project(depth, K, stride)  # every vertex kept, in pixel order
    gh, gw = len(range(0, 24, stride)), len(range(0, 32, stride))
    for fmt, path in write_all(tmp_path, mesh, rgb).items():
        m = load(path)
        np.testing.assert_allclose(m.vertices, expected * FLIP[fmt], rtol=1e-5, atol=1e-6, err_msg=fmt)
        assert len(m.faces) == 2 * (gh - 1) * (gw - 1), fmt
        # every face faces the camera (at the origin): its normal points against the ray to its centre
        centres = m.vertices[m.faces].mean(axis=1)
        assert (np.einsum("ij,ij->i", m.face_normals, centres) < 0).all(), fmt
    for name in ("m_mesh.ply", "m.obj"):
        colours = np.asarray(load(tmp_path / name).visual.vertex_colors)[:, :3]
        np.testing.assert_array_equal(colours, rgb[::stride, ::stride].reshape(-1, 3), err_msg=name)


def test_glb_is_textured_with_the_photo_and_unlit(tmp_path):
    depth, rgb = smooth_scene()
    path = tmp_path / "m.glb"
    write_mesh(path, depth_to_mesh(depth, rgb, K, stride=2), "glb", rgb, "test comment")
    m = load(path)
    texture = np.asarray(m.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(texture, rgb)  # PNG: lossless
    # trimesh reads uv with the origin bottom-left: vertex (u, v) samples the centre of pixel (u, v)
    v, u = np.mgrid[0:24:2, 0:32:2]
    np.testing.assert_allclose(m.visual.uv[:, 0], ((u + 0.5) / 32).ravel(), atol=1e-6)
    np.testing.assert_allclose(m.visual.uv[:, 1], (1 - (v + 0.5) / 24).ravel(), atol=1e-6)
    import json
    import struct

    data = path.read_bytes()
    tree = json.loads(data[20:20 + struct.unpack("<I", data[12:16])[0]])
    assert "KHR_materials_unlit" in tree["extensionsUsed"]
    assert "y up" in tree["asset"]["extras"]["comment"] and "test comment" in tree["asset"]["extras"]["comment"]


def step_scene(h=20, w=30, column=13):
    depth = np.full((h, w), 1.0, np.float32)
    depth[:, column:] = 3.0
    depth[15:, :5] = 3.0  # a second step, along a row
    return depth, np.zeros((h, w, 3), np.uint8)


def test_no_face_spans_a_depth_step(tmp_path):
    depth, rgb = step_scene()
    for fmt, path in write_all(tmp_path, depth_to_mesh(depth, rgb, K), rgb).items():
        m = load(path)
        z = (m.vertices * FLIP[fmt])[:, 2]  # depth, metres
        near = z[m.faces] < 2.0
        assert (near.all(axis=1) | ~near.any(axis=1)).all(), f"{fmt}: a face spans the 1 m -> 3 m step"
        assert near.all(axis=1).sum() and (~near).all(axis=1).sum(), fmt  # both sides are meshed
        np.testing.assert_allclose(np.sort(np.unique(np.round(z, 6))), [1.0, 3.0], err_msg=fmt)
    # the filter is what cuts it: with a threshold above the jump (200 %) the step is bridged
    bridged = depth_to_mesh(depth, rgb, K, max_jump=2.5)
    zb = bridged.vertices[:, 2][bridged.faces]
    assert ((zb < 2).any(axis=1) & (zb > 2).any(axis=1)).any()


def test_threshold_is_relative_and_inclusive():
    # neighbours 2.0 and 2.1 m: a 5 % jump is kept at 0.05 and cut at 0.04
    depth = np.array([[2.0, 2.1], [2.0, 2.1]], np.float32)
    rgb = np.zeros((2, 2, 3), np.uint8)
    assert len(depth_to_mesh(depth, rgb, K, max_jump=0.0501).faces) == 2
    assert len(depth_to_mesh(depth, rgb, K, max_jump=0.04).faces) == 0
    assert meshmod.DEFAULT_MAX_JUMP == 0.05


def test_pixels_without_depth_have_no_vertex_and_no_face():
    depth, rgb = smooth_scene(6, 7)
    depth[2, 3], depth[4, 1], depth[0, 0] = np.nan, 0.0, -1.0
    mesh = depth_to_mesh(depth, rgb, K)
    used = {tuple(p) for p in mesh.pixels.astype(int).tolist()}
    assert not used & {(3, 2), (1, 4), (0, 0)}
    assert np.isfinite(mesh.vertices).all() and mesh.faces.max() < len(mesh.vertices)
    # (3, 2) sits in 6 triangles of the grid, (1, 4) in 6, the corner (0, 0) in 1
    assert len(mesh.faces) == 2 * 5 * 6 - 6 - 6 - 1


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    depth, rgb = smooth_scene()
    mesh = depth_to_mesh(depth, rgb, K)
    path = tmp_path / "m.glb"
    path.write_bytes(b"an older mesh")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trimesh.exchange.gltf, "export_glb", broken)
    with pytest.raises(OSError):
        write_mesh(path, mesh, "glb", rgb)
    assert path.read_bytes() == b"an older mesh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.glb"]


# --- the command line --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


def test_predict_writes_meshes_that_match_its_depth_map(ckpt, tmp_path):
    img = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    assert main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
                 "--format", "npy,glb,obj,mesh.ply", "--intrinsics", ",".join(map(str, K)),
                 "--mesh-max-jump", "1e6"]) == 0
    depth = np.load(out / "p_depth_m.npy")
    for fmt, suffix in SUFFIX.items():
        m = load(out / f"p{suffix}")
        np.testing.assert_allclose(m.vertices, back_project(depth, K) * FLIP[fmt], rtol=1e-5, atol=1e-6)
    header = (out / "p_mesh.ply").read_bytes()[:1000].decode("ascii", "replace")
    assert "comment camera frame, metres: x right, y down, z forward" in header
    assert "comment intrinsics fx fy cx cy" in header and "mesh max jump 1e+06" in header
    assert (out / "p.obj").read_text().startswith("# metres, y up")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_bad_mesh_max_jump_is_one_line_before_work(ckpt, tmp_path, capsys, value):
    img = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
               "--format", "glb", f"--mesh-max-jump={value}"])
    err = capsys.readouterr().err
    assert rc == 2 and "--mesh-max-jump" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("fmt", ["glb", "obj", "mesh.ply"])
def test_video_with_a_mesh_format_is_refused_in_one_line(ckpt, tmp_path, capsys, fmt):
    av = pytest.importorskip("av")
    path = tmp_path / "c.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(10))
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for i in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((24, 32, 3), 40 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "out"
    rc = main(["predict", str(path), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
               "--format", f"color,{fmt}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert rc == 2 and len(errors) == 1 and f"--format {fmt}: meshes are not written for videos" in errors[0], err
    assert not any(out.iterdir())


def test_ascii_ply_and_an_empty_mesh(tmp_path):
    depth, rgb = smooth_scene(5, 6)
    path = tmp_path / "a_mesh.ply"
    write_mesh(path, depth_to_mesh(depth, rgb, K), "mesh.ply", comment="x", ascii=True)
    assert path.read_bytes().startswith(b"ply\nformat ascii 1.0\ncomment camera frame, metres")
    np.testing.assert_allclose(load(path).vertices, back_project(depth, K), rtol=1e-5, atol=1e-6)
    nothing = np.full((5, 6), np.nan, np.float32)
    for fmt in SUFFIX:
        with pytest.raises(meshmod.MeshError, match="no mesh to write"):
            write_mesh(tmp_path / f"e{SUFFIX[fmt]}", depth_to_mesh(nothing, rgb, K), fmt, rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_mesh.ply"]


def test_cli_default_is_the_documented_one():
    from transferdepth.cli import build_parser

    args = build_parser("predict").parse_args(["predict", "x.jpg", "--checkpoint", "c", "--out", "o"])
    assert args.mesh_max_jump == meshmod.DEFAULT_MAX_JUMP == 0.05


def test_mesh_formats_without_trimesh_are_one_line_before_work(ckpt, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trimesh" else real(name, *a))
    img = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    rc = main(["predict", str(img), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--format", "obj"])
    err = capsys.readouterr().err
    assert rc == 2 and "need trimesh: pip install 'transferdepth[3d]'" in err and "Traceback" not in err, err
