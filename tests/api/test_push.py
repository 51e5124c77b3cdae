"""Sharing on the Hub: the model card written from a checkpoint's own metadata (a tiny training run; a
DenseDepth import), and `push` / `push_to_hub` with huggingface_hub's HfApi replaced at its boundary
(`create_repo`, `upload_folder`): the Hub is never reached; the files and card it would send are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from transferdepth.api.estimator import DepthEstimator
from transferdepth.api.hub import model_card
from transferdepth.cli import main
from transferdepth.importers.densedepth import import_densedepth
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.models import create_model
from transferdepth.training import train
from transferdepth.training.config import load_config

huggingface_hub = pytest.importorskip("huggingface_hub")

DATA = "procedural:n=8&seed=0&height=64&width=64"
VAL = "procedural:n=4&seed=9&height=64&width=64"


def split_card(card: str) -> tuple[dict, str]:
    """(YAML header as a dict, Markdown body) of a Hub model card."""
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny training run (4 steps, validated at the end: run.json, metrics.json, checkpoint/)."""
    out = tmp_path_factory.mktemp("push") / "run"
    cfg = load_config(overrides=dict(encoder="mobilenetv2", pretrained=False, train_data=DATA, val_data=VAL,
                                     height=64, width=64, batch_size=2, max_steps=4, num_workers=0,
                                     tensorboard=False, progress="none", seed=1))
    train(cfg, out)
    assert (out / "metrics.json").is_file() and (out / "run.json").is_file()
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """A DenseDepth .h5 (Keras 2's layout, random weights, small decoder) imported as `transferdepth import`
    does."""
    from importers.test_import_densedepth import write_keras_h5

    tmp = tmp_path_factory.mktemp("dd")
    torch.manual_seed(0)
    src = create_model("densenet169", 64 / 1664, decoder_act_a=True, bottleneck_relu=True, input_norm="none")
    h5 = write_keras_h5(tmp / "nyu.h5", src.eval(), act_a=True)
    model, meta = import_densedepth(h5, dataset="nyu")
    return save_checkpoint(model, tmp / "nyu", meta=meta)


def test_card_of_a_trained_checkpoint_says_how_it_was_made_and_scores(run, tmp_path):
    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint"), "--data", VAL, "--protocol", "eigen",
                 "--crop", "full", "--out", str(evaluation), "--progress", "none"]) == 0
    card = model_card(run / "checkpoint", "org/tiny-depth", evaluations=[evaluation / "metrics.json"])
    head, body = split_card(card)
    assert head["library_name"] == "transferdepth" and head["pipeline_tag"] == "depth-estimation"
    assert head["license"] == "mit" and {"d1", "abs_rel", "rmse"} <= set(head["metrics"])
    assert "datasets" not in head  # procedural rooms: no Hub dataset (said in the body instead)
    cfg = json.loads((run / "run.json").read_text())["config"]
    val, ev = (json.loads(p.read_text()) for p in (run / "metrics.json", evaluation / "metrics.json"))
    for text in ("`mobilenetv2`", "width 0.5", f"| recipe (preset) | `{cfg['recipe']}` |", DATA,
                 "| steps | 4 (batch 2, 64x64 px) |", "clamped to 0.1-10 m", "random weights",
                 f"{val['d1']:.3f}", f"{ev['abs_rel']:.3f}", f"{ev['rmse']:.3f}", "validation (training run)",
                 f"- {VAL}: protocol eigen", f"protocol {val['protocol']}",
                 'DepthEstimator.from_pretrained("org/tiny-depth")', "--checkpoint org/tiny-depth"):
        assert text in body, text
    assert model_card(run, "org/tiny-depth", evaluations=[evaluation / "metrics.json"]) == card  # the run folder


def test_card_of_an_imported_densedepth_model_names_its_source(imported):
    head, body = split_card(model_card(imported, "org/densedepth-nyu"))
    src = json.loads((imported / "config.json").read_text())["meta"]["imported_from"]
    assert head["license"] == "other" and head["datasets"] == ["sayakpaul/nyu_depth_v2"]
    assert "metrics" not in head
    for text in ("`densenet169`", "imported from DenseDepth", f"`nyu.h5` (sha256 `{src['sha256']}`",
                 "Keras 2.2.4", "NYU Depth v2", "Decoder 64 filters", "normalisation `none`",
                 "clamped to 0.1-10 m", "No evaluation is recorded", "github.com/ialhashim/DenseDepth"):
        assert text in body, text
    assert split_card(model_card(imported, "org/x", license="gpl-3.0"))[0]["license"] == "gpl-3.0"


class FakeHub:
    """HfApi's create_repo and upload_folder replaced: calls recorded, the folder's files read as sent."""

    def __init__(self, monkeypatch):
        self.repos, self.uploads = [], []
        fake = self

        def create_repo(self, repo_id, **kw):
            fake.repos.append((repo_id, kw, self.token))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, repo_id, folder_path, **kw):
            files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            fake.uploads.append((repo_id, files, kw))

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)


@pytest.fixture
def no_login(tmp_path, monkeypatch):
    """No token anywhere (environment, token files) and no network."""
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


def test_push_sends_the_checkpoint_and_its_card(run, monkeypatch, no_login, capsys):
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert main(["push", str(run / "checkpoint"), "org/tiny-depth", "--private"]) == 0
    assert hub.repos == [("org/tiny-depth", {"repo_type": "model", "private": True, "exist_ok": True},
                          "hf_test_token")]
    (repo, files, kw), = hub.uploads
    assert repo == "org/tiny-depth" and set(files) == {"model.safetensors", "config.json", "README.md"}
    for name in ("model.safetensors", "config.json"):
        assert files[name] == (run / "checkpoint" / name).read_bytes()
    assert files["README.md"].decode() == model_card(run / "checkpoint", "org/tiny-depth")
    assert "https://huggingface.co/org/tiny-depth" in capsys.readouterr().out


def test_push_without_a_token_says_how_to_log_in(run, monkeypatch, no_login, capsys):
    hub = FakeHub(monkeypatch)
    assert main(["push", str(run / "checkpoint"), "org/tiny-depth"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hf auth login" in err and "HF_TOKEN" in err, err
    assert hub.repos == [] and hub.uploads == []


def test_nothing_is_uploaded_from_a_checkpoint_that_does_not_load(run, tmp_path, monkeypatch, no_login, capsys):
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((run / "checkpoint" / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes((run / "checkpoint" / "model.safetensors").read_bytes()[:1000])
    assert main(["push", str(broken), "org/tiny-depth"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err, err
    assert main(["push", str(run / "checkpoint"), "not-a-repo-name"]) == 2
    assert hub.repos == [] and hub.uploads == []


def test_push_to_hub_keeps_the_checkpoints_metadata(run, monkeypatch, no_login):
    hub = FakeHub(monkeypatch)
    est = DepthEstimator.from_pretrained(run / "checkpoint", device="cpu")
    url = est.push_to_hub("org/tiny-depth", token="hf_given")
    assert url == "https://huggingface.co/org/tiny-depth" and hub.repos[0][2] == "hf_given"
    (_, files, _), = hub.uploads
    card = files["README.md"].decode()
    assert "| steps | 4 (batch 2, 64x64 px) |" in card and DATA in card
    sent = json.loads(files["config.json"])
    assert sent["meta"] == json.loads((run / "checkpoint" / "config.json").read_text())["meta"]
