"""`transferdepth predict` as a hostile (or careless) user runs it: each case a row of a table (the files
there before, the arguments, the exit status, words in the one-line error, the files that must be left
as they were), so the next round adds rows, not files."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.api.predict import depth_to_mm
from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


def _photo(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)


def _users_png16(path):
    """A user's own 16-bit depth file (millimetres): what must never be lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32), 1234, np.uint16)).save(path)


# (id, files there before {relative path: maker}, arguments ({d} = the test's folder), exit status,
#  words in the error line (None: no error), files that must be byte-for-byte as before)
CASES = [
    ("out-is-the-input-folder", {"x.jpg": _photo, "x_depth_mm.png": _users_png16},
     ["{d}", "--out", "{d}"], 2, "the output x_depth_mm.png would be written over the input", ["x_depth_mm.png"]),
    ("out-is-the-input-folder-even-with-overwrite", {"x.jpg": _photo, "x_depth_mm.png": _users_png16},
     ["{d}", "--out", "{d}", "--overwrite"], 2, "inputs are never overwritten, even with --overwrite",
     ["x_depth_mm.png"]),
    ("input-named-explicitly-is-an-output", {"in/x.jpg": _photo, "out/x_depth_mm.png": _users_png16},
     ["{d}/in/x.jpg", "{d}/out/x_depth_mm.png", "--out", "{d}/out", "--overwrite"], 2, "would be written over the input",
     ["out/x_depth_mm.png"]),
    ("existing-output-is-kept", {"in/x.jpg": _photo, "out/x_depth_mm.png": _users_png16},
     ["{d}/in", "--out", "{d}/out"], 2, "x_depth_mm.png exists already; pass --overwrite", ["out/x_depth_mm.png"]),
    ("existing-outputs-counted", {"in/x.jpg": _photo, "in/y.jpg": _photo, "out/x_depth_mm.png": _users_png16,
                                  "out/y_depth_mm.png": _users_png16},
     ["{d}/in", "--out", "{d}/out"], 2, "and 1 more output files exist already", ["out/x_depth_mm.png", "out/y_depth_mm.png"]),
    ("other-formats-do-not-collide", {"in/x.jpg": _photo, "out/x_depth_mm.png": _users_png16},
     ["{d}/in", "--out", "{d}/out", "--format", "npy"], 0, None, ["out/x_depth_mm.png"]),
    ("overwrite-replaces-an-output", {"in/x.jpg": _photo, "out/x_depth_mm.png": _users_png16},
     ["{d}/in", "--out", "{d}/out", "--overwrite"], 0, None, []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_predict(ckpt, tmp_path, capsys, case):
    _, before, argv, status, words, kept = case
    for rel, make in before.items():
        make(tmp_path / rel)
    snapshot = {rel: (tmp_path / rel).read_bytes() for rel in kept}
    rc = main(["predict", *(a.format(d=tmp_path) for a in argv), "--checkpoint", str(ckpt), "--device", "cpu",
               "--no-flip"])
    err = capsys.readouterr().err
    assert rc == status, err
    errors = [line for line in err.splitlines() if "error" in line]
    if words is None:
        assert not errors, err
    else:
        assert len(errors) == 1 and words in errors[0] and "Traceback" not in err, err
    for rel, data in snapshot.items():
        assert (tmp_path / rel).read_bytes() == data, f"{rel} was changed"


def test_overwrite_writes_the_prediction(ckpt, tmp_path, capsys):
    _photo(tmp_path / "in" / "x.jpg")
    _users_png16(tmp_path / "out" / "x_depth_mm.png")
    rc = main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--overwrite", "--checkpoint",
               str(ckpt), "--device", "cpu", "--no-flip"])
    assert rc == 0, capsys.readouterr().err
    expected = depth_to_mm(DepthEstimator.from_pretrained(ckpt, "cpu", flip=False).predict(tmp_path / "in" / "x.jpg"))
    with Image.open(tmp_path / "out" / "x_depth_mm.png") as im:
        np.testing.assert_array_equal(np.asarray(im), expected)
