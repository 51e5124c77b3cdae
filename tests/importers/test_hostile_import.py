"""Hostile imports: a DenseDepth .h5 whose graph or weights are not DenseDepth's, and `--out` folders that
hold a checkpoint or someone else's files. One row per case; each is refused in one line (exit 2) and
leaves what was in `--out` as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_import_densedepth import _variant, write_keras_h5

from transferdepth.cli import main
from transferdepth.importers import ModelImportError, import_densedepth
from transferdepth.inference.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from transferdepth.models import create_model


@pytest.fixture(scope="module")
def torch_src():
    """A random densenet169 DepthNet, decoder width 64/1664 (a small file), LeakyReLU after convA."""
    torch.manual_seed(0)
    return create_model("densenet169", 64 / 1664, decoder_act_a=True, bottleneck_relu=True, input_norm="none").eval()


@pytest.fixture(scope="module")
def good_h5(torch_src, tmp_path_factory):
    return write_keras_h5(tmp_path_factory.mktemp("dd") / "good.h5", torch_src, act_a=True)


def _set(layer: str, var: str, value: float):
    def edit(f):
        ds = f["model_weights"][layer][f"{layer}/{var}:0"]
        arr = ds[()]
        arr.flat[arr.size // 2] = value
        ds[...] = arr
    return edit


# (case, how the file differs: ("insert", after, class) | ("weight", layer, var, value), message fragment)
BAD_FILES = [
    ("lambda in the decoder", ("insert", "up2_concat", "Lambda"), "layer 'extra_1' (Lambda) that DenseDepth's"),
    ("lambda after conv2", ("insert", "conv2", "Lambda"), "'extra_1' (Lambda)"),
    ("dropout before conv3", ("insert", "up4_convB", "Dropout"), "'extra_1'"),
    ("activation in the encoder", ("insert", "conv3_block2_1_relu", "Activation"), "'extra_1' (Activation)"),
    ("lambda on a skip", ("insert", "pool1", "Lambda"), "'extra_1' (Lambda)"),
    ("NaN decoder kernel", ("weight", "up2_convA", "kernel", np.nan), "layer 'up2_convA' kernel holds NaN"),
    ("inf BatchNorm variance", ("weight", "conv1/bn", "moving_variance", np.inf),
     "layer 'conv1/bn' moving_variance holds NaN or infinite"),
    ("-inf bias", ("weight", "conv3", "bias", -np.inf), "layer 'conv3' bias holds NaN or infinite"),
]


@pytest.mark.parametrize("case,change,message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_file_that_is_not_exactly_densedepth_is_refused(case, change, message, torch_src, good_h5, tmp_path,
                                                         capsys):
    if change[0] == "insert":
        path = write_keras_h5(tmp_path / "x.h5", torch_src, act_a=True, insert=change[1:])
    else:
        path = _variant(good_h5, tmp_path, "x.h5", _set(*change[1:]))
    with pytest.raises(ModelImportError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        import_densedepth(path, dataset="nyu")
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    out = tmp_path / "out"
    assert main(["import", "densedepth", str(path), "--out", str(out), "--dataset", "nyu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.split("(")[0] in err[0]
    assert not out.exists()


def test_the_whole_graph_of_a_real_keras_densedepth_model_is_accepted():
    """The exact-graph check against the graph Keras itself writes (tf-keras; skipped without it), both
    released variants: not only against the graph this test file writes."""
    kr = pytest.importorskip("keras_reference", exc_type=ImportError)
    from pathlib import Path

    from transferdepth.importers.densedepth import _check_exact_graph, _read_graph

    for variant, act_a in (("2124ac9", False), ("10a688f", True)):
        layers = json.loads(kr.build_densedepth(variant).to_json())["config"]["layers"]
        assert _read_graph(Path("k.h5"), layers) == (act_a, True)
        _check_exact_graph(Path("k.h5"), layers, act_a, True)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _prepare(kind: str, tmp_path, good_h5):
    out = tmp_path / "out"
    if kind == "checkpoint":
        assert main(["import", "densedepth", str(good_h5), "--out", str(out), "--dataset", "kitti"]) == 0
    elif kind == "checkpoint + notes":
        assert main(["import", "densedepth", str(good_h5), "--out", str(out), "--dataset", "kitti"]) == 0
        (out / "notes.txt").write_text("mine")
    elif kind == "user files":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
    elif kind == "a file":
        out.write_text("mine")
    return out


# (what --out holds, extra flags, expected exit status, fragment of the one error line)
OUT_CASES = [
    ("checkpoint", [], 2, "is already a checkpoint folder (model.safetensors and config.json only); pass --overwrite"),
    ("checkpoint", ["--overwrite"], 0, None),
    ("checkpoint + notes", ["--overwrite"], 2, "is not empty and is not a checkpoint folder"),
    ("user files", [], 2, "is not a checkpoint folder (model.safetensors and config.json only) (it holds thesis.tex)"),
    ("user files", ["--overwrite"], 2, "nothing there is replaced, even with --overwrite"),
    ("a file", ["--overwrite"], 2, "exists and is not a folder"),
    ("nothing", ["--max-depth", "nan"], 2, "--min-depth/--max-depth: need finite 0 < min_depth < max_depth"),
    ("nothing", ["--min-depth", "20"], 2, "--min-depth/--max-depth"),
]


@pytest.mark.parametrize("holds,flags,rc,message", OUT_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in OUT_CASES])
def test_out_folder_is_never_mixed_or_replaced_without_overwrite(holds, flags, rc, message, good_h5, tmp_path,
                                                                 capsys):
    out = _prepare(holds, tmp_path, good_h5)
    before = (_snapshot(out) if out.is_dir() else out.read_bytes()) if out.exists() else None
    capsys.readouterr()
    got = main(["import", "densedepth", str(good_h5), "--out", str(out), "--dataset", "nyu", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert got == rc, err
    if rc == 0:  # replaced: the new range (nyu, 10 m), only the checkpoint's files, no temp folder left
        assert load_checkpoint(out).max_depth == 10.0
        assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        return
    assert len(err) == 1 and message in err[0], err
    assert f"--out {out}: " in err[0] or message.startswith("--min-depth"), err
    after = (_snapshot(out) if out.is_dir() else out.read_bytes()) if out.exists() else None
    assert after == before  # nothing written, nothing removed
