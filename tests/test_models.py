"""The encoder registry and the DenseDepth decoder: declared feature info, shapes, sizes, parameters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from transferdepth.models import available_encoders, create_model, get_spec

ENCODERS = available_encoders()


def test_registry_has_the_study_encoders():
    for name in ("densenet169", "densenet161", "resnet50", "resnet101", "mobilenetv2",
                 "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert name in ENCODERS


@pytest.mark.parametrize("name", ENCODERS)
def test_declared_features_match_real_feature_maps(name):
    model = create_model(name).eval()
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
    model = create_model(name)
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1, 32, 48)
    out.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def _pad_reference(model, x):
    """Independent reference: replicate-pad bottom/right to multiples of 32, run, crop to ceil(H/2) x ceil(W/2)."""
    h, w = x.shape[-2:]
    ph, pw = -h % 32, -w % 32
    with torch.no_grad():
        out = model(F.pad(x, (0, pw, 0, ph), mode="replicate"))
    return out[..., : (h + 1) // 2, : (w + 1) // 2]


def _synthetic(h, w, seed=0):
    """A smooth, bright-bordered normalised image: replicate and zero padding differ at its border."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([1.5 + xx, 2.0 - yy, 1.0 + xx * yy])[None]
    return base + 0.1 * torch.randn(1, 3, h, w, generator=g)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("size", [(33, 45), (50, 70), (97, 131)])
def test_sizes_that_are_not_multiples_of_32(name, size):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = _synthetic(*size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1, (size[0] + 1) // 2, (size[1] + 1) // 2)
    torch.testing.assert_close(out, _pad_reference(model, x), rtol=1e-5, atol=1e-5)


def test_padding_keeps_the_prediction_of_aligned_inputs():
    # a 64x64 input needs no padding: the prediction is the plain network's, with no crop
    torch.manual_seed(0)
    model = create_model("mobilenetv2").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        feats = model.encoder(x)
        manual = model.decoder(dict(zip([2, 4, 8, 16], feats[:-1])), feats[-1], (64, 64))
    torch.testing.assert_close(full, manual)


def test_densenet169_parameter_counts_match_densedepth():
    wide = create_model("densenet169", decoder_width=1.0)
    assert sum(p.numel() for p in wide.encoder.parameters()) == 12_484_480
    assert sum(p.numel() for p in wide.decoder.parameters()) == 30_173_209
    assert sum(p.numel() for p in wide.parameters()) == 42_657_689
    half = create_model("densenet169", decoder_width=0.5)
    assert sum(p.numel() for p in half.parameters()) == 21_365_405


def test_decoder_channels_follow_the_width():
    model = create_model("densenet169", decoder_width=1.0)
    d = model.decoder
    assert (d.conv2.in_channels, d.conv2.out_channels) == (1664, 1664)
    assert [b.convB.out_channels for b in (d.up1, d.up2, d.up3, d.up4)] == [832, 416, 208, 104]
    assert [b.convA.in_channels for b in (d.up1, d.up2, d.up3, d.up4)] == [1664 + 256, 832 + 128, 416 + 64, 208 + 64]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())


def test_unknown_encoder_lists_the_choices():
    with pytest.raises(ValueError) as e:
        create_model("densnet169")
    msg = str(e.value)
    assert "densenet169" in msg and "mobilenetv2" in msg and "timm:" in msg


def test_timm_backbone_by_name():
    model = create_model("timm:resnet18").eval()
    spec = get_spec("timm:resnet18")
    assert [f.stride for f in spec.feature_info] == [2, 4, 8, 16, 32]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 32, 32)


def test_timm_backbone_without_a_stride_2_feature():
    # convnext gives features at strides 4..32: the H/2 block upsamples without a skip
    model = create_model("timm:convnext_atto").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("name,reason", [("timm:no_such_model_xyz", "no model"),
                                          ("timm:vit_tiny_patch16_224", "strides")])
def test_timm_models_that_cannot_give_features(name, reason):
    with pytest.raises(ValueError, match=reason):
        create_model(name)


def _decoded(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What decoder.conv2 receives (the bottleneck after DepthNet's optional ReLU)."""
    seen = []
    handle = model.decoder.conv2.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


# Does the encoder's reference (DenseDepth's Keras DenseNet-169 / PyTorch port; Keras/torchvision ResNet and
# MobileNetV2 without top) have an activation on the feature the decoder reads? EfficientNet-Lite's stride-32
# feature is a block's linear projection: no activation, deliberately (a linear bottleneck).
ACTIVATED_BOTTLENECK = {
    "densenet169": True, "densenet161": True,  # Keras: bn + relu; torchvision features end at norm5 -> our ReLU
    "resnet50": True, "resnet101": True,  # layer4 ends in ReLU
    "mobilenetv2": True,  # features[18] ends in ReLU6
    "efficientnet_lite0": False, "efficientnet_lite1": False, "efficientnet_lite2": False,
}


def test_every_encoder_has_a_decided_bottleneck_activation():
    assert set(ENCODERS) == set(ACTIVATED_BOTTLENECK)
    relu_added = {n for n in ENCODERS if get_spec(n).bottleneck_relu}
    assert relu_added == {"densenet169", "densenet161"}


@pytest.mark.parametrize("name", ENCODERS)
def test_bottleneck_reaching_the_decoder_is_non_negative_where_the_reference_activates(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    z = _decoded(model, torch.randn(1, 3, 64, 64))
    assert z.shape[1] == get_spec(name).skips[-1].channels
    if ACTIVATED_BOTTLENECK[name]:
        assert z.min() >= 0
        assert z.max() > 0
    else:
        assert z.min() < 0  # linear bottleneck, passed on as is


@pytest.mark.parametrize("name", ["densenet169", "densenet161"])
def test_densenet_bottleneck_relu_can_be_switched_off(name):
    # the old behaviour (and old checkpoints): norm5 itself, with negative values, reaches the decoder
    torch.manual_seed(0)
    model = create_model(name, decoder_width=0.1, bottleneck_relu=False).eval()
    assert model.bottleneck_relu is False
    z = _decoded(model, torch.randn(1, 3, 64, 64))
    assert z.min() < -0.5
    model.bottleneck_relu = True
    torch.testing.assert_close(_decoded(model, torch.randn(1, 3, 64, 64)).min(), torch.tensor(0.0))


# --- padding: DepthNet.forward and the inference path against a manual replicate-pad + crop ----------------


def _spread_model(name: str = "mobilenetv2") -> torch.nn.Module:
    """Random weights with the last conv scaled so depths spread over ~2-5 m (not all clamped to 10 m)."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        model.decoder.conv3.weight.mul_(100.0)
        model.decoder.conv3.bias.fill_(2.8)
    return model


@pytest.mark.parametrize("size", [(33, 45), (50, 70)])
def test_depthnet_pads_by_replication(size):
    model = _spread_model()
    x = _synthetic(*size)
    with torch.no_grad():
        out = model(x)
        h, w = size
        zero = model(F.pad(x, (0, -w % 32, 0, -h % 32)))[..., : (h + 1) // 2, : (w + 1) // 2]
    ref = _pad_reference(model, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the input is one where zero padding would give another prediction, so the check can fail
    assert (zero - ref).abs().max() > 1e-2


@pytest.mark.parametrize("size", [(33, 45), (50, 70)])
def test_inference_pads_by_replication(size):
    from transferdepth.inference import infer
    from transferdepth.recipe import depthnorm_to_depth

    model = _spread_model()
    h, w = size
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    rgb = (torch.stack([0.3 + 0.6 * xx, 0.9 - 0.5 * yy, 0.5 + 0.4 * xx * yy])[None]
           + 0.03 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)
    half = ((h + 1) // 2, (w + 1) // 2)
    got = infer(model, rgb, flip=False, output_size=half)  # same-size resize: identity
    ref = depthnorm_to_depth(_pad_reference(model, model.normalize(rgb)), model.max_depth, model.min_depth)
    ref = ref.clamp(model.min_depth, model.max_depth)
    assert ((ref > model.min_depth) & (ref < model.max_depth)).float().mean() > 0.9  # not all clamped
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        x = model.normalize(rgb)
        zero = model(F.pad(x, (0, -w % 32, 0, -h % 32)))[..., : half[0], : half[1]]
    zero = depthnorm_to_depth(zero, model.max_depth, model.min_depth)
    assert (zero - ref).abs().max() > 1e-2  # zero padding would be visible


def test_models_package_imports_nothing_above_core():
    # models may import recipe (core), torch, torchvision, timm; never weights, build, api, checkpoint, ...
    import ast
    from pathlib import Path

    import transferdepth.models as pkg

    allowed = ("transferdepth.models", "transferdepth.recipe")
    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for n in names:
                if n.startswith("transferdepth"):
                    assert n.startswith(allowed), f"{path.name} imports {n}"


def test_build_model_is_exported_and_matches_create_model():
    import transferdepth
    from transferdepth.build import build_model

    assert transferdepth.build_model is build_model
    torch.manual_seed(0)
    a = build_model("mobilenetv2", 0.5, pretrained=False, max_depth=80.0, decoder_act_a=False,
                    bn_momentum=0.01, input_norm="none")
    torch.manual_seed(0)
    b = create_model("mobilenetv2", 0.5, max_depth=80.0, decoder_act_a=False, bn_momentum=0.01, input_norm="none")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert (a.max_depth, a.decoder_act_a, a.input_norm) == (80.0, False, "none")
    assert {m.momentum for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.01}
    assert a.mean.flatten().tolist() == [0.0, 0.0, 0.0] and a.std.flatten().tolist() == [1.0, 1.0, 1.0]
