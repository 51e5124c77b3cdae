"""Dataset readers: tiny fixtures in each exact on-disk format, exact values in metres; the shared real data."""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from transferdepth.data import DatasetError, SkipBad, open_dataset, parse_spec, procedural
from transferdepth.data.nyu_npy import NyuNpy

RGBD = Path(__file__).resolve().parents[3] / "shared/data/rgbd"
needs_rgbd = pytest.mark.skipif(not RGBD.is_dir(), reason="shared real RGB-D data (../shared/data/rgbd) absent")


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def pgm16(array: np.ndarray) -> bytes:
    """16-bit binary PGM (P5, maxval 65535, big-endian), written by hand."""
    h, w = array.shape
    return f"P5\n{w} {h}\n65535\n".encode() + array.astype(">u2").tobytes()


def rgb_pattern(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- nyu-zip (DenseDepth nyu_data.zip)

H, W = 6, 8
TRAIN_DEPTH = np.array([[255, 0, 51] + [128] * (W - 3)] * H, np.uint8)  # 255 -> 10 m, 0 hole, 51 -> 2 m
TEST_DEPTH = np.array([[1234, 0, 10001] + [500] * (W - 3)] * H, np.uint16)  # mm; 10.001 m is out of range


def make_nyu_zip(path: Path, n_train: int = 3, n_test: int = 2) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        train, test = [], []
        for i in range(n_train):
            d = f"data/nyu2_train/living_room_0038_out/{i}"
            zf.writestr(f"{d}.png", png(rgb_pattern(H, W, i)))  # lossless RGB so values can be checked
            zf.writestr(f"{d}_depth.png", png(TRAIN_DEPTH))
            train.append(f"{d}.png,{d}_depth.png")
        for i in range(n_test):
            d = f"data/nyu2_test/{i:05d}"
            zf.writestr(f"{d}_colors.png", png(rgb_pattern(H, W, 100 + i)))
            zf.writestr(f"{d}_depth.png", png(TEST_DEPTH))
            test.append(f"{d}_colors.png,{d}_depth.png")
        zf.writestr("data/nyu2_train.csv", "\n".join(train) + "\n")
        zf.writestr("data/nyu2_test.csv", "\n".join(test) + "\n")
    return path


def test_nyu_zip_train_8bit_depth_in_metres(tmp_path):
    ds = open_dataset(f"nyu-zip:{make_nyu_zip(tmp_path / 'nyu_data.zip')}")
    assert len(ds) == 3
    s = ds[1]
    assert s["name"] == "data/nyu2_train/living_room_0038_out/1.png"
    np.testing.assert_array_equal(s["rgb"], rgb_pattern(H, W, 1))
    assert s["depth"].dtype == np.float32 and s["depth"].shape == (H, W)
    assert s["depth"][0, 0] == 10.0  # 255 / 255 * 10
    assert s["depth"][0, 2] == np.float32(2.0)  # 51 / 255 * 10
    assert s["depth"][0, 1] == 0.0 and not s["valid"][0, 1]
    assert s["valid"][0, 0] and s["valid"][0, 2] and s["valid"].sum() == H * W - H
    k = s["intrinsics"]  # NYU defaults scaled from 640x480 to 8x6, pixel centres at integers
    assert k.dtype == np.float64
    sx, sy = W / 640, H / 480
    np.testing.assert_allclose(k, [[518.8579 * sx, 0, (325.5824 + 0.5) * sx - 0.5],
                                   [0, 519.4696 * sy, (253.7362 + 0.5) * sy - 0.5], [0, 0, 1]])


def test_nyu_zip_test_16bit_millimetres(tmp_path):
    path = make_nyu_zip(tmp_path / "nyu_data.zip")
    for ds in (open_dataset(f"nyu-zip:{path}", split="test"), open_dataset(f"nyu-zip:{path}?split=test")):
        assert len(ds) == 2
        s = ds[0]
        assert s["depth"][0, 0] == np.float32(1.234)
        assert s["depth"][0, 3] == np.float32(0.5)
        assert not s["valid"][0, 1] and not s["valid"][0, 2]  # hole, and 10.001 m > 10 m
        assert s["depth"][0, 2] == 0.0
        np.testing.assert_array_equal(ds[-1]["rgb"], rgb_pattern(H, W, 101))


def test_nyu_zip_is_lazy_and_picklable(tmp_path):
    ds = open_dataset(f"nyu-zip:{make_nyu_zip(tmp_path / 'nyu_data.zip')}")
    assert ds._zf is None  # nothing opened until a sample is read
    ds[0]
    assert ds._zf is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._zf is None and ds._zf is not None  # the handle does not travel
    np.testing.assert_array_equal(clone[2]["depth"], ds[2]["depth"])


def test_nyu_zip_dataloader_two_workers(tmp_path):
    ds = open_dataset(f"nyu-zip:{make_nyu_zip(tmp_path / 'nyu_data.zip', n_train=7)}")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    names, depths, rgbs = [], [], []
    for batch in loader:
        names += batch["name"]
        depths.append(batch["depth"])
        rgbs.append(batch["rgb"])
    assert names == [f"data/nyu2_train/living_room_0038_out/{i}.png" for i in range(7)]
    depth, rgb = torch.cat(depths), torch.cat(rgbs)
    assert depth.shape == (7, H, W) and depth.dtype == torch.float32
    assert torch.all(depth[:, 0, 0] == 10.0)
    for i in range(7):
        assert torch.equal(rgb[i], torch.from_numpy(rgb_pattern(H, W, i)))
    assert ds._zf is None  # the main process never opened the zip: each worker opened its own


# ---------------------------------------------------------------- nyu-npy (DenseDepth nyu_test.zip)

def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def npy_arrays(n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = np.stack([rgb_pattern(H, W, 200 + i) for i in range(n)])
    depth = np.random.default_rng(0).uniform(0.5, 9.5, (n, H, W)).astype(np.float32)
    depth[:, 0, 0] = [1.5 + i for i in range(n)]
    depth[:, 0, 1] = 0.0  # hole
    depth[:, 0, 2] = 10.5  # beyond NYU's 10 m
    return rgb, depth, np.array([20, 459, 24, 615])


def make_npy_zip(path: Path, compression: int, n: int = 4) -> Path:
    rgb, depth, crop = npy_arrays(n)
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("eigen_test_rgb.npy", npy_bytes(rgb))
        zf.writestr("eigen_test_depth.npy", npy_bytes(depth))
        zf.writestr("eigen_test_crop.npy", npy_bytes(crop))
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_nyu_npy_zip_values(tmp_path, compression):
    rgb, depth, _ = npy_arrays()
    ds = open_dataset(f"nyu-npy:{make_npy_zip(tmp_path / 'nyu_test.zip', compression)}")
    assert len(ds) == 4 and ds.crop == (20, 459, 24, 615)
    for i in (2, 0, 3, 1):  # out of order: the deflated stream must rewind correctly
        s = ds[i]
        np.testing.assert_array_equal(s["rgb"], rgb[i])
        assert s["depth"][0, 0] == np.float32(1.5 + i)
        np.testing.assert_array_equal(s["depth"][1:], depth[i, 1:])
        assert not s["valid"][0, 1] and not s["valid"][0, 2] and s["valid"][1:].all()
        assert s["rgb"].flags.writeable and s["name"] == f"eigen_test_{i:04d}"
    cache = ds._cache
    if compression == zipfile.ZIP_STORED:  # memory-mapped out of the zip, never read whole
        assert isinstance(cache["eigen_test_rgb.npy"], np.memmap)
    else:
        assert not any(isinstance(v, np.ndarray) for v in cache.values())
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache == {}
    np.testing.assert_array_equal(clone[3]["rgb"], rgb[3])


def test_nyu_npy_folder(tmp_path):
    rgb, depth, crop = npy_arrays(2)
    for name, a in (("eigen_test_rgb.npy", rgb), ("eigen_test_depth.npy", depth), ("eigen_test_crop.npy", crop)):
        np.save(tmp_path / name, a)
    ds = NyuNpy(tmp_path)
    assert len(ds) == 2 and ds.crop == (20, 459, 24, 615)
    assert ds[1]["depth"][0, 0] == np.float32(2.5)


# ---------------------------------------------------------------- nyu-mat (labelled .mat, MATLAB v7.3)

MH, MW, MN = 4, 6, 5  # H != W so a transposition mistake cannot pass


def matlab_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The MATLAB-side arrays: images HxWx3xN uint8, depths HxWxN metres, with an asymmetric pattern."""
    images = np.zeros((MH, MW, 3, MN), np.uint8)
    depths = np.full((MH, MW, MN), 3.0)
    for n in range(MN):
        images[0, 5, 0, n] = 255  # bright red at top row, column 5
        images[3, 0, 2, n] = 200  # blue at bottom-left
        images[1, 2, 1, n] = n + 1  # which image this is (MATLAB index)
        depths[0, 5, n] = 1.25
        depths[3, 0, n] = 7.5
        depths[2, 2, n] = n + 1
    return images, depths


def write_v73_mat(path: Path) -> Path:
    """Like MATLAB's -v7.3: HDF5 with a 512-byte user block; arrays stored column-major, so h5py sees
    the reversed shape (N,3,W,H) for an HxWx3xN array."""
    images, depths = matlab_arrays()
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"] = np.ascontiguousarray(images.T)  # C order of the reversed axes = MATLAB's memory layout
        f["depths"] = np.ascontiguousarray(depths.T)
        assert f["images"].shape == (MN, 3, MW, MH) and f["depths"].shape == (MN, MW, MH)
    return path


def test_nyu_mat_upright_not_mirrored(tmp_path):
    mat = write_v73_mat(tmp_path / "nyu_depth_v2_labeled.mat")
    scipy.io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [2], [4]]), "testNdxs": np.array([[3], [5]])})
    ds = open_dataset(f"nyu-mat:{mat}?split=test")
    assert len(ds) == 2
    s = ds[1]  # MATLAB index 5
    assert s["rgb"].shape == (MH, MW, 3) and s["depth"].shape == (MH, MW)
    assert tuple(s["rgb"][0, 5]) == (255, 0, 0)
    assert tuple(s["rgb"][3, 0]) == (0, 0, 200)
    assert s["rgb"][1, 2, 1] == 5 and s["name"] == "labeled_0005"
    assert s["rgb"].sum() == 255 + 200 + 5
    assert s["depth"][0, 5] == np.float32(1.25) and s["depth"][3, 0] == np.float32(7.5)
    assert s["depth"][2, 2] == 5.0 and s["depth"][0, 0] == 3.0 and s["valid"].all()
    train = open_dataset(f"nyu-mat:{mat}", split="train")
    assert [train[i]["rgb"][1, 2, 1] for i in range(3)] == [1, 2, 4]
    assert len(open_dataset(f"nyu-mat:{mat}?split=all")) == MN


def test_nyu_mat_hdf5_splits_file(tmp_path):
    mat = write_v73_mat(tmp_path / "labeled.mat")
    with h5py.File(tmp_path / "my_splits.mat", "w") as f:  # v7.3 splits: 1x654 in h5py
        f["testNdxs"] = np.array([[2.0, 4.0]])
        f["trainNdxs"] = np.array([[1.0]])
    ds = open_dataset(f"nyu-mat:{mat}?split=test&splits={tmp_path / 'my_splits.mat'}")
    assert [ds[i]["name"] for i in range(len(ds))] == ["labeled_0002", "labeled_0004"]
    assert ds[0]["depth"][2, 2] == 2.0
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[1]["rgb"][1, 2, 1] == 4


# ---------------------------------------------------------------- nyu-bts (BTS sync tree + file list)

def make_bts(root: Path) -> None:
    for sub, scene, idx, mm in (("sync", "kitchen_0028b", 45, 1234), ("sync", "kitchen_0028b", 46, 2000),
                                ("official_splits/test", "bathroom", 45, 4321)):
        d = root / sub / scene
        d.mkdir(parents=True, exist_ok=True)
        (d / f"rgb_{idx:05d}.jpg").write_bytes(png(rgb_pattern(H, W, idx), "JPEG"))
        depth = np.full((H, W), mm, np.uint16)
        depth[0, 1] = 0
        (d / f"sync_depth_{idx:05d}.png").write_bytes(png(depth))
    (root / "train_list.txt").write_text(  # BTS train lists are relative to sync/, with a leading slash
        "/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n"
        "/kitchen_0028b/rgb_00046.jpg None 518.8579\n"
        "sync/kitchen_0028b/rgb_00046.jpg sync/kitchen_0028b/sync_depth_00046.png 500.0\n")
    (root / "nyudepthv2_test_files_with_gt.txt").write_text(
        "bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n")


def test_nyu_bts(tmp_path):
    make_bts(tmp_path)
    ds = open_dataset(f"nyu-bts:{tmp_path}?list=train_list.txt")
    assert len(ds) == 2  # the None line is skipped
    s = ds[0]
    assert s["depth"][0, 0] == np.float32(1.234) and not s["valid"][0, 1] and s["valid"].sum() == H * W - 1
    assert s["rgb"].shape == (H, W, 3) and s["name"] == "kitchen_0028b/rgb_00045.jpg"
    np.testing.assert_allclose(s["intrinsics"], [[518.8579, 0, W / 2], [0, 518.8579, H / 2], [0, 0, 1]])
    assert ds[1]["depth"][2, 2] == 2.0 and ds[1]["intrinsics"][0, 0] == 500.0
    test = open_dataset(f"nyu-bts:{tmp_path}", split="test")  # default list name of BTS
    assert len(test) == 1 and test[0]["depth"][3, 3] == np.float32(4.321)


# ---------------------------------------------------------------- folder (generic RGB-D)

def make_folder(root: Path, n: int = 5) -> None:
    for i in range(n):
        (root / f"frame-{i * 400:06d}.color.png").write_bytes(png(rgb_pattern(H, W, i)))
        depth = np.full((H, W), 1000 + i, np.uint16)
        depth[0, 0], depth[0, 1], depth[0, 2] = 0, 65535, 9000
        (root / f"frame-{i * 400:06d}.depth.png").write_bytes(png(depth))


def test_folder_units_invalid_max_depth_index(tmp_path):
    make_folder(tmp_path)
    base = f"folder:{tmp_path}?rgb=*.color.png&depth=*.depth.png&scale=0.001&invalid=0,65535"
    ds = open_dataset(base)
    assert len(ds) == 5 and ds[3]["name"] == "frame-001200.color.png"
    s = ds[3]
    assert s["depth"][1, 1] == np.float32(1.003) and s["depth"][0, 2] == 9.0
    assert not s["valid"][0, 0] and not s["valid"][0, 1] and s["valid"][0, 2]
    assert s["depth"][0, 1] == 0.0 and s["intrinsics"] is None
    np.testing.assert_array_equal(s["rgb"], rgb_pattern(H, W, 3))
    assert not open_dataset(base + "&max_depth=5")[0]["valid"][0, 2]
    assert open_dataset(f"folder:{tmp_path}?rgb=*.color.png&depth=*.depth.png&scale=0.0001")[0]["valid"][0, 1]
    # index=LO:HI on the frame number, HI excluded: frames 0, 400, 800, 1200, 1600
    assert [s["name"][:12] for s in open_dataset(base + "&index=0:800")] == ["frame-000000", "frame-000400"]
    assert len(open_dataset(base + "&index=800:")) == 3
    assert len(open_dataset(base + "&index=400:1201")) == 3


def test_folder_pgm_subfolders_sorted_pairing_and_intrinsics(tmp_path):
    (tmp_path / "color").mkdir()
    (tmp_path / "depth").mkdir()
    for i in (1, 2, 10):  # natural order: 1, 2, 10 (not 1, 10, 2)
        (tmp_path / "color" / f"img_{i:04d}.png").write_bytes(png(rgb_pattern(H, W, i)))
        depth = np.full((H, W), 100 * i, np.uint16)
        depth[5, 7] = 0
        (tmp_path / "depth" / f"d{i}.pgm").write_bytes(pgm16(depth))
    ds = open_dataset(f"folder:{tmp_path}?rgb=color/img_*.png&depth=depth/d*.pgm&intrinsics=518,519,325.5,253.5")
    assert [s["name"] for s in ds] == ["color/img_0001.png", "color/img_0002.png", "color/img_0010.png"]
    assert [float(s["depth"][0, 0]) for s in ds] == [np.float32(0.1), np.float32(0.2), 1.0]
    assert not ds[2]["valid"][5, 7] and ds[2]["valid"].sum() == H * W - 1
    np.testing.assert_allclose(ds[0]["intrinsics"], [[518, 0, 325.5], [0, 519, 253.5], [0, 0, 1]])
    np.savetxt(tmp_path / "camera-intrinsics.txt", [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    k = open_dataset(f"folder:{tmp_path}?rgb=color/*.png&depth=depth/*.pgm")[0]["intrinsics"]
    np.testing.assert_array_equal(k, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])


def test_folder_8bit_depth(tmp_path):
    (tmp_path / "a.rgb.png").write_bytes(png(rgb_pattern(H, W, 0)))
    (tmp_path / "a.d.png").write_bytes(png(np.full((H, W), 200, np.uint8)))
    ds = open_dataset(f"folder:{tmp_path}?rgb=*.rgb.png&depth=*.d.png&bits=8&scale=0.05")
    assert ds[0]["depth"][0, 0] == 10.0
    assert open_dataset(f"folder:{tmp_path}?rgb=*.rgb.png&depth=*.d.png&bits=any&scale=0.05")[0]["valid"].all()


# ---------------------------------------------------------------- the shared real RGB-D data

def raw_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int64)


@needs_rgbd
def test_real_7scenes_units_and_holes():
    root = RGBD / "7scenes-redkitchen"
    ds = open_dataset(f"folder:{root}?rgb=*.color.jpg&depth=*.depth.png&scale=0.001&invalid=0,65535")
    assert len(ds) == 500
    i = [s[1] for s in ds.pairs].index("frame-000234.color.jpg")
    s, raw = ds[i], raw_png(root / "frame-000234.depth.png")
    assert s["rgb"].shape == (480, 640, 3) and s["depth"].shape == (480, 640)
    r, c = np.argwhere(raw == 65535)[0]  # saturated: invalid, not 65.535 m
    assert not s["valid"][r, c] and s["depth"][r, c] == 0.0
    r, c = np.argwhere(raw == 0)[0]
    assert not s["valid"][r, c]
    r, c = np.argwhere((raw > 0) & (raw < 65535))[1000]
    assert s["valid"][r, c] and s["depth"][r, c] == np.float32(raw[r, c] * 0.001)
    np.testing.assert_array_equal(s["valid"], (raw > 0) & (raw < 65535))
    np.testing.assert_array_equal(s["intrinsics"], [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    below, above = open_dataset("rgbd:7scenes-redkitchen?index=:800"), open_dataset("rgbd:7scenes-redkitchen?index=800:")
    assert (len(below), len(above)) == (400, 100)
    assert below[-1]["name"] == "frame-000798.color.jpg" and above[0]["name"] == "frame-000800.color.jpg"


@needs_rgbd
def test_real_sun3d_and_nyu_samples():
    sun = open_dataset(f"folder:{RGBD / 'sun3d-office'}?rgb=*.color.png&depth=*.depth.png&scale=0.001&invalid=0")
    assert len(sun) == 50
    raw = raw_png(RGBD / "sun3d-office" / "frame-000935.depth.png")
    s = sun[0]
    assert s["name"] == "frame-000935.color.png"
    np.testing.assert_array_equal(s["valid"], raw > 0)
    r, c = np.argwhere(raw > 0)[500]
    assert s["depth"][r, c] == np.float32(raw[r, c] * 0.001)
    assert s["intrinsics"][0, 0] == pytest.approx(570.342205)
    nyu = open_dataset("rgbd:nyu-samples")
    assert [x["name"] for x in nyu] == [f"rgb/rgb_{i:05d}.jpg" for i in (0, 50, 100)]
    raw = raw_png(RGBD / "nyu-samples/depth/sync_depth_00050.png")
    s = nyu[1]
    np.testing.assert_array_equal(s["depth"], (raw * 0.001).astype(np.float32))  # all < 10 m here
    np.testing.assert_array_equal(s["valid"], raw > 0)


@needs_rgbd
def test_real_kinect_dining_pgm():
    ds = open_dataset("rgbd:kinect-dining")
    assert [s["name"] for s in ds] == [f"color/{i}.png" for i in range(1, 6)]
    data = (RGBD / "kinect-dining/depth/3.pgm").read_bytes()  # P5 640 480 65535, big-endian, by hand
    assert data.startswith(b"P5")
    raw = np.frombuffer(data[-640 * 480 * 2:], ">u2").reshape(480, 640).astype(np.int64)
    s = ds[2]
    np.testing.assert_array_equal(s["valid"], raw > 0)
    r, c = np.argwhere(raw > 0)[2000]
    assert s["depth"][r, c] == np.float32(raw[r, c] * 0.001)
    np.testing.assert_array_equal(s["intrinsics"], [[518, 0, 325.5], [0, 519, 253.5], [0, 0, 1]])


def test_rgbd_root_from_env(tmp_path, monkeypatch):
    (tmp_path / "sun3d-office").mkdir()
    make_folder(tmp_path / "sun3d-office", n=2)  # *.color.png / *.depth.png, the preset's patterns
    monkeypatch.setenv("TRANSFERDEPTH_RGBD", str(tmp_path))
    ds = open_dataset("rgbd:sun3d-office")
    assert len(ds) == 2 and ds[1]["depth"][1, 1] == np.float32(1.001)


# ---------------------------------------------------------------- registry

def test_parse_spec():
    s = parse_spec("folder:~/d?rgb=*.jpg&depth=*.png&scale=0.001")
    assert s.scheme == "folder" and s.path == str(Path("~/d").expanduser())
    assert s.options == {"rgb": "*.jpg", "depth": "*.png", "scale": "0.001"}
    p = parse_spec("procedural:n=500&seed=0")
    assert p.path == "" and p.options == {"n": "500", "seed": "0"}


def test_procedural_dispatch(monkeypatch):
    calls = []

    class FakeScenes(list):
        def __init__(self, n, seed=0, height=240, width=320):
            calls.append((n, seed, height, width))
            super().__init__(range(n))

    monkeypatch.setattr(procedural, "ProceduralScenes", FakeScenes)  # the source registered in procedural.py
    assert len(open_dataset("procedural:n=5&seed=3&height=32&width=48")) == 5
    assert len(open_dataset("procedural:n=2")) == 2
    assert calls == [(5, 3, 32, 48), (2, 0, 240, 320)]


def test_skip_bad_wrapper_passes_good_samples_through(tmp_path):
    ds = open_dataset(f"nyu-zip:{make_nyu_zip(tmp_path / 'nyu_data.zip')}", skip_bad=True)
    assert isinstance(ds, SkipBad) and len(ds) == 3
    s = ds[2]
    assert s["name"].endswith("/2.png") and s["skipped"] == "" and ds.skipped == []
    assert ds.report() == "skip_bad: 0 of 3 samples skipped"


def test_spec_errors_name_the_choices():
    with pytest.raises(DatasetError, match=r"unknown scheme 'nyu-zp'; did you mean 'nyu-zip'\?.*folder"):
        open_dataset("nyu-zp:/x.zip")
    with pytest.raises(DatasetError, match=r"unknown option 'scal' .*did you mean 'scale'\?.*valid options: rgb"):
        open_dataset("folder:/x?rgb=*.jpg&depth=*.png&scal=0.001")
    with pytest.raises(DatasetError, match=r"option scale='mm': expected a number"):
        open_dataset("folder:/x?rgb=*.jpg&depth=*.png&scale=mm")
    with pytest.raises(DatasetError, match=r"option index='800': expected LO:HI"):
        open_dataset("folder:/x?rgb=*.jpg&depth=*.png&index=800")
    with pytest.raises(DatasetError, match=r"unknown rgbd preset '7scenes'; did you mean '7scenes-redkitchen'"):
        open_dataset("rgbd:7scenes")
    with pytest.raises(DatasetError, match=r"SCHEME:PATH.*nyu-zip:/d/nyu_data.zip"):
        open_dataset("/d/nyu_data.zip")
    with pytest.raises(DatasetError, match="no split 'train'.*index=LO:HI"):
        open_dataset("folder:/x?rgb=*.jpg&depth=*.png", split="train")
    with pytest.raises(DatasetError, match="procedural needs n=COUNT"):
        open_dataset("procedural:seed=1")
    with pytest.raises(DatasetError, match="contradicts"):
        open_dataset("nyu-mat:/x.mat?split=test", split="train")


def test_a_new_source_is_one_new_module(tmp_path, monkeypatch):
    """A source in a new file of the package (here: a folder added to the package's __path__) is found by
    open_dataset through discovery, with no change to registry.py."""
    import transferdepth.data as data_pkg
    from transferdepth.data import registry

    (tmp_path / "tmp_constant_source.py").write_text(
        "import numpy as np\n"
        "from transferdepth.data.registry import opt_float, register_source\n\n"
        "class Constant:\n"
        "    def __init__(self, path, depth):\n"
        "        self.path, self.depth = path, depth\n"
        "    def __len__(self):\n"
        "        return 2\n"
        "    def __getitem__(self, i):\n"
        "        return {'rgb': np.zeros((2, 2, 3), np.uint8), 'depth': np.full((2, 2), self.depth, np.float32),\n"
        "                'valid': np.ones((2, 2), bool), 'intrinsics': None, 'name': f'{self.path}/{i}'}\n\n"
        "def _open(spec, path, split, opts):\n"
        "    return Constant(path, opts.get('depth', 1.0))\n\n"
        "register_source('tmp-constant', _open, {'depth': opt_float})\n")
    monkeypatch.setattr(registry, "_SOURCES", dict(registry.sources()))  # registrations undone afterwards
    with pytest.raises(DatasetError, match="unknown scheme 'tmp-constant'"):
        open_dataset("tmp-constant:here?depth=2.5")
    monkeypatch.setattr(data_pkg, "__path__", [*data_pkg.__path__, str(tmp_path)])
    try:
        ds = open_dataset("tmp-constant:here?depth=2.5", skip_bad=True)
        assert len(ds) == 2 and ds[1]["name"] == "here/1" and ds[1]["depth"][0, 0] == 2.5
        assert "tmp-constant" in registry.sources() and "nyu-zip" in registry.sources()
        with pytest.raises(DatasetError, match=r"unknown option 'dpth'.*did you mean 'depth'"):
            open_dataset("tmp-constant:here?dpth=2")
        with pytest.raises(ValueError, match="registered twice"):
            registry.register_source("nyu-zip", lambda spec, path, split, opts: [])
    finally:
        sys.modules.pop("transferdepth.data.tmp_constant_source", None)


def test_every_builtin_scheme_is_registered_by_its_reader_module():
    from transferdepth.data.registry import sources

    modules = {scheme: s.module for scheme, s in sources().items()}
    assert {k: modules[k] for k in ("nyu-zip", "nyu-npy", "nyu-mat", "nyu-bts", "folder", "procedural", "rgbd")} == {
        "nyu-zip": "transferdepth.data.nyu_zip", "nyu-npy": "transferdepth.data.nyu_npy",
        "nyu-mat": "transferdepth.data.nyu_mat", "nyu-bts": "transferdepth.data.nyu_bts",
        "folder": "transferdepth.data.folder", "procedural": "transferdepth.data.procedural",
        "rgbd": "transferdepth.data.rgbd"}
