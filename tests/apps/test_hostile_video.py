"""Videos as a hostile (or unlucky) user gives them to `transferdepth predict`: each case a row of a table
(the clip, the arguments, the exit status, words in the one-line error, what must not be left in --out), so
the next round adds rows, not files. Then what a row cannot hold: presentation times of a variable frame
rate, NTSC's 30000/1001 fps, and the options a video must honour (--range, --stereo, --baseline)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers import tiny_model

from transferdepth.cli import main
from transferdepth.geometry.camera import default_intrinsics
from transferdepth.geometry.stereo import StereoOptions, stereo_image
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.inference.imageio import colorize

av = pytest.importorskip("av")

from transferdepth.apps.video import iter_depth  # noqa: E402

H, W = 48, 64


def clip(path, frames=10, rate=Fraction(12), pts=None):
    """An intra-friendly MPEG-4 clip (no B-frames: decode order = display order) with its index (moov) at
    the front, so cutting the file's tail drops whole frames; `pts` in units of 1/rate (default 0, 1, ...)."""
    out = av.open(str(path), "w", options={"movflags": "faststart"})
    vs = out.add_stream("mpeg4", rate=rate)
    vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
    if pts is not None:
        vs.time_base = 1 / rate
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W + 2 * frames, 3)).astype(np.float32)
    base = (base + np.roll(base, 1, 1) + np.roll(base, 1, 0)) / 3
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(base[:, 2 * i:2 * i + W].astype(np.uint8), format="rgb24")
        frame.pts = i if pts is None else pts[i]
        if pts is not None:
            frame.time_base = 1 / rate
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    out.close()
    return path


def cut_before_frame(path, keep: int):
    """Cut the file at the first byte of frame `keep`: frames 0..keep-1 stay whole, the header still
    announces them all."""
    with av.open(str(path)) as c:
        pos = [p.pos for p in c.demux(c.streams.video[0]) if p.size][keep]
    path.write_bytes(path.read_bytes()[:pos])
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


def _whole(p):
    return clip(p)


# (id, clip maker, arguments, exit status, words in the one error line, names that must not be in --out)
CASES = [
    ("truncated-png16-leaves-no-frames", lambda p: cut_before_frame(clip(p), 4), ["--format", "png16"], 1,
     "truncated: decoded 4 of the 10 frames", ["c.depth_mm", "c.depth.mp4", "c.depth.npz"]),
    ("one-frame-short-is-reported", lambda p: cut_before_frame(clip(p), 9), [], 1,
     "truncated: decoded 9 of the 10 frames", ["c.depth.mp4", "c.depth.npz"]),
    ("ply-refused-before-work", _whole, ["--format", "ply,color"], 2, "--format ply: not written for videos",
     ["c.depth.mp4", "c.depth.npz"]),
    ("stereo-and-png16-still-fine", _whole, ["--format", "png16,stereo,color"], 0, None, []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_video(ckpt, tmp_path, capsys, case):
    _, make, extra, status, words, absent = case
    source = make(tmp_path / "c.mp4")
    out = tmp_path / "out"
    rc = main(["predict", str(source), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
               "--no-flip", *extra])
    err = capsys.readouterr().err
    assert rc == status, err
    errors = [line for line in err.splitlines() if "error" in line]
    if words is None:
        assert not errors, err
    else:
        assert len(errors) == 1 and words in errors[0] and "Traceback" not in err, err
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not set(absent) & set(left), left
    assert not [n for n in left if n.startswith(".")], left  # no temporary file or folder left behind


def test_existing_frames_folder_is_replaced_whole_only_with_overwrite(ckpt, tmp_path, capsys):
    source = clip(tmp_path / "c.mp4", frames=4)
    stale = tmp_path / "out" / "c.depth_mm"
    stale.mkdir(parents=True)
    (stale / "000009.png").write_bytes(b"an older, longer run")
    argv = ["predict", str(source), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--device", "cpu",
            "--no-flip", "--format", "png16"]
    assert main(argv) == 2 and "c.depth_mm exists already" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in stale.iterdir()) == [f"{i:06d}.png" for i in range(4)]


# --- what a row cannot hold ---------------------------------------------------------------------------

class Flat:
    """A predictor: every frame a flat wall at 3 m (what is predicted does not matter here)."""

    def predict_rgb(self, rgbs):
        return [np.full(rgb.shape[:2], 3.0, np.float32) for rgb in rgbs]


def test_timestamps_are_the_frames_presentation_times(tmp_path):
    """A variable frame rate: frame i's timestamp is its pts x time base, not i / rate."""
    pts = [0, 1, 3, 4, 7, 8, 12, 13, 14, 20]
    source = clip(tmp_path / "vfr.mp4", pts=pts)
    got = [t for _, t, _, _ in iter_depth(source, Flat(), batch_size=4)]
    np.testing.assert_allclose(got, np.array(pts) / 12.0, atol=1e-9)


def test_ntsc_rate_is_kept_exactly(ckpt, tmp_path, capsys):
    source = clip(tmp_path / "ntsc.mp4", frames=6, rate=Fraction(30000, 1001))
    out = tmp_path / "out"
    rc = main(["predict", str(source), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu", "--no-flip"])
    assert rc == 0, capsys.readouterr().err
    z = np.load(out / "ntsc.depth.npz")
    assert z["fps"] == 30000 / 1001  # not 30
    np.testing.assert_allclose(z["timestamps"], np.arange(6) * 1001 / 30000, atol=1e-6)
    with av.open(str(out / "ntsc.depth.mp4")) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)


def _decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(c.streams.video[0])]


def test_range_is_honoured_for_videos(ckpt, tmp_path, capsys):
    """--range 0,20: the colour video is the npz depth coloured over 0..20 m, not over the clip's own range."""
    source = clip(tmp_path / "c.mp4", frames=4)
    out = tmp_path / "out"
    rc = main(["predict", str(source), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
               "--no-flip", "--range", "0,20"])
    assert rc == 0, capsys.readouterr().err
    depth = np.load(out / "c.depth.npz")["depth"].astype(np.float32)
    frames = _decoded(out / "c.depth.mp4")
    own = (float(depth.min()), float(depth.max()))
    for d, frame in zip(depth, frames):
        fixed = np.abs(frame - colorize(d, "plasma", (0.0, 20.0))[0]).mean()
        clip_own = np.abs(frame - colorize(d, "plasma", own)[0]).mean()
        assert fixed < 6 and clip_own > 3 * fixed, (fixed, clip_own)


def test_stereo_layout_and_baseline_are_honoured_for_videos(ckpt, tmp_path, capsys):
    """--stereo tab --baseline 0.4 --convergence 3: left over right (W x 2H), the parallax of a 0.4 m
    baseline (the default 0.065 m would be 6x smaller), against stereo_image on the same frames."""
    source = clip(tmp_path / "c.mp4", frames=3)
    out = tmp_path / "out"
    rc = main(["predict", str(source), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
               "--no-flip", "--format", "stereo", "--stereo", "tab", "--baseline", "0.4", "--convergence", "3"])
    assert rc == 0, capsys.readouterr().err
    stereo = _decoded(out / "c.stereo.mp4")
    depth = np.load(out / "c.depth.npz")["depth"].astype(np.float32)
    rgbs = _decoded(source)
    fx = default_intrinsics(W, H).fx
    assert stereo[0].shape == (2 * H, W, 3)
    for rgb, d, frame in zip(rgbs, depth, stereo):
        rgb = rgb.astype(np.uint8)
        asked = np.abs(frame - stereo_image(rgb, d, fx, StereoOptions("tab", 0.4, 3.0))).mean()
        default = np.abs(frame - stereo_image(rgb, d, fx, StereoOptions("tab", 0.065, 3.0))).mean()
        assert asked < 0.6 * default, (asked, default)
