"""`torchrun ... -m transferdepth predict`: inputs shared out between processes, every output once, one
summary; `--resume` after a killed run (any number of processes) and the helpers behind it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.api.predict import output_paths, remove_stale_temps, unfinished
from transferdepth.cli import main
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.inference.distributed import gather, shard

N_IMAGES = 20
FORMATS = ("png16", "npy")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """20 random 64x48 PNGs, img00.png ... img19.png."""
    folder = tmp_path_factory.mktemp("in")
    for i in range(N_IMAGES):
        rgb = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def reference(ckpt, images) -> dict[str, np.ndarray]:
    """Each image's depth (metres) from one in-process estimator, flip off as the runs below."""
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False)
    return {p.stem: est.predict(p) for p in sorted(images.glob("*.png"))}


def expected_names() -> set[str]:
    return {p.name for i in range(N_IMAGES) for p in output_paths(Path(f"img{i:02d}"), FORMATS)}


def torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
            "-m", "transferdepth", "predict", *args]


def predict_args(ckpt, images, out, *extra: str, paths: tuple[Path, ...] = ()) -> list[str]:
    return [str(images), *map(str, paths), "--checkpoint", str(ckpt), "--out", str(out), "--format", ",".join(FORMATS),
            "--no-flip", "--device", "cpu", "--progress", "none", *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(cmd: list[str], cwd: Path, rc: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert out.returncode == rc, f"exit {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


def summary_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "inputs done" in line]


def check_outputs_match(out: Path, reference: dict[str, np.ndarray]) -> None:
    """Exactly the expected files (each input's png16 and npy once, nothing else, no temporaries), each
    equal to the in-process prediction of its own input (png16: millimetres, rounded)."""
    assert sorted(os.listdir(out)) == sorted(expected_names())
    for stem, depth in reference.items():
        np.testing.assert_allclose(np.load(out / f"{stem}_depth_m.npy"), depth, rtol=1e-5, atol=1e-5)
        mm = np.asarray(Image.open(out / f"{stem}_depth_mm.png")).astype(np.float64)
        np.testing.assert_allclose(mm, np.round(depth * 1000.0), atol=1.0)


@pytest.mark.timeout(300)
def test_two_processes_write_every_output_once_with_one_summary(ckpt, images, reference, tmp_path):
    """20 images and 3 bad inputs (after the images: one truncated PNG for each process, a missing file):
    the images' outputs once each, one summary naming each failure once, exit 1 (a process's failure)."""
    out = tmp_path / "out"
    bad = [tmp_path / "bad1.png", tmp_path / "bad2.png"]
    for p in bad:
        p.write_bytes((images / "img00.png").read_bytes()[:60])
    result = run(torchrun(2, *predict_args(ckpt, images, out, paths=(*bad, tmp_path / "missing.png"))), tmp_path,
                 rc=1)  # torchrun's own status: 1 when a process exits non-zero
    check_outputs_match(out, reference)
    total = N_IMAGES + 3
    assert summary_lines(result.stdout) == [f"{N_IMAGES} of {total} inputs done, 2 processes, outputs in {out}"]
    failed = result.stderr[result.stderr.index(f"3 of {total} inputs failed:"):].splitlines()[1:4]
    assert sorted(line.split(":")[0].strip() for line in failed) == sorted(map(str, [*bad, tmp_path / "missing.png"]))
    assert result.stderr.count("inputs failed:") == 1


def complete_stems(out: Path) -> set[str]:
    return {f"img{i:02d}" for i in range(N_IMAGES)
            if all(p.exists() for p in output_paths(out / f"img{i:02d}", FORMATS))}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc): torchrun starts its workers in sessions of their own, so
    killing torchrun's process group would leave them running."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def kill_after_first_outputs(cmd: list[str], out: Path, cwd: Path, n_first: int = 2) -> None:
    """Start torchrun `cmd` and, as soon as `n_first` inputs have all their outputs, SIGKILL it and every
    process below it at once (stopped first, so none reacts to another's death): a machine or job killed."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    pids = [proc.pid]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(complete_stems(out)) >= n_first:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before it could be killed (exit {proc.returncode}): " \
                                    f"{proc.stderr.read()[-3000:] if proc.stderr else ''}"
    finally:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            pids = [proc.pid, *descendants(proc.pid)] if sig == signal.SIGSTOP else pids
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        deadline = time.monotonic() + 30
        while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc (Linux)")
def test_killed_run_resumed_with_other_process_count_ends_with_every_output_once(ckpt, images, reference,
                                                                                tmp_path):
    """2 processes SIGKILLed after their first outputs (the network sees 240x320, so the rest takes seconds);
    an input left with one of its two files and temporaries are added by hand; `--resume` on 3 processes
    writes exactly the missing inputs, keeps the complete ones untouched, removes the temporaries."""
    out = tmp_path / "out"
    kill_after_first_outputs(torchrun(2, *predict_args(ckpt, images, out, "--input-size", "240x320")), out,
                             tmp_path)
    done_before = complete_stems(out)
    assert 2 <= len(done_before) < N_IMAGES
    half = sorted(done_before)[0]  # a half-finished input: its png16 there, its npy not
    (out / f"{half}_depth_m.npy").unlink()
    done_before.discard(half)
    planted = [out / f".{half}_depth_m.npy.k2x9_q0a.tmp", out / ".img19_depth_mm.png.abcdefgh.tmp"]
    for p in planted:
        p.write_bytes(b"partial")
    foreign = out / ".notes.abcdefgh.tmp"  # not an output's temporary: left alone
    foreign.write_bytes(b"mine")
    inodes = {p.name: p.stat().st_ino for s in done_before for p in output_paths(out / s, FORMATS)}

    result = run(torchrun(3, *predict_args(ckpt, images, out, "--input-size", "240x320", "--resume")), tmp_path)

    assert foreign.read_bytes() == b"mine"
    foreign.unlink()
    assert not any(p.exists() for p in planted)
    est = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=False, input_size=(240, 320))
    check_outputs_match(out, {p.stem: est.predict(p) for p in sorted(images.glob("*.png"))})
    assert {name: (out / name).stat().st_ino for name in inodes} == inodes  # complete inputs not written again
    lines = summary_lines(result.stdout)
    assert len(lines) == 1, result.stdout
    print(f"killed after {len(done_before) + 1} complete inputs (one then made half-finished); resumed: {lines[0]}")
    m = re.fullmatch(r"(\d+) of (\d+) inputs done, (\d+) skipped \(outputs there already\), 3 processes, "
                     r"outputs in (.+)", lines[0])
    assert m, lines[0]
    done, total, skipped = int(m[1]), int(m[2]), int(m[3])
    assert (total, skipped, done) == (N_IMAGES, len(done_before), N_IMAGES - len(done_before))


# --- the pieces, in one process --------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 7, 25])
def test_shard_gives_every_item_to_exactly_one_rank(world):
    items = list(range(20))
    shares = [shard(items, r, world) for r in range(world)]
    assert sorted(x for s in shares for x in s) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [shard(items, r, world) for r in range(world)]  # the same list, the same shares
    with pytest.raises(ValueError, match="rank 2 outside"):
        shard(items, 2, 2)


def test_gather_without_torchrun_is_own_value():
    assert gather({"done": 3}) == [{"done": 3}]


def test_unfinished_and_stale_temporaries(tmp_path):
    items = [(Path(f"/in/{s}.png"), Path(s)) for s in ("a", "b", "c")]
    outputs = lambda base: output_paths(base, FORMATS)  # noqa: E731
    for s in ("a", "b"):
        (tmp_path / f"{s}_depth_mm.png").write_bytes(b"x")
    (tmp_path / "a_depth_m.npy").write_bytes(b"x")
    ours = [".a_depth_m.npy.abcdefgh.tmp", ".c_depth_mm.png.0123_xyz.tmp", ".c.q1w2e3r4.f16",
            ".c_depth_mm.png.abcdefgh.old"]
    theirs = [".d_depth_mm.png.abcdefgh.tmp", ".a_depth_m.npy.abcdefgh.txt", ".c.f16.abcdefgh.tmp",
              ".a_depth_mm.png.toolongname.tmp", "c_depth_mm.png.abcdefgh.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"t")
    (tmp_path / ".b_depth_m.npy.zzzzzzzz.tmp").mkdir()  # a folder's temporary (atomic_folder)
    (tmp_path / ".b_depth_m.npy.zzzzzzzz.tmp" / "000000.png").write_bytes(b"t")

    assert unfinished(items, tmp_path, outputs) == items[1:]
    assert sorted(os.listdir(tmp_path)) == sorted(["a_depth_mm.png", "a_depth_m.npy", "b_depth_mm.png"] + theirs)
    assert remove_stale_temps([(tmp_path / "c", outputs(tmp_path / "c"))]) == 0


def test_resume_in_one_process_skips_complete_inputs(ckpt, images, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", *predict_args(ckpt, images, out)]) == 0
    capsys.readouterr()
    for name in ("img03_depth_m.npy", "img07_depth_mm.png", "img08_depth_mm.png", "img08_depth_m.npy"):
        (out / name).unlink()
    kept = (out / "img00_depth_mm.png").stat().st_ino
    assert main(["predict", *predict_args(ckpt, images, out, "--resume")]) == 0
    assert summary_lines(capsys.readouterr().out) == [
        f"3 of {N_IMAGES} inputs done, {N_IMAGES - 3} skipped (outputs there already), outputs in {out}"]
    check_outputs_match(out, reference)
    assert (out / "img00_depth_mm.png").stat().st_ino == kept


def test_resume_with_overwrite_is_refused(ckpt, images, tmp_path, capsys):
    assert main(["predict", *predict_args(ckpt, images, tmp_path / "out", "--resume", "--overwrite")]) == 2
    assert "--resume and --overwrite: choose one" in capsys.readouterr().err


def tiny_video(path: Path, frames: int = 3) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            rgb = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            c.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(stream.encode(None))
    return path


def test_resume_skips_complete_videos_and_clears_their_leftovers(ckpt, tmp_path, capsys):
    """A video is one item: complete (its .depth.mp4 and .depth.npz there) it is skipped; with its npz
    missing it is predicted again, and the raw frames and temporaries a killed run left beside it go."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        tiny_video(videos / name)
    out = tmp_path / "out"
    args = ["predict", str(videos), "--checkpoint", str(ckpt), "--out", str(out), "--no-flip", "--device", "cpu",
            "--progress", "none"]
    assert main(args) == 0
    (out / "b.depth.npz").unlink()
    leftovers = [out / ".b.k2x9q0a1.f16", out / ".b.depth.npz.abcdefgh.tmp"]
    for p in leftovers:
        p.write_bytes(b"partial")
    kept = {name: (out / name).stat().st_ino for name in ("a.depth.mp4", "a.depth.npz")}
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert summary_lines(capsys.readouterr().out) == [
        f"1 of 2 inputs done, 1 skipped (outputs there already), outputs in {out}"]
    assert sorted(os.listdir(out)) == ["a.depth.mp4", "a.depth.npz", "b.depth.mp4", "b.depth.npz"]
    assert {name: (out / name).stat().st_ino for name in kept} == kept
    assert np.load(out / "b.depth.npz")["depth"].shape[0] == 3
