"""Hostile encoder names: building a model or loading a checkpoint never touches the network."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from transferdepth.inference.checkpoint import CONFIG_FILE, CheckpointError, load_checkpoint, save_checkpoint
from transferdepth.models import available_encoders, create_model, get_spec


class NetworkTouched(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Every way to open a connection fails loudly and is recorded; offline switches are unset, so only our
    own guards (not TRANSFERDEPTH_OFFLINE / HF_HUB_OFFLINE) keep the network untouched."""
    attempts: list[str] = []

    def refuse(what):
        def f(*args, **kwargs):
            attempts.append(f"{what}{args[1:2] if what.startswith('socket.') else args[:1]}")
            raise NetworkTouched(f"network access: {what} {args[:2]}")
        return f

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.delenv("TRANSFERDEPTH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return attempts


def test_the_guard_sees_what_timm_does_with_a_hub_name(no_network):
    # without our check, timm fetches the config of an hf-hub model even with pretrained=False
    import timm

    with pytest.raises(Exception):  # noqa: B017 (timm / huggingface_hub may wrap our error)
        timm.create_model("hf-hub:org/name", pretrained=False)
    assert no_network, "timm did not try the network: this test's guard would see nothing"


HUB_NAMES = ["timm:hf-hub:org/name", "timm:hf_hub:org/name", "timm:HF-HUB:org/name", "timm:hf_hub:timm/resnet18",
             "timm:local-dir:/tmp/some-model"]


@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_encoder_names_are_refused_without_network(no_network, name):
    for build in (get_spec, create_model):
        with pytest.raises(ValueError, match="hub"):
            build(name)
    from transferdepth.weights.build import build_model

    with pytest.raises(ValueError, match="hub"):
        build_model(name, pretrained=False)
    assert no_network == []


@pytest.mark.parametrize("name", HUB_NAMES[:2])
def test_crafted_checkpoint_with_a_hub_encoder_is_refused_without_network(no_network, tmp_path, name):
    torch.manual_seed(0)
    save_checkpoint(create_model("timm:resnet18", 0.5), tmp_path / "ck")
    cfg_path = tmp_path / "ck" / CONFIG_FILE
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()) | {"encoder": name}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ck")
    assert str(cfg_path) in str(e.value) and "'encoder'" in str(e.value) and "network" in str(e.value)
    assert no_network == []


@pytest.mark.parametrize("name", [*available_encoders(), "timm:resnet18.a1_in1k", "timm:convnext_atto"])
def test_building_without_pretrained_weights_never_downloads(no_network, name):
    from transferdepth.weights.build import build_model

    model = build_model(name, 0.5, pretrained=False)
    assert model.encoder_name == name
    assert no_network == []
