"""Bad data: every reader fails with a DatasetError naming source, index, path and what was expected;
skip_bad replaces bad samples deterministically and records them, also across DataLoader workers."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from transferdepth.data import DatasetError, open_dataset

H, W = 6, 8


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


RGB = png(np.full((H, W, 3), 90, np.uint8))
DEPTH8 = png(np.full((H, W), 51, np.uint8))
DEPTH16 = png(np.full((H, W), 1234, np.uint16))


def make_zip(path: Path, rows: list[tuple[str, bytes | None, str, bytes | None]], split: str = "train") -> str:
    """rows: (rgb member, bytes or None = leave out, depth member, bytes or None)."""
    with zipfile.ZipFile(path, "w") as zf:
        for rgb_name, rgb, depth_name, depth in rows:
            if rgb is not None:
                zf.writestr(rgb_name, rgb)
            if depth is not None:
                zf.writestr(depth_name, depth)
        zf.writestr(f"data/nyu2_{split}.csv", "".join(f"{r[0]},{r[2]}\n" for r in rows))
    return f"nyu-zip:{path}?split={split}"


def good(i: int, depth: bytes = DEPTH8) -> tuple[str, bytes, str, bytes]:
    return (f"data/nyu2_train/s/{i}.jpg", RGB, f"data/nyu2_train/s/{i}.png", depth)


def raises(spec_or_ds, index: int | None = None, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        if index is None:
            open_dataset(spec_or_ds, **kwargs)
        else:
            spec_or_ds[index]
    return info.value


def test_missing_member(tmp_path):
    ds = open_dataset(make_zip(tmp_path / "n.zip", [good(0), ("data/nyu2_train/s/1.jpg", None, "x.png", DEPTH8)]))
    e = raises(ds, 1)
    assert e.index == 1 and e.path == "data/nyu2_train/s/1.jpg" and "nyu-zip:" in e.source
    assert "missing from the zip" in str(e) and "[index 1]" in str(e)


def test_truncated_image(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    depth = png(noise)
    rgb = png(np.stack([noise] * 3, axis=-1), "JPEG")
    ds = open_dataset(make_zip(tmp_path / "n.zip", [("0.jpg", rgb, "0.png", depth[: len(depth) // 2]),
                                                    ("1.jpg", rgb[: len(rgb) // 2], "1.png", depth)]))
    e = raises(ds, 0)
    assert e.index == 0 and e.path == "0.png" and "cannot decode image (truncated or corrupt?)" in e.reason
    e = raises(ds, 1)
    assert e.index == 1 and e.path == "1.jpg" and "truncated" in e.reason
    ds = open_dataset(make_zip(tmp_path / "e.zip", [("a.jpg", b"", "a.png", DEPTH8), ("b.jpg", RGB, "b.png", DEPTH8[:20])]))
    assert raises(ds, 0).reason == "not a readable image (unknown format, empty or cut short)"
    assert "truncated" in raises(ds, 1).reason.lower()  # cut inside the PNG header


def test_size_mismatch(tmp_path):
    small = png(np.full((H - 1, W), 51, np.uint8))
    ds = open_dataset(make_zip(tmp_path / "n.zip", [(*good(0)[:3], small)]))
    e = raises(ds, 0)
    assert e.index == 0 and e.path == "data/nyu2_train/s/0.jpg"
    assert "RGB is 8x6 but depth data/nyu2_train/s/0.png is 8x5 (WxH); expected the same size" in e.reason


def test_wrong_bit_depth(tmp_path):
    ds = open_dataset(make_zip(tmp_path / "a.zip", [good(0, DEPTH16)], split="train"))
    e = raises(ds, 0)
    assert "expected 8-bit depth, got 16-bit (PIL mode I;16)" in e.reason and e.path.endswith("0.png")
    ds = open_dataset(make_zip(tmp_path / "b.zip", [good(0, DEPTH8)], split="test"))
    assert "expected 16-bit depth, got 8-bit (PIL mode L)" in raises(ds, 0).reason
    ds = open_dataset(make_zip(tmp_path / "c.zip", [good(0, png(np.zeros((H, W, 3), np.uint8)))]))
    assert "single-channel" in raises(ds, 0).reason
    (tmp_path / "f").mkdir()
    (tmp_path / "f/1.rgb.jpg").write_bytes(RGB)
    (tmp_path / "f/1.depth.png").write_bytes(DEPTH8)
    ds = open_dataset(f"folder:{tmp_path / 'f'}?rgb=*.rgb.jpg&depth=*.depth.png")  # bits=16 by default
    e = raises(ds, 0)
    assert e.path == str(tmp_path / "f/1.depth.png") and "expected 16-bit depth, got 8-bit" in e.reason


def test_empty_datasets_fail_at_open(tmp_path):
    with zipfile.ZipFile(tmp_path / "n.zip", "w") as zf:
        zf.writestr("data/nyu2_train.csv", "\n")
    e = raises(f"nyu-zip:{tmp_path / 'n.zip'}")
    assert "no samples" in e.reason and e.path == "data/nyu2_train.csv"
    assert "CSV member missing" in raises(f"nyu-zip:{tmp_path / 'n.zip'}", split="test").reason
    (tmp_path / "f").mkdir()
    assert "no files match '*.color.jpg'" in raises(f"folder:{tmp_path / 'f'}?rgb=*.color.jpg&depth=*.png").reason
    (tmp_path / "f/frame-000001.color.jpg").write_bytes(RGB)
    (tmp_path / "f/frame-000001.depth.png").write_bytes(DEPTH16)
    spec = f"folder:{tmp_path / 'f'}?rgb=*.color.jpg&depth=*.depth.png&index=800:"
    assert "no pairs with frame number in [800, None)" in raises(spec).reason
    (tmp_path / "list.txt").write_text("a/rgb_1.jpg None 518.8\n")
    assert "no lines with depth" in raises(f"nyu-bts:{tmp_path}?list=list.txt").reason
    buf = io.BytesIO()
    np.save(buf, np.zeros((0, H, W, 3), np.uint8))
    rgb = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, np.zeros((0, H, W), np.float32))
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("eigen_test_rgb.npy", rgb)
        zf.writestr("eigen_test_depth.npy", buf.getvalue())
    assert "the arrays are empty" in raises(f"nyu-npy:{tmp_path / 't.zip'}").reason


def test_bad_containers(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    e = raises(f"nyu-zip:{tmp_path / 'x.zip'}")
    assert "not a zip file" in e.reason and e.path == str(tmp_path / "x.zip")
    assert "file not found" in raises(f"nyu-zip:{tmp_path / 'nope.zip'}").reason
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.writestr("data/nyu2_train.csv", "a.jpg,a.png\nb.jpg\n")
    assert "line 2: expected 'rgb_path,depth_path'" in raises(f"nyu-zip:{tmp_path / 'c.zip'}").reason
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("eigen_test_rgb.npy", b"junk")
    assert "eigen_test_depth.npy missing" in raises(f"nyu-npy:{tmp_path / 't.zip'}").reason
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("eigen_test_rgb.npy", b"junk")
        zf.writestr("eigen_test_depth.npy", b"junk")
    e = raises(f"nyu-npy:{tmp_path / 't.zip'}")
    assert e.path == "eigen_test_rgb.npy" and "not a readable .npy array" in e.reason
    with h5py.File(tmp_path / "m.mat", "w") as f:
        f["images"] = np.zeros((2, 3, W, H), np.uint8)
        f["depths"] = np.zeros((2, H, W))  # not MATLAB's (N,W,H)
    assert "depths must be (N,W,H) = (2, 8, 6)" in raises(f"nyu-mat:{tmp_path / 'm.mat'}?split=all").reason
    e = raises(f"nyu-mat:{tmp_path / 'm.mat'}?split=test")
    assert "depths must be" in e.reason
    with h5py.File(tmp_path / "ok.mat", "w") as f:
        f["images"] = np.zeros((2, 3, W, H), np.uint8)
        f["depths"] = np.zeros((2, W, H))
    e = raises(f"nyu-mat:{tmp_path / 'ok.mat'}?split=test")
    assert "splits file not found" in e.reason and e.path == str(tmp_path / "splits.mat")
    (tmp_path / "list.txt").write_text("a/rgb_1.jpg a/sync_depth_1.png 518.8 extra\n")
    assert "line 1: expected 'rgb_path depth_path focal'" in raises(f"nyu-bts:{tmp_path}?list=list.txt").reason


def test_folder_count_mismatch(tmp_path):
    for i in (1, 2, 3):
        (tmp_path / f"frame-{i:06d}.color.jpg").write_bytes(RGB)
    for i in (1, 2):
        (tmp_path / f"frame-{i:06d}.depth.png").write_bytes(DEPTH16)
    e = raises(f"folder:{tmp_path}?rgb=*.color.jpg&depth=*.depth.png")
    assert "3 files match rgb='*.color.jpg' but 2 match depth='*.depth.png'" in e.reason
    assert "rgb without depth: ['frame-000003']" in e.reason


def test_bts_missing_file_names_the_path(tmp_path):
    (tmp_path / "sync/s").mkdir(parents=True)
    (tmp_path / "list.txt").write_text("/s/rgb_00001.jpg /s/sync_depth_00001.png 518.8\n")
    e = raises(open_dataset(f"nyu-bts:{tmp_path}?list=list.txt"), 0)
    assert e.index == 0 and e.path == str(tmp_path / "s/rgb_00001.jpg") and e.reason == "file not found"


def bad_zip_spec(tmp_path: Path) -> str:
    """6 rows; 1 and 2 are bad (missing member, truncated depth), 5 has a size mismatch."""
    rows = [good(i) for i in range(6)]
    rows[1] = (rows[1][0], None, rows[1][2], DEPTH8)
    rows[2] = (*rows[2][:3], DEPTH8[:30])
    rows[5] = (*rows[5][:3], png(np.zeros((H, W + 1), np.uint8)))
    return make_zip(tmp_path / "bad.zip", rows)


def test_skip_bad_replaces_with_next_good_sample(tmp_path):
    ds = open_dataset(bad_zip_spec(tmp_path), skip_bad=True)
    assert len(ds) == 6
    s = ds[1]
    assert s["name"] == "data/nyu2_train/s/3.jpg"  # 1 and 2 bad -> the next good one, 3
    assert [line.split("\t")[0] for line in s["skipped"].split("\n")] == ["1", "2"]
    assert ds[2]["name"].endswith("/3.jpg") and ds[0]["skipped"] == ""
    assert ds[5]["name"].endswith("/0.jpg")  # wraps around
    assert [i for i, _ in ds.skipped] == [1, 2, 5]
    assert "missing from the zip" in ds.skipped[0][1] and "not a readable image" in ds.skipped[1][1]
    assert ds.report().startswith("skip_bad: 3 of 6 samples skipped (bad); first: index 1: nyu-zip:")
    assert "\n" not in ds.report()
    plain = open_dataset(bad_zip_spec(tmp_path))
    assert raises(plain, 1).index == 1  # without skip_bad the error propagates


def test_skip_bad_visible_across_workers(tmp_path):
    ds = open_dataset(bad_zip_spec(tmp_path), skip_bad=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    names = []
    for batch in loader:
        names += batch["name"]
        ds.note(batch)
    assert [n.rsplit("/", 1)[1] for n in names] == ["0.jpg", "3.jpg", "3.jpg", "3.jpg", "4.jpg", "0.jpg"]
    assert [i for i, _ in ds.skipped] == [1, 2, 5]  # recorded in workers, merged here by note()
    assert ds.report().startswith("skip_bad: 3 of 6 samples skipped")


def test_skip_bad_gives_up_when_everything_is_bad(tmp_path):
    ds = open_dataset(make_zip(tmp_path / "n.zip", [good(0, DEPTH16), good(1, DEPTH16)]), skip_bad=True)
    e = raises(ds, 1)
    assert e.index == 1 and "2 consecutive bad samples" in e.reason and "expected 8-bit depth" in e.reason
