"""Checkpoints by name (`org/name[@rev]`) through huggingface_hub's real `snapshot_download`, offline, from a
Hub cache this test lays out in the library's own layout (models--org--name/blobs, snapshots/<commit>/...,
refs/<branch>). HF_HUB_OFFLINE=1 and an unreachable HF_ENDPOINT: no test touches the network."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model
from PIL import Image

from transferdepth.api.estimator import DepthEstimator
from transferdepth.cli import main
from transferdepth.inference import hub
from transferdepth.inference.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)

huggingface_hub = pytest.importorskip("huggingface_hub")

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens there: a request would fail, never reach the Hub


def add_to_hub_cache(cache: Path, repo: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)
                     ) -> Path:
    """Lay out `files` as huggingface_hub caches a download of `repo` at `commit`: contents in blobs/ (named
    by their sha256), snapshots/<commit>/<file> symlinks to them, refs/<branch> holding the commit."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    (root / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (root / "refs" / ref).write_text(commit)
    return snap


def checkpoint_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (WEIGHTS_FILE, CONFIG_FILE)}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache, offline: env vars for anything started from here, the library's constants (read
    when it was imported) for this process."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    for k, v in {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                 "HF_ENDPOINT": UNREACHABLE}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def two_models(tmp_path):
    """Two tiny checkpoints with different weights (main and v1 of the same repo)."""
    a = save_checkpoint(tiny_model(seed=0), tmp_path / "a", meta={"note": "A"})
    b = save_checkpoint(tiny_model(seed=1), tmp_path / "b", meta={"note": "B"})
    return a, b


def _same_weights(m1, m2) -> bool:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_a_name_loads_from_the_hub_cache_offline_with_revisions(hub_cache, two_models):
    a, b = two_models
    add_to_hub_cache(hub_cache, "org/tiny", COMMIT_A, checkpoint_files(a) | {"README.md": b"# tiny\n"})
    add_to_hub_cache(hub_cache, "org/tiny", COMMIT_B, checkpoint_files(b), refs=("v1",))
    ref_a, ref_b = load_checkpoint(a), load_checkpoint(b)
    assert not _same_weights(ref_a, ref_b)

    est = DepthEstimator.from_pretrained("org/tiny", device="cpu")
    assert _same_weights(est.model, ref_a)
    assert Path(est.source) == hub_cache / "models--org--tiny" / "snapshots" / COMMIT_A
    assert _same_weights(DepthEstimator.from_pretrained("org/tiny", device="cpu", revision="v1").model, ref_b)
    assert _same_weights(load_checkpoint("org/tiny@v1"), ref_b)
    assert _same_weights(load_checkpoint(f"org/tiny@{COMMIT_A}"), ref_a)
    assert read_config("org/tiny@v1")["meta"] == {"note": "B"}
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(est.predict(rgb), DepthEstimator(ref_a, device="cpu").predict(rgb))


def test_only_the_checkpoint_files_are_asked_for(hub_cache, two_models, monkeypatch):
    add_to_hub_cache(hub_cache, "org/tiny", COMMIT_A, checkpoint_files(two_models[0]))
    real, calls = huggingface_hub.snapshot_download, []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    load_checkpoint("org/tiny")
    (args, kwargs), = calls
    assert args == ("org/tiny",) and kwargs["revision"] is None
    assert sorted(kwargs["allow_patterns"]) == sorted([WEIGHTS_FILE, CONFIG_FILE, "README.md"])
    assert {WEIGHTS_FILE, CONFIG_FILE} <= set(hub.CHECKPOINT_FILES)


def test_a_local_folder_of_that_name_wins(hub_cache, two_models, tmp_path, monkeypatch):
    a, b = two_models
    add_to_hub_cache(hub_cache, "org/tiny", COMMIT_A, checkpoint_files(a))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    save_checkpoint(load_checkpoint(b), tmp_path / "org" / "tiny")
    assert _same_weights(DepthEstimator.from_pretrained("org/tiny", device="cpu").model, load_checkpoint(b))
    with pytest.raises(CheckpointError, match="a local folder has no revisions"):
        DepthEstimator.from_pretrained("org/tiny", revision="v1")


def _one_line(call, *needles):
    with pytest.raises(CheckpointError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_a_name_that_is_neither_says_both_tries(hub_cache):
    _one_line(lambda: load_checkpoint("org/missing"), "org/missing: no such folder here",
              "Hugging Face Hub model org/missing", "offline (HF_HUB_OFFLINE=1)", str(hub_cache))
    _one_line(lambda: DepthEstimator.from_pretrained("org/missing", revision="v2"), "org/missing@v2")
    _one_line(lambda: load_checkpoint("no/such/dir"), "no/such/dir: no such checkpoint", "org/name")
    _one_line(lambda: load_checkpoint("org/a@v1", ), "org/a@v1")
    _one_line(lambda: DepthEstimator.from_pretrained("org/a@v1", revision="v2"), "two revisions")


def test_a_repo_that_is_not_a_transferdepth_checkpoint_is_one_line(hub_cache, two_models):
    add_to_hub_cache(hub_cache, "org/readme-only", COMMIT_A, {"README.md": b"# nothing\n"})
    _one_line(lambda: load_checkpoint("org/readme-only"), "org/readme-only", "has no config.json")
    add_to_hub_cache(hub_cache, "org/dpt", COMMIT_A, {"config.json": b'{"model_type": "dpt"}',
                                                      "model.safetensors": b"x"})
    _one_line(lambda: DepthEstimator.from_pretrained("org/dpt"), "org/dpt",
              "not a transferdepth checkpoint's (model_type 'dpt'")
    files = checkpoint_files(two_models[0])
    add_to_hub_cache(hub_cache, "org/no-weights", COMMIT_A, {"config.json": files["config.json"]})
    _one_line(lambda: load_checkpoint("org/no-weights"), "org/no-weights", "has no model.safetensors")


def test_without_huggingface_hub_a_name_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    _one_line(lambda: load_checkpoint("org/tiny"), "pip install 'transferdepth[hub]'")


def test_every_command_takes_a_name(hub_cache, two_models, tmp_path, capsys):
    """predict, export, evaluate, the ONNX engine and --init-checkpoint (train) all read org/name."""
    add_to_hub_cache(hub_cache, "org/tiny", COMMIT_A, checkpoint_files(two_models[0]))
    img = tmp_path / "room.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(img)
    assert main(["predict", str(img), "--checkpoint", "org/tiny", "--out", str(tmp_path / "p"),
                 "--progress", "none"]) == 0
    assert (tmp_path / "p" / "room_depth_mm.png").is_file()
    assert main(["export", "--checkpoint", "org/tiny@main", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["evaluate", "--checkpoint", "org/tiny", "--data", "procedural:n=2&seed=0&height=64&width=64",
                 "--protocol", "eigen", "--crop", "full"]) == 0
    onnx = DepthEstimator.from_onnx("org/tiny")
    rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ref = DepthEstimator.from_pretrained("org/tiny", device="cpu")
    np.testing.assert_allclose(onnx.predict(rgb), ref.predict(rgb), atol=1e-3)
    assert main(["train", "--out", str(tmp_path / "run"), "--init-checkpoint", "org/tiny", "--encoder", "mobilenetv2",
                 "--train-data", "procedural:n=4&seed=0&height=64&width=64", "--height", "64", "--width", "64",
                 "--batch-size", "2", "--max-steps", "1", "--num-workers", "0", "--tensorboard", "false",
                 "--progress", "none"]) == 0
    assert read_config(tmp_path / "run" / "checkpoint")["meta"]["train_config"]["init_checkpoint"] == "org/tiny"
    assert main(["predict", str(img), "--checkpoint", "org/nothing", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "org/nothing: no such folder here" in err and "Hugging Face Hub" in err


def test_predict_by_name_in_a_fresh_process_offline(hub_cache, two_models, tmp_path):
    """The whole path as a user runs it: a new process whose environment says offline + where the cache is."""
    add_to_hub_cache(hub_cache, "org/tiny", COMMIT_A, checkpoint_files(two_models[0]))
    img = tmp_path / "room.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(img)
    r = subprocess.run([sys.executable, "-m", "transferdepth", "predict", str(img), "--checkpoint", "org/tiny",
                        "--out", str(tmp_path / "out"), "--format", "npy"], capture_output=True, text=True,
                       env=os.environ | {"HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    depth = np.load(tmp_path / "out" / "room_depth_m.npy")
    ref = DepthEstimator(load_checkpoint(two_models[0]), device="cpu").predict(np.zeros((32, 48, 3), np.uint8))
    np.testing.assert_allclose(depth, ref, atol=1e-5)
