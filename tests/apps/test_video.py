"""Videos: frame count, fps, audio, npz contents, per-frame equality with single-image predict, fixed colour
scale, stereo video, and bad inputs (each one line, the batch goes on)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from helpers import tiny_model

from transferdepth import DepthEstimator
from transferdepth.api.predict import colorize
from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint

av = pytest.importorskip("av")

from transferdepth.apps.video import VideoOptions, iter_depth, predict_video  # noqa: E402

FPS = Fraction(12)


def make_video(path, frames=10, h=48, w=64, audio=True, codec="libx264", fmt=None, seed=0):
    """A small clip: a smooth random texture sliding right 2 px per frame; optional 0.9 s AAC tone."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w + 2 * frames, 3)).astype(np.float32)
    base = (base + np.roll(base, 1, 1) + np.roll(base, 1, 0)) / 3
    out = av.open(str(path), "w", format=fmt)
    vs = out.add_stream(codec, rate=FPS)
    vs.width, vs.height = w, h
    vs.pix_fmt = "yuv420p" if codec != "ffv1" else "yuv444p"
    a = out.add_stream("aac", rate=16000) if audio else None
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(base[:, 2 * i:2 * i + w].astype(np.uint8), format="rgb24")
        frame.pts = i
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if a is not None:
        tone = (0.2 * np.sin(np.arange(int(16000 * 0.9)) * 0.05)).astype(np.float32)[None]
        af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for p in list(a.encode(af)) + list(a.encode(None)):
            out.mux(p)
    out.close()
    return path


def streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        return frames, v.average_rate, [s.type for s in c.streams]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def est():
    return DepthEstimator(tiny_model(), "cpu", flip=True)


def test_cli_video_outputs_frames_fps_audio_npz(ckpt, tmp_path, capsys):
    clip = make_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    rc = main(["predict", str(clip), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu",
               "--batch-size", "4", "--format", "png16,stereo"])
    assert rc == 0, capsys.readouterr().err
    frames, rate, kinds = streams(out / "clip.depth.mp4")
    assert len(frames) == 10 and rate == FPS and kinds == ["video", "audio"]
    assert frames[0].shape == (48, 64, 3)
    z = np.load(out / "clip.depth.npz")
    assert sorted(z.files) == ["depth", "fps", "intrinsics", "intrinsics_source", "timestamps"]
    assert z["depth"].dtype == np.float16 and z["depth"].shape == (10, 48, 64)
    assert z["fps"] == 12.0
    np.testing.assert_allclose(z["timestamps"], np.arange(10) / 12.0, atol=1e-9)
    f = 26 * np.hypot(64, 48) / np.hypot(36, 24)  # no EXIF in video frames: the default lens, square pixels
    np.testing.assert_allclose(z["intrinsics"], [[f, 0, 31.5], [0, f, 23.5], [0, 0, 1]])
    assert str(z["intrinsics_source"]).startswith("default 26 mm")
    pngs = sorted((out / "clip.depth_mm").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(10)]
    stereo, srate, skinds = streams(out / "clip.stereo.mp4")
    assert len(stereo) == 10 and srate == FPS and stereo[0].shape == (48, 128, 3) and skinds == ["video", "audio"]


def test_each_frame_equals_single_image_predict(est, tmp_path):
    """Frame i's depth equals DepthEstimator.predict on decoded frame i (what the model saw: lossy encoding
    changed the pixels of the source), within 1e-4 m before float16 storage; the npz adds only float16's
    rounding, at most depth * 2**-11."""
    clip = make_video(tmp_path / "c.mp4", audio=False)
    frames = list(iter_depth(clip, est, batch_size=4))
    assert [i for i, *_ in frames] == list(range(10))
    for _, _, rgb, depth in frames:
        np.testing.assert_allclose(depth, est.predict(rgb), rtol=0, atol=1e-4)
    result = predict_video(clip, est, tmp_path / "o" / "c", VideoOptions(batch_size=4))
    stored = np.load(tmp_path / "o" / "c.depth.npz")["depth"].astype(np.float32)
    exact = np.stack([d for *_, d in frames])
    assert np.all(np.abs(stored - exact) <= exact * 2.0 ** -11)
    assert result.frames == 10 and result.range_m == (float(exact.min()), float(exact.max()))


def test_api_callers_get_the_devices_batch_size_by_default(est, tmp_path):
    """iter_depth and predict_video without a batch size run one frame per forward pass on the CPU (as
    predict does; docs/using.md "Batch size on the CPU"), the GPU's 4 on a CUDA estimator."""
    import torch

    from transferdepth.api.estimator import batch_size_for

    clip = make_video(tmp_path / "c.mp4", audio=False)
    sizes = []

    class Counting:
        device = est.device

        def predict_rgb(self, rgbs):
            sizes.append(len(rgbs))
            return est.predict_rgb(rgbs)

    assert len(list(iter_depth(clip, Counting()))) == 10 and set(sizes) == {1}
    sizes.clear()
    assert predict_video(clip, Counting(), tmp_path / "o" / "c").frames == 10 and set(sizes) == {1}
    sizes.clear()
    list(iter_depth(clip, Counting(), batch_size=4))
    assert sizes == [4, 4, 2]
    gpu = type("Gpu", (), {"device": torch.device("cuda")})()
    assert batch_size_for(gpu) == 4 and batch_size_for(object()) == 1


class ConstantDepth:
    """A predictor (the FramePredictor protocol): frame i of the clip is a flat wall at 1 + 0.5 i metres."""

    def __init__(self):
        self.n = 0

    def predict_rgb(self, rgbs):
        out = []
        for rgb in rgbs:
            out.append(np.full(rgb.shape[:2], 1.0 + 0.5 * self.n, np.float32))
            self.n += 1
        return out


def test_one_colour_scale_for_the_whole_clip(tmp_path):
    clip = make_video(tmp_path / "c.mp4", audio=False)
    result = predict_video(clip, ConstantDepth(), tmp_path / "o" / "c", VideoOptions(batch_size=3))
    assert result.range_m == (1.0, 5.5)
    frames, _, _ = streams(tmp_path / "o" / "c.depth.mp4")
    for i, frame in enumerate(frames):  # per-frame min..max would paint every flat frame the same colour
        expected = colorize(np.full((2, 2), 1.0 + 0.5 * i), "plasma", (1.0, 5.5))[0][0, 0].astype(int)
        assert np.abs(frame.reshape(-1, 3).mean(0) - expected).max() < 8, i


def test_odd_sized_lossless_mkv(tmp_path, est):
    clip = make_video(tmp_path / "odd.mkv", h=47, w=63, audio=False, codec="ffv1", frames=5)
    result = predict_video(clip, est, tmp_path / "o" / "odd", VideoOptions(batch_size=2))
    assert (result.frames, result.width, result.height) == (5, 63, 47)
    frames, _, _ = streams(tmp_path / "o" / "odd.depth.mp4")
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)  # padded by one row / column for H.264
    assert np.load(tmp_path / "o" / "odd.depth.npz")["depth"].shape == (5, 47, 63)


def test_bad_inputs_one_line_each_and_the_batch_goes_on(ckpt, tmp_path, capsys):
    good = make_video(tmp_path / "good.mp4", frames=4)
    junk = tmp_path / "notes.xyz"
    junk.write_text("neither an image nor a video\n")
    audio_only, empty = tmp_path / "voice.mp4", tmp_path / "empty.mkv"
    for path, with_video in ((audio_only, False), (empty, True)):  # empty: a video stream without frames
        out = av.open(str(path), "w")
        if with_video:  # (MP4 drops an empty track; Matroska keeps it)
            vs = out.add_stream("ffv1", rate=FPS)
            vs.width, vs.height, vs.pix_fmt = 16, 16, "yuv420p"
        a = out.add_stream("aac", rate=16000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for p in list(a.encode(af)) + list(a.encode(None)):
            out.mux(p)
        out.close()
    data = make_video(tmp_path / "whole.mp4", frames=10).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    blocked = make_video(tmp_path / "blocked.mp4", frames=3)
    (tmp_path / "out" / "blocked.depth.mp4").mkdir(parents=True)  # the output path is a folder: unwritable
    files = [good, junk, audio_only, empty, truncated, blocked]
    rc = main(["predict", *map(str, files), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
               "--device", "cpu", "--no-flip", "--overwrite"])  # --overwrite: else the folder is refused up front
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("transferdepth: error:")]
    assert rc == 1
    assert (tmp_path / "out" / "good.depth.mp4").is_file() and (tmp_path / "out" / "good.depth.npz").is_file()
    expect = {junk: "neither an image nor a video", audio_only: "no video stream", empty: "no frames",
              truncated: "truncated", blocked: "cannot write"}
    assert len(err) == len(expect)
    for path, words in expect.items():
        line = next(e for e in err if f"error: {path}:" in e)
        assert words in line, line
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind
    rc = main(["predict", str(good), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o2"), "--device", "cpu",
               "--intrinsics", "exif", "--format", "stereo"])
    err = capsys.readouterr().err
    assert rc == 1 and f"error: {good}: no EXIF focal length" in err and "Traceback" not in err
