"""Hostile data (issue 8, items 4, 7, 8, 9): each case is a named row; every one must end in one DatasetError
naming the file or option, never a traceback from deep inside PIL/zipfile/numpy and never silently wrong data.
Read-time cases must also be skipped by skip_bad=True (the next good sample comes back)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferdepth.data import DatasetError, open_dataset
from transferdepth.data.folder import Folder
from transferdepth.data.nyu_npy import NyuNpy

H, W = 6, 8


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# A 100 kB-ish file claiming 30000 x 30000 RGB pixels: PIL raises DecompressionBombError (not an OSError).
BOMB_PNG = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 100_000)) + png_chunk(b"IEND", b""))
RGB = png(np.full((H, W, 3), 90, np.uint8))
DEPTH8 = png(np.full((H, W), 51, np.uint8))


def nyu_zip(path: Path, members: dict[str, bytes], rows: list[tuple[str, str]], csv: bytes | None = None,
            compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("data/nyu2_train.csv", csv if csv is not None else "".join(f"{a},{b}\n" for a, b in rows))
    return path


def zip_with_first_sample(tmp_path: Path, rgb0: bytes, **kw) -> Path:
    """Two samples; sample 0's RGB is `rgb0`, sample 1 is good."""
    members = {"a.png": rgb0, "a_d.png": DEPTH8, "b.png": RGB, "b_d.png": DEPTH8}
    return nyu_zip(tmp_path / "nyu.zip", members, [("a.png", "a_d.png"), ("b.png", "b_d.png")], **kw)


def corrupt_deflate(tmp_path: Path) -> Path:
    path = zip_with_first_sample(tmp_path, RGB * 50, compression=zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("a.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start] = 0x07  # final block of reserved type 3: an invalid deflate stream (zlib.error, not BadZipFile)
    path.write_bytes(bytes(data))
    return path


def eigen_zip(tmp_path: Path, compression: int, cut: int = 0, extra: bytes = b"") -> Path:
    """nyu_test.zip whose RGB member is cut short by `cut` bytes (or padded with `extra`), followed by the
    depth member: a stored truncated RGB would otherwise be memory-mapped into the depth member's bytes."""
    rgb = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    depth = np.full((3, H, W), 2.0, np.float32)
    path = tmp_path / "nyu_test.zip"
    with zipfile.ZipFile(path, "w", compression) as zf:
        data = npy(rgb)
        zf.writestr("eigen_test_rgb.npy", (data[:-cut] if cut else data) + extra)
        zf.writestr("eigen_test_depth.npy", npy(depth))
    return path


def eigen_folder(tmp_path: Path, cut: int) -> Path:
    np.save(tmp_path / "eigen_test_rgb.npy", np.zeros((2, H, W, 3), np.uint8))
    np.save(tmp_path / "eigen_test_depth.npy", np.ones((2, H, W), np.float32))
    f = tmp_path / "eigen_test_depth.npy"
    f.write_bytes(f.read_bytes()[:-cut])
    return tmp_path


def frames(tmp_path: Path) -> Path:
    for i in range(3):
        (tmp_path / f"f{i * 10}.c.png").write_bytes(RGB)
        (tmp_path / f"f{i * 10}.d.png").write_bytes(png(np.full((H, W), 1000, np.uint16)))
    return tmp_path


def kitti(tmp_path: Path, depth_a: bytes | None = None, rgb_a: bytes = RGB, list_text: str | None = None) -> str:
    """A flat kitti source: images a.png, b.png; depth da.png, db.png in a separate root (16-bit, value/256 m)."""
    img, dep = tmp_path / "raw", tmp_path / "gt"
    img.mkdir()
    dep.mkdir()
    d16 = png(np.full((H, W), 2560, np.uint16))
    for name, data in (("a.png", rgb_a), ("b.png", RGB)):
        (img / name).write_bytes(data)
    for name, data in (("da.png", d16 if depth_a is None else depth_a), ("db.png", d16)):
        (dep / name).write_bytes(data)
    if depth_a == b"":
        (dep / "da.png").unlink()
    lst = tmp_path / "eigen.txt"
    lst.write_text(list_text if list_text is not None else "a.png da.png 721.5\nb.png db.png 721.5\n")
    return f"kitti:{img}?depth={dep}&list={lst}"


def raiser(exc: Exception) -> Callable:
    def open_(*args, **kwargs):
        raise exc
    return open_


# (name, make(tmp_path) -> spec, read index or None = fails at open, expected message regex)
CASES: list[tuple[str, Callable[[Path], str], int | None, str]] = [
    # item 4: a truncated stored .npy member must not return the next member's bytes as RGB
    ("npy stored member truncated", lambda p: f"nyu-npy:{eigen_zip(p, zipfile.ZIP_STORED, cut=7)}", None,
     r"eigen_test_rgb.npy\): array truncated: the header promises shape \(3, 6, 8, 3\) of uint8"),
    ("npy deflated member truncated", lambda p: f"nyu-npy:{eigen_zip(p, zipfile.ZIP_DEFLATED, cut=7)}", None,
     "array truncated"),
    ("npy member with trailing bytes", lambda p: f"nyu-npy:{eigen_zip(p, zipfile.ZIP_STORED, extra=b'x' * 9)}",
     None, "array has trailing bytes"),
    ("npy folder file truncated", lambda p: f"nyu-npy:{eigen_folder(p, cut=4)}", None,
     r"eigen_test_depth.npy\): array truncated"),
    # item 7: decoder errors that are not OSError stay DatasetErrors (so skip_bad can skip them)
    ("decompression bomb PNG", lambda p: f"nyu-zip:{zip_with_first_sample(p, BOMB_PNG)}", 0,
     r"\[index 0\] \(a.png\): image too large to decode \(PIL's decompression-bomb limit\)"),
    ("corrupt deflate data (zlib.error)", lambda p: f"nyu-zip:{corrupt_deflate(p)}", 0,
     r"\(a.png\): cannot read member: error: Error -3"),
    # item 8: members over the cap are not read; the CSV is streamed and its failures named
    ("member over max_member_mb", lambda p: f"nyu-zip:{zip_with_first_sample(p, RGB + bytes(2000))}"
     "?max_member_mb=0.001", 0, r"\(a.png\): member is 0.00\d+ MB uncompressed, over the 0.001 MB cap"),
    ("max_member_mb not positive", lambda p: f"nyu-zip:{zip_with_first_sample(p, RGB)}?max_member_mb=0", None,
     "max_member_mb must be > 0"),
    ("CSV field over csv's limit", lambda p: f"nyu-zip:{nyu_zip(p / 'n.zip', {}, [], csv=b'a' * 200_000)}",
     None, r"\(data/nyu2_train.csv\): cannot read the CSV after 0 rows: field larger than field limit"),
    ("CSV not UTF-8", lambda p: f"nyu-zip:{nyu_zip(p / 'n.zip', {}, [], csv=b'a.png,b.png' + bytes([10, 255]))}",
     None, r"nyu2_train.csv\): cannot read the CSV after \d+ rows: 'utf-8' codec"),
    # item 9: index bounds are frame numbers, never Python slice positions
    ("index negative LO", lambda p: f"folder:{frames(p)}?rgb=*.c.png&depth=*.d.png&index=-3:", None,
     r"option index='-3:': LO=-3: frame numbers are >= 0 .*not a Python slice"),
    ("index negative HI", lambda p: f"folder:{frames(p)}?rgb=*.c.png&depth=*.d.png&index=:-1", None,
     r"option index=':-1': HI=-1: frame numbers are >= 0"),
    ("index LO > HI", lambda p: f"folder:{frames(p)}?rgb=*.c.png&depth=*.d.png&index=20:10", None,
     r"option index='20:10': LO=20 > HI=10"),
    # issue 10: the kitti source (raw images + depth benchmark ground truth, Eigen list)
    ("kitti depth file missing", lambda p: kitti(p, depth_a=b""), 0, r"\[index 0\] \(.*gt/da.png\): file not found"),
    ("kitti 8-bit depth PNG", lambda p: kitti(p, depth_a=DEPTH8), 0,
     r"\[index 0\] \(.*gt/da.png\): expected 16-bit depth, got 8-bit"),
    ("kitti RGB and depth sizes differ", lambda p: kitti(p, depth_a=png(np.ones((H + 2, W), np.uint16))), 0,
     r"\[index 0\] \(.*raw/a.png\): RGB is 8x6 but depth .*da.png is 8x8"),
    ("kitti truncated RGB", lambda p: kitti(p, rgb_a=RGB[:40]), 0, r"\(.*raw/a.png\): .*(truncated|cut short)"),
    ("kitti list line with 2 fields", lambda p: kitti(p, list_text="a.png da.png 721.5\nb.png db.png\n"), None,
     r"\(.*eigen.txt\): line 2: expected 3 fields 'rgb_path depth_path focal', got 2"),
    ("kitti list line with 4 fields", lambda p: kitti(p, list_text="a.png da.png 721.5 x\n"), None,
     r"line 1: expected 3 fields .* got 4"),
    ("kitti focal not a number", lambda p: kitti(p, list_text="a.png da.png f=721\n"), None,
     r"line 1: focal must be a number > 0 \(pixels\), got 'f=721'"),
    ("kitti list only without gt", lambda p: kitti(p, list_text="a.png None 721.5\n"), None,
     r"no samples: the file list has no lines with depth \(1 without\)"),
    ("kitti kb_crop not 0/1", lambda p: kitti(p) + "&kb_crop=2", None, "kb_crop must be 0 or 1, got 2"),
    ("kitti no list, no split", lambda p: kitti(p).split("&list=")[0], None, "kitti needs list=FILE"),
]


@pytest.mark.parametrize("name,make,index,message", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_clear_dataset_error(tmp_path, name, make, index, message):
    spec = make(tmp_path)
    with pytest.raises(DatasetError, match=message):
        ds = open_dataset(spec)
        if index is not None:
            ds[index]
    if index is not None:  # a bad sample: skip_bad passes over it to the next good one
        ds = open_dataset(spec, skip_bad=True)
        assert ds[index]["name"] == "b.png" and ds.skipped[0][0] == index


def test_any_decoder_exception_is_a_dataset_error(tmp_path, monkeypatch):
    """Decoders can raise anything on hostile bytes (struct.error, IndexError, ...): all become DatasetError."""
    spec = f"nyu-zip:{zip_with_first_sample(tmp_path, RGB)}"
    monkeypatch.setattr(Image, "open", raiser(struct.error("unpack requires a buffer of 4 bytes")))
    with pytest.raises(DatasetError, match=r"\(a.png\): cannot decode image .*struct.error|error: unpack"):
        open_dataset(spec)[0]
    monkeypatch.setattr(Image, "open", raiser(KeyboardInterrupt()))  # not a data problem: not swallowed
    with pytest.raises(KeyboardInterrupt):
        open_dataset(spec)[0]


def test_truncated_stored_npy_is_caught_before_any_read(tmp_path):
    """The size check runs at open: the constructor itself fails, so no sample can be mis-read."""
    with pytest.raises(DatasetError, match="array truncated"):
        NyuNpy(eigen_zip(tmp_path, zipfile.ZIP_STORED, cut=1))
    ok = NyuNpy(eigen_zip(tmp_path, zipfile.ZIP_STORED))  # the exact size is accepted
    assert len(ok) == 3 and ok[2]["depth"][0, 0] == 2.0


def test_folder_index_checked_in_the_class_too(tmp_path):
    with pytest.raises(DatasetError, match=r"index=-3:: LO=-3: frame numbers are >= 0"):
        Folder(frames(tmp_path), "*.c.png", "*.d.png", index=(-3, None))
    assert len(Folder(tmp_path, "*.c.png", "*.d.png", index=(10, None))) == 2


def test_member_cap_default_and_uncapped(tmp_path):
    from transferdepth.data.nyu_zip import MAX_MEMBER_MB, NyuZip

    path = zip_with_first_sample(tmp_path, RGB)
    assert NyuZip(path).max_member_bytes == int(MAX_MEMBER_MB * 1e6)
    assert NyuZip(path, max_member_mb=None)[1]["name"] == "b.png"
