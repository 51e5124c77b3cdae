"""Engines users can choose (`deploy.engines`): every engine gives the torch engine's metres within 1e-4 m, an
engine that is not installed is one line naming the extra, and `auto` picks the fastest measured, says so,
caches the measurement (written, reused, reset) and picks torch where torch is all there is."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.cli import main
from transferdepth.deploy import engines
from transferdepth.inference.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def small(rgbd_root) -> np.ndarray:
    """A real frame at an odd size (83x61: the network pads and crops)."""
    with Image.open(rgbd_root / "7scenes-redkitchen" / "frame-000000.color.jpg") as im:
        return np.asarray(im.convert("RGB").resize((83, 61), Image.BILINEAR))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "engines.json"
    monkeypatch.setenv(engines.CACHE_ENV, str(path))
    return path


def _equal_to_torch(ckpt, rgb, engine, flips=(True, False)):
    for flip in flips:
        ref = DepthEstimator.from_pretrained(ckpt, device="cpu", flip=flip).predict(rgb)
        assert ref.max() - ref.min() > 0.5  # informative, not a clamped constant
        est = DepthEstimator.from_pretrained(ckpt, engine=engine, threads=1, flip=flip)
        assert est.engine == engine and est.flip is flip
        got = est.predict(rgb)
        assert got.shape == rgb.shape[:2] and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_every_engine_equals_the_torch_engine(ckpt, small, engine):
    if engines.missing(engine):
        pytest.skip(engines.missing(engine))
    _equal_to_torch(ckpt, small, engine)
    with pytest.raises(ValueError, match=f"the {engine} engine's estimator has no checkpoint to save"):
        DepthEstimator.from_pretrained(ckpt, engine=engine).save_pretrained(ckpt.parent / "copy")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_compile_engine_equals_the_torch_engine(ckpt, small, tmp_path):
    """torch.compile takes about a minute per model on a loaded 2-core CPU: one compile (flip on; the mirrored
    image has the same shape). Run in a fresh process, as `predict --engine compile` runs: inductor's compile
    workers segfaulted in the pytest process after ~360 other tests had loaded OpenVINO, onnxruntime, Open3D
    and a browser driver (seen in CI, 2 Dec 2026; alone the same test passes)."""
    if engines.missing("compile"):
        pytest.skip(engines.missing("compile"))
    import subprocess

    np.save(tmp_path / "rgb.npy", small)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from test_engines import _equal_to_torch; "
            "_equal_to_torch(sys.argv[2], np.load(sys.argv[3]), 'compile', flips=(True,)); print('equal')")
    here = str(Path(__file__).resolve().parent)
    result = subprocess.run([sys.executable, "-c", code, here, str(ckpt), str(tmp_path / "rgb.npy")],
                            capture_output=True, text=True, timeout=850,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([here, str(Path(here).parent)])})
    assert result.returncode == 0 and result.stdout.strip().endswith("equal"), result.stderr[-3000:]


def test_an_engine_not_installed_is_one_line_naming_the_extra(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    assert engines.missing("onnx") == "the onnx engine needs onnxruntime: pip install 'transferdepth[export]'"
    with pytest.raises(engines.EngineError, match=r"transferdepth\[export\]"):
        DepthEstimator.from_pretrained(ckpt, engine="onnx")
    assert main(["predict", str(tmp_path), "--checkpoint", str(ckpt), "--engine", "onnx",
                 "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'transferdepth[export]'" in lines[0], lines
    monkeypatch.setattr("transferdepth.deploy.compile_engine.compiler", lambda: None)
    assert "C++ compiler" in engines.missing("compile")
    with pytest.raises(ValueError, match="unknown"):
        engines.check_engine("tensorrt")


def test_auto_with_only_torch_picks_torch_and_says_so(ckpt, small, cache, tmp_path, monkeypatch, capsys):
    real = engines.missing
    monkeypatch.setattr(engines, "missing", lambda n: None if n == "torch" else real(n) or f"{n} not installed")
    monkeypatch.setattr(engines, "measure", lambda *a, **k: pytest.fail("nothing to measure with one engine"))
    est = DepthEstimator.from_pretrained(ckpt, engine="auto")
    err = capsys.readouterr().err
    assert est.engine == "torch" and type(est) is DepthEstimator
    assert "engine auto: torch, the only engine here" in err and "not installed" in err
    assert main(["predict", str(tmp_path / "none"), "--checkpoint", str(ckpt), "--engine", "auto",
                 "--out", str(tmp_path / "out")]) in (1, 2)  # no inputs; the choice is made and said first
    assert "engine auto: torch, the only engine here" in capsys.readouterr().err
    from transferdepth.apps.serve.engine import TorchEngine, load_engine

    assert type(load_engine("auto", ckpt, device="cpu")) is TorchEngine  # serve --engine auto
    assert "engine auto: torch" in capsys.readouterr().err
    assert not cache.exists()


def test_auto_picks_the_fastest_measured_and_caches_it(ckpt, small, cache, monkeypatch, capsys):
    calls = []

    def fake_measure(source, names, size, batch=1, threads=None, rounds=3):
        calls.append((list(names), size))
        ms = {"torch": 50.0, "compile": 40.0, "onnx": 20.0, "openvino": 30.0}
        return {n: ms[n] for n in names}, {n: 0.1 for n in names}, {}

    monkeypatch.setattr(engines, "measure", fake_measure)
    monkeypatch.setattr(engines, "missing", lambda n: None if n in ("torch", "onnx", "openvino") else "absent")
    est = DepthEstimator.from_pretrained(ckpt, engine="auto", input_size=(64, 80))
    err = capsys.readouterr().err
    assert est.engine == "onnx" and calls == [(["torch", "onnx", "openvino"], (64, 80))]
    assert "engine auto: onnx (onnx 20.0 ms, openvino 30.0 ms, torch 50.0 ms" in err and str(cache) in err
    data = json.loads(cache.read_text())  # written
    (entry,) = data["entries"].values()
    assert entry["chosen"] == "onnx" and entry["key"]["size"] == [64, 80]
    assert entry["key"]["model"] == engines.file_hash(engines.model_files(ckpt))
    assert type(est.runner).__name__ == "OnnxRunner" and est.input_size == (64, 80)
    # reused: no second measurement, and it says where the choice came from
    assert engines.choose_engine(ckpt, size=(64, 80)) == "onnx" and len(calls) == 1
    assert "cached in" in capsys.readouterr().err
    # another size is another measurement, kept beside the first
    engines.choose_engine(ckpt, size=(48, 64))
    assert len(calls) == 2 and len(json.loads(cache.read_text())["entries"]) == 2
    # reset: remove the file (or point TRANSFERDEPTH_ENGINE_CACHE elsewhere) and it measures again
    cache.unlink()
    engines.choose_engine(ckpt, size=(64, 80))
    assert len(calls) == 3 and cache.exists()
    # a corrupt cache is measured over, not an error
    cache.write_text("{not json")
    assert engines.choose_engine(ckpt, size=(64, 80)) == "onnx" and len(calls) == 4


def test_auto_really_measures(ckpt, cache, capsys):
    """The real measurement on the tiny model (torch and onnx, tiny size, one round): a choice among them."""
    if engines.missing("onnx"):
        pytest.skip(engines.missing("onnx"))
    chosen = engines.choose_engine(ckpt, size=(32, 48), names=("torch", "onnx"), rounds=1)
    entry = next(iter(json.loads(cache.read_text())["entries"].values()))
    assert chosen == entry["chosen"] == min(entry["ms"], key=entry["ms"].get)
    assert set(entry["ms"]) == {"torch", "onnx"} and all(v > 0 for v in entry["ms"].values())
    assert f"engine auto: {chosen} (" in capsys.readouterr().err


def test_the_cache_lives_under_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(engines.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert engines.cache_path() == tmp_path / "transferdepth" / "engines.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert engines.cache_path() == tmp_path / "home" / ".cache" / "transferdepth" / "engines.json"
    monkeypatch.setenv(engines.CACHE_ENV, str(tmp_path / "x.json"))
    assert engines.cache_path() == tmp_path / "x.json"


def test_auto_on_files_only_considers_engines_that_read_them(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "m.xml").write_text("")
    assert engines.candidates_for(tmp_path / "m.onnx") == ["onnx", "openvino"]
    assert engines.candidates_for(tmp_path / "m.xml") == ["openvino"]
    assert engines.candidates_for(tmp_path) == list(engines.AUTO_CANDIDATES)
