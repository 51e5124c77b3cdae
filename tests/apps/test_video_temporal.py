"""Steady video (`predict --temporal`, apps/temporal.ScaleStabiliser) and phone rotation (display matrix).

References computed here: the stabiliser's scale is the exponential moving average of the per-frame scales
(closed form below); flicker = mean over consecutive frames of |log s_t - log s_(t-1)|, s_t = median of
pred_t / gt_t (docs/3d.md "Steady video"); delta1 = share of pixels with max(p/g, g/p) < 1.25. Rotation:
against PyAV's own `frame.rotation` (FFmpeg's av_display_rotation_get) and PyAV's documented meaning of
`set_display_rotation(degrees, hflip, vflip)` (rotate counter-clockwise, then mirror)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers import tiny_model

from transferdepth.apps.temporal import DEFAULT_STRENGTH, ScaleStabiliser, check_strength, image_shift
from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint

av = pytest.importorskip("av")

from transferdepth.apps.video import (  # noqa: E402
    VideoOptions,
    orient,
    orientation,
    predict_video,
    read_frames,
    rotate_tag_matrix,
)

H, W, N = 32, 40, 24


def scene(n: int = N, seed: int = 0) -> list[np.ndarray]:
    """True depth (metres) of a moving camera: a smooth random surface sliding 1 px per frame to the left
    while the camera approaches it by 0.5 % a frame, and a small object (8x8 px) jumping about."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (H, W + n))
    for _ in range(3):
        base = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1) + np.roll(base, -1, 1)) / 4
    base = 1.0 + 3.0 * (base - base.min()) / np.ptp(base)
    out = []
    for t in range(n):
        g = base[:, t:t + W] * np.exp(-0.005 * t)
        y, x = rng.integers(0, H - 8), rng.integers(0, W - 8)
        g[y:y + 8, x:x + 8] = 0.6
        out.append(g.astype(np.float32))
    return out


def flicker(preds, gts) -> float:
    s = np.log([np.median(p / g) for p, g in zip(preds, gts)])
    return float(np.mean(np.abs(np.diff(s))))


def delta1(preds, gts) -> float:
    return float(np.mean([np.mean(np.maximum(p / g, g / p) < 1.25) for p, g in zip(preds, gts)]))


def test_static_scene_scale_is_the_running_average_of_the_frame_scales():
    """On a static scene with per-frame scale jitter x_t (log), frame t comes out at exactly the scale
    y_t = s y_(t-1) + (1 - s) x_t (y_0 = x_0); a patch whose depth changes from frame to frame (not a
    consistent pixel) does not move it."""
    gt = scene(1)[0]
    x = np.random.default_rng(1).normal(0, 0.1, N)
    stab, y = ScaleStabiliser(0.6), x[0]
    for t in range(N):
        pred = gt * np.float32(np.exp(x[t]))
        pred[:10, :10] = 0.5 + t % 3  # a moving object: ignored
        out = stab(pred)
        y = x[0] if t == 0 else 0.6 * y + 0.4 * x[t]
        np.testing.assert_allclose(out[10:, 10:] / gt[10:, 10:], np.exp(y), rtol=2e-5)
    assert stab.factors[0] == 1.0 and len(stab.factors) == N


def panning(n: int, k: int, h: int = 48, w: int = 64, seed: int = 4):
    """(rgb uint8, depth metres) of a camera panning right k px per frame over a static wall with texture."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (h, w + k * n, 3)).astype(np.uint8)
    wall = np.linspace(1.0, 3.0, w + k * n)[None, :] * (1 + 0.3 * rng.random((h, w + k * n)))
    return [(tex[:, k * t:k * t + w], wall[:, k * t:k * t + w].astype(np.float32)) for t in range(n)]


@pytest.mark.parametrize("dy,dx", [(0, -6), (3, 5), (-4, 0)])
def test_image_shift_finds_a_known_translation(dy, dx):
    big = np.random.default_rng(0).integers(0, 256, (80, 100, 3)).astype(np.uint8)
    prev = big[10:58, 10:74]
    cur = big[10 - dy:58 - dy, 10 - dx:74 - dx]  # cur(y, x) = prev(y - dy, x - dx)
    assert image_shift(prev, cur) == (dy, dx)


def test_panning_camera_scale_is_the_running_average_with_the_frames_given():
    """A camera panning 3 px a frame over a wall: given the frames, every frame comes out at exactly the
    running-average scale (the reference is shifted with the pan); without them the pan leaks into it."""
    frames = panning(10, 3)
    x = np.random.default_rng(6).normal(0, 0.1, 10)
    with_rgb, without, y = ScaleStabiliser(0.6), ScaleStabiliser(0.6), x[0]
    errors = []
    for t, (rgb, gt) in enumerate(frames):
        pred = gt * np.float32(np.exp(x[t]))
        y = x[0] if t == 0 else 0.6 * y + 0.4 * x[t]
        np.testing.assert_allclose(with_rgb(pred, rgb) / gt, np.exp(y), rtol=2e-5)
        errors.append(abs(float(np.log(np.median(without(pred) / gt))) - y))
    assert max(errors) > 1e-3


def test_jittered_moving_clip_flickers_far_less_and_stays_as_accurate():
    """Known scale jitter on a moving camera: flicker down >= 30 % (for the default strength about 75 %),
    delta1 and abs rel not worse by more than 0.01."""
    gts = scene()
    x = np.random.default_rng(2).normal(0, 0.08, N)
    preds = [g * np.float32(np.exp(v)) for g, v in zip(gts, x)]
    stab = ScaleStabiliser()
    steady = [stab(p) for p in preds]
    assert flicker(steady, gts) <= 0.7 * flicker(preds, gts)
    assert flicker(steady, gts) <= 0.4 * flicker(preds, gts)
    assert delta1(steady, gts) >= delta1(preds, gts) - 0.01
    absrel = [float(np.mean([np.mean(np.abs(p - g) / g) for p, g in zip(ps, gts)])) for ps in (preds, steady)]
    assert absrel[1] <= absrel[0] + 0.01
    assert flicker(preds, gts) > 0.05  # the jitter is there to remove


def test_strength_zero_is_per_frame_and_a_cut_restarts():
    gts = scene(6)
    preds = [g * np.float32(1.0 + 0.1 * (t % 2)) for t, g in enumerate(gts)]
    off = ScaleStabiliser(0.0)
    for p in preds:
        np.testing.assert_array_equal(off(p), p)
    stab = ScaleStabiliser(0.9)
    for p in preds:
        stab(p)
    other = np.random.default_rng(5).uniform(0.5, 8.0, (H, W)).astype(np.float32)  # a cut: another scene
    np.testing.assert_array_equal(stab(other), other)
    assert stab.factors[-1] == 1.0
    assert stab(np.full((H, W + 2), 2.0, np.float32)).max() == 2.0  # another frame size: a new reference


@pytest.mark.parametrize("bad", [-0.1, 0.96, 1.0, float("nan"), "x", None])
def test_strength_bounds_one_line(bad):
    with pytest.raises(ValueError, match=r"^temporal strength: expected a number from 0 \(off\) to 0.95") as e:
        check_strength(bad)
    assert "\n" not in str(e.value)
    if bad is not None:  # VideoOptions(temporal=None): off
        with pytest.raises(ValueError, match="^temporal: "):
            VideoOptions(temporal=bad)


def test_strength_bounds_accepted():
    assert check_strength(0) == 0.0 and check_strength("0.95") == 0.95 and DEFAULT_STRENGTH == 0.7


def encode(path, frames, rotation=None, hflip=False, vflip=False, codec="libx264"):
    out = av.open(str(path), "w")
    s = out.add_stream(codec, rate=Fraction(12))
    s.width, s.height = frames[0].shape[1], frames[0].shape[0]
    s.pix_fmt = "yuv420p" if codec != "ffv1" else "bgr0"  # ffv1 in RGB: lossless
    if rotation is not None:
        s.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
    for i, rgb in enumerate(frames):
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        f.pts = i
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode(None):
        out.mux(p)
    out.close()
    return path


class Indexed:
    """A predictor: frame i is flat grey 16 + 18 i; returns true depth i times a known scale jitter."""

    def __init__(self, gts, jitter):
        self.gts, self.jitter = gts, jitter

    def predict_rgb(self, rgbs):
        out = []
        for rgb in rgbs:
            i = int(round((rgb.mean() - 16) / 18))
            out.append(self.gts[i] * np.float32(np.exp(self.jitter[i])))
        return out


def test_predict_video_temporal_end_to_end(tmp_path):
    """The stabiliser on the decode -> predict -> npz path: flicker of the stored depth down >= 30 %."""
    n = 12
    gts = scene(n)
    clip = encode(tmp_path / "c.mp4", [np.full((H, W, 3), 16 + 18 * i, np.uint8) for i in range(n)])
    jitter = np.random.default_rng(3).normal(0, 0.1, n)
    stored = {}
    for name, strength in (("raw", None), ("steady", DEFAULT_STRENGTH)):
        predict_video(clip, Indexed(gts, jitter), tmp_path / name / "c", VideoOptions(batch_size=5, temporal=strength))
        stored[name] = list(np.load(tmp_path / name / "c.depth.npz")["depth"].astype(np.float32))
    assert flicker(stored["raw"], gts) > 0.05
    assert flicker(stored["steady"], gts) <= 0.7 * flicker(stored["raw"], gts)
    assert delta1(stored["steady"], gts) >= delta1(stored["raw"], gts) - 0.01


def test_cli_temporal_and_bad_strength(tmp_path, capsys, monkeypatch):
    ckpt = save_checkpoint(tiny_model(), tmp_path / "model")
    clip = encode(tmp_path / "c.mp4", [np.full((H, W, 3), 40 * i, np.uint8) for i in range(4)])
    for bad in ("1.5", "-1", "nan"):
        rc = main(["predict", str(clip), "--checkpoint", str(ckpt), "--out", str(tmp_path / "x"),
                   "--temporal-strength", bad])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and "--temporal-strength: expected a number from 0" in err, err
        assert not (tmp_path / "x").exists()  # refused before any work
    import transferdepth.apps.video as video

    made = []

    class Spy(ScaleStabiliser):
        def __post_init__(self):
            made.append(self)
            super().__post_init__()

    monkeypatch.setattr(video, "ScaleStabiliser", Spy)
    for flags, strength in ((["--temporal"], DEFAULT_STRENGTH), (["--temporal-strength", "0.4"], 0.4)):
        rc = main(["predict", str(clip), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cpu",
                   "--no-flip", "--overwrite", *flags])
        assert rc == 0, capsys.readouterr().err
        assert made[-1].strength == strength and len(made[-1].factors) == 4
        assert np.load(tmp_path / "o" / "c.depth.npz")["depth"].shape == (4, H, W)
    assert main(["predict", str(clip), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--overwrite",
                 "--device", "cpu"]) == 0
    assert len(made) == 2  # off without the flags


# --- rotation -------------------------------------------------------------------------------------------------

def pattern(h=48, w=64):
    """An image with no symmetry: a horizontal ramp in red, a vertical ramp in green, a white corner block."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w)[None, :]
    img[..., 1] = np.linspace(0, 255, h)[:, None]
    img[:12, :16] = 255
    return img


CASES = [(0, False, False), (90, False, False), (-90, False, False), (180, False, False),
         (0, True, False), (0, False, True), (90, True, False), (-90, True, False)]


@pytest.mark.parametrize("degrees,hflip,vflip", CASES)
def test_phone_rotation_applied_before_prediction(tmp_path, degrees, hflip, vflip):
    """A clip written with PyAV's display matrix comes out as PyAV documents it (rotated counter-clockwise
    by `degrees`, then mirrored), and for pure rotations as FFmpeg's own angle (`frame.rotation`) says."""
    src = pattern()
    clip = encode(tmp_path / "r.mkv", [src] * 2, degrees, hflip, vflip, codec="ffv1")  # lossless
    frames = [rgb for _, rgb in read_frames(clip)]
    expected = np.rot90(src, degrees // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    np.testing.assert_array_equal(frames[0], expected)
    if not (hflip or vflip):
        with av.open(str(clip)) as c:
            rotation = next(c.decode(video=0)).rotation
        np.testing.assert_array_equal(frames[0], np.rot90(src, round(rotation / 90)))
    assert [rgb for _, rgb in read_frames(clip, upright=False)][0].shape == src.shape


def test_predict_video_of_a_portrait_phone_clip_is_upright(tmp_path):
    """An H.264 clip stored landscape with a -90 degree display matrix (a phone held upright): the network
    sees portrait frames, the npz and the colour video are portrait, and the result says so."""
    src = pattern()
    clip = encode(tmp_path / "phone.mp4", [src] * 3, rotation=-90)
    seen = []

    class Record:
        def predict_rgb(self, rgbs):
            seen.extend(rgbs)
            return [np.full(r.shape[:2], 2.0, np.float32) for r in rgbs]

    result = predict_video(clip, Record(), tmp_path / "o" / "phone", VideoOptions(batch_size=2))
    upright = np.rot90(src, -1).astype(int)  # turned clockwise
    assert seen[0].shape == (64, 48, 3) and np.abs(seen[0].astype(int) - upright).mean() < 4
    assert (result.width, result.height) == (48, 64)
    assert result.notes[0] == "frames rotated 90 degrees clockwise (display matrix)"
    assert np.load(tmp_path / "o" / "phone.depth.npz")["depth"].shape == (3, 64, 48)
    with av.open(str(tmp_path / "o" / "phone.depth.mp4")) as c:
        assert next(c.decode(video=0)).to_ndarray(format="rgb24").shape == (64, 48, 3)


def test_orientation_of_constructed_matrices():
    """16.16 fixed point as in the file; the old `rotate` tag (degrees clockwise); angles that are not a
    multiple of 90 degrees, degenerate and wrong-sized matrices."""
    one = 1 << 16
    img = pattern(6, 8)
    assert orientation([0, one, 0, -one, 0, 0, 0, 0, 1 << 30]) == (True, False, True)  # 90 clockwise
    np.testing.assert_array_equal(orient(img, orientation([0, one, 0, -one, 0, 0, 0, 0, 1 << 30])), np.rot90(img, -1))
    for cw in (0, 90, 180, 270, -90):
        np.testing.assert_array_equal(orient(img, orientation(rotate_tag_matrix(cw))), np.rot90(img, -cw // 90))
    assert orientation(rotate_tag_matrix(30)) is None
    assert orientation([0] * 9) is None
    with pytest.raises(ValueError, match="9 numbers"):
        orientation([1, 0, 0, 1])
    assert orient(img, None) is img
