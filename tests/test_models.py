"""The encoder registry and the DenseDepth decoder: declared feature info, shapes, sizes, parameters."""

from __future__ import annotations

import pytest
import torch

from transferdepth.models import available_encoders, build_model, get_spec

ENCODERS = available_encoders()


def test_registry_has_the_study_encoders():
    for name in ("densenet169", "densenet161", "resnet50", "resnet101", "mobilenetv2",
                 "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert name in ENCODERS


@pytest.mark.parametrize("name", ENCODERS)
def test_declared_features_match_real_feature_maps(name):
    model = build_model(name, pretrained=False).eval()
    spec = get_spec(name)
    h, w = 64, 96
    with torch.no_grad():
        feats = model.encoder(torch.randn(2, 3, h, w))
    assert len(feats) == len(spec.feature_info)
    for f, info in zip(feats, spec.feature_info):
        assert f.shape == (2, info.channels, h // info.stride, w // info.stride), (name, info)
    assert spec.feature_info[-1].stride == 32


@pytest.mark.parametrize("name", ENCODERS)
def test_output_is_half_resolution_and_backward_runs(name):
    model = build_model(name, pretrained=False)
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1, 32, 48)
    out.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.decoder.parameters())


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("size", [(33, 45), (50, 70), (97, 131)])
def test_sizes_that_are_not_multiples_of_32(name, size):
    model = build_model(name, pretrained=False).eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert out.shape == (1, 1, (h + 1) // 2, (w + 1) // 2)
    assert torch.isfinite(out).all()


def test_padding_keeps_the_prediction_of_aligned_inputs():
    # a 64x64 input needs no padding: the prediction is the plain network's, with no crop
    torch.manual_seed(0)
    model = build_model("mobilenetv2", pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        feats = model.encoder(x)
        manual = model.decoder(dict(zip([2, 4, 8, 16], feats[:-1])), feats[-1], (64, 64))
    torch.testing.assert_close(full, manual)


def test_densenet169_parameter_counts_match_densedepth():
    wide = build_model("densenet169", decoder_width=1.0, pretrained=False)
    assert sum(p.numel() for p in wide.encoder.parameters()) == 12_484_480
    assert sum(p.numel() for p in wide.decoder.parameters()) == 30_173_209
    assert sum(p.numel() for p in wide.parameters()) == 42_657_689
    half = build_model("densenet169", decoder_width=0.5, pretrained=False)
    assert sum(p.numel() for p in half.parameters()) == 21_365_405


def test_decoder_channels_follow_the_width():
    model = build_model("densenet169", decoder_width=1.0, pretrained=False)
    d = model.decoder
    assert (d.conv2.in_channels, d.conv2.out_channels) == (1664, 1664)
    assert [b.convB.out_channels for b in (d.up1, d.up2, d.up3, d.up4)] == [832, 416, 208, 104]
    assert [b.convA.in_channels for b in (d.up1, d.up2, d.up3, d.up4)] == [1664 + 256, 832 + 128, 416 + 64, 208 + 64]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())


def test_unknown_encoder_lists_the_choices():
    with pytest.raises(ValueError) as e:
        build_model("densnet169", pretrained=False)
    msg = str(e.value)
    assert "densenet169" in msg and "mobilenetv2" in msg and "timm:" in msg


def test_timm_backbone_by_name():
    model = build_model("timm:resnet18", pretrained=False).eval()
    spec = get_spec("timm:resnet18")
    assert [f.stride for f in spec.feature_info] == [2, 4, 8, 16, 32]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 32, 32)


def test_timm_backbone_without_a_stride_2_feature():
    # convnext gives features at strides 4..32: the H/2 block upsamples without a skip
    model = build_model("timm:convnext_atto", pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("name,reason", [("timm:no_such_model_xyz", "no model"),
                                          ("timm:vit_tiny_patch16_224", "strides")])
def test_timm_models_that_cannot_give_features(name, reason):
    with pytest.raises(ValueError, match=reason):
        build_model(name, pretrained=False)
