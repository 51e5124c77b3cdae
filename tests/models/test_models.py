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


def _pad_reference(model, x, multiple=32):
    """Independent reference: replicate-pad bottom/right to a multiple of `multiple` and to at least 32 per side,
    run, crop to ceil(H/2) x ceil(W/2)."""
    h, w = x.shape[-2:]
    ph, pw = max(h + -h % multiple, 32) - h, max(w + -w % multiple, 32) - w
    with torch.no_grad():
        out = model(F.pad(x, (0, pw, 0, ph), mode="replicate"))
    return out[..., : (h + 1) // 2, : (w + 1) // 2]


def _unpadded(model, x):
    """Independent reference: the encoder and decoder called directly on `x` (no padding, no crop)."""
    with torch.no_grad():
        feats = model.encoder(x)
        bottleneck = F.relu(feats[-1]) if model.bottleneck_relu else feats[-1]
        by_stride = {f.stride: t for f, t in zip(model.spec.skips[:-1], feats[:-1])} | {32: bottleneck}
        return model.decoder(by_stride, tuple(x.shape[-2:]))


def _synthetic(h, w, seed=0):
    """A smooth, bright-bordered normalised image: replicate and zero padding differ at its border."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([1.5 + xx, 2.0 - yy, 1.0 + xx * yy])[None]
    return base + 0.1 * torch.randn(1, 3, h, w, generator=g)


def _encoder_input_sizes(model, x):
    """The (H, W) the encoder sees when `model(x)` runs, and the output."""
    seen = []
    handle = model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = model(x)
    handle.remove()
    return seen, out


@pytest.mark.parametrize("name", ENCODERS)
def test_any_size_runs_unpadded_with_ceil_half_output(name):
    # odd and even sides, multiples of 32 or not: the decoder upsamples to each skip's size, nothing is padded
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model.pad_multiple == 1
    for size in [(33, 45), (50, 70), (97, 131), (64, 96), (35, 32)]:
        x = _synthetic(*size)
        seen, out = _encoder_input_sizes(model, x)
        assert seen == [size], (name, size)
        assert out.shape == (1, 1, (size[0] + 1) // 2, (size[1] + 1) // 2), (name, size)
        torch.testing.assert_close(out, _unpadded(model, x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ENCODERS)
def test_sides_shorter_than_32_are_padded_to_32(name):
    # the only padding new models do: a side under the encoders' total stride (DenseNet's floor-rounding
    # transitions reach 0x0 below 29 pixels)
    torch.manual_seed(0)
    model = create_model(name).eval()
    for size in [(17, 45), (5, 3), (40, 31)]:
        x = _synthetic(*size)
        seen, out = _encoder_input_sizes(model, x)
        assert seen == [(max(size[0], 32), max(size[1], 32))]
        assert out.shape == (1, 1, (size[0] + 1) // 2, (size[1] + 1) // 2)
        torch.testing.assert_close(out, _pad_reference(model, x, multiple=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ENCODERS)
def test_old_checkpoints_pad_to_a_multiple_of_32(name):
    # pad_multiple=32: what every model did before (checkpoints without the key load with it)
    torch.manual_seed(0)
    model = create_model(name, pad_multiple=32).eval()
    for size in [(33, 45), (50, 70)]:
        x = _synthetic(*size)
        seen, out = _encoder_input_sizes(model, x)
        assert seen == [(-(-size[0] // 32) * 32, -(-size[1] // 32) * 32)]
        assert out.shape == (1, 1, (size[0] + 1) // 2, (size[1] + 1) // 2)
        torch.testing.assert_close(out, _pad_reference(model, x), rtol=1e-5, atol=1e-5)


def test_padding_keeps_the_prediction_of_aligned_inputs():
    # a 64x64 input needs no padding even for an old checkpoint: the prediction is the plain network's
    torch.manual_seed(0)
    model = create_model("mobilenetv2", pad_multiple=32).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        feats = model.encoder(x)
        manual = model.decoder(dict(zip([2, 4, 8, 16, 32], feats)), (64, 64))
    torch.testing.assert_close(full, manual)


def test_pad_multiple_must_be_a_positive_integer():
    for bad in (0, -32, 1.5, True, "32"):
        with pytest.raises(ValueError, match="pad_multiple"):
            create_model("mobilenetv2", pad_multiple=bad)


def _floor_encoder():
    """A toy encoder whose stride-2 feature rounds odd sides down (a 2x2 stride-2 conv without padding)."""
    from collections import OrderedDict

    from transferdepth.models import FeatureInfo
    from transferdepth.models.encoders import Encoder

    layers = OrderedDict([("s2", torch.nn.Conv2d(3, 8, 2, stride=2))]
                         + [(f"s{2 ** k}", torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)) for k in range(2, 6)])
    skips = tuple(FeatureInfo(f"s{2 ** k}", 8, 2 ** k) for k in range(1, 6))
    return Encoder(torch.nn.Sequential(layers), skips), skips


@pytest.mark.parametrize("half_floor", [True, False])
def test_an_encoder_whose_stride_2_feature_rounds_down_pads_odd_sides_by_one(half_floor):
    from transferdepth.models import DepthNet, EncoderSpec

    torch.manual_seed(0)
    encoder, skips = _floor_encoder()
    spec = EncoderSpec("toy-floor", lambda: None, skips, half_floor=half_floor)
    model = DepthNet(encoder, spec, decoder_width=2.0).eval()
    x = _synthetic(45, 64)
    seen, out = _encoder_input_sizes(model, x)
    if half_floor:  # declared: the odd side is padded by one, the output is ceil(H/2)
        assert seen == [(46, 64)] and out.shape == (1, 1, 23, 32)
        torch.testing.assert_close(out, _unpadded(model, F.pad(x, (0, 0, 0, 1), mode="replicate"))[..., :23, :])
    else:  # not declared: floor(H/2); the declaration is what keeps ceil (test_declared_half_floor_matches_the_stride_2_feature)
        assert seen == [(45, 64)] and out.shape == (1, 1, 22, 32)


@pytest.mark.parametrize("name", ENCODERS + ["timm:resnet18", "timm:convnext_atto"])
def test_declared_half_floor_matches_the_stride_2_feature(name):
    spec = get_spec(name)
    stride2 = [i for i, f in enumerate(spec.skips) if f.stride == 2]
    if not stride2:
        assert spec.half_floor is False
        return
    with torch.no_grad():
        feat = create_model(name).encoder.eval()(torch.zeros(1, 3, 45, 33))[stride2[0]]
    assert tuple(feat.shape[-2:]) == ((22, 16) if spec.half_floor else (23, 17)), name


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
    # convnext gives features at strides 4..32: the H/2 block upsamples without a skip, to ceil(H/2) x ceil(W/2)
    model = create_model("timm:convnext_atto").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 32, 32)
        assert model(torch.randn(1, 3, 63, 97)).shape == (1, 1, 32, 49)


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


def _spread_model(name: str = "mobilenetv2", pad_multiple: int = 1) -> torch.nn.Module:
    """Random weights with the last conv scaled so depths spread over ~2-5 m (not all clamped to 10 m)."""
    torch.manual_seed(0)
    model = create_model(name, pad_multiple=pad_multiple).eval()
    with torch.no_grad():
        model.decoder.conv3.weight.mul_(100.0)
        model.decoder.conv3.bias.fill_(2.8)
    return model


@pytest.mark.parametrize("size,multiple", [((33, 45), 32), ((50, 70), 32), ((20, 45), 1)])
def test_depthnet_pads_by_replication(size, multiple):
    model = _spread_model(pad_multiple=multiple)
    x = _synthetic(*size)
    h, w = size
    with torch.no_grad():
        out = model(x)
        ph, pw = max(h + -h % multiple, 32) - h, max(w + -w % multiple, 32) - w
        zero = model(F.pad(x, (0, pw, 0, ph)))[..., : (h + 1) // 2, : (w + 1) // 2]
    ref = _pad_reference(model, x, multiple)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the input is one where zero padding would give another prediction, so the check can fail
    assert (zero - ref).abs().max() > 1e-2


def _smooth_rgb(h, w):
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (torch.stack([0.3 + 0.6 * xx, 0.9 - 0.5 * yy, 0.5 + 0.4 * xx * yy])[None]
            + 0.03 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("size", [(33, 45), (50, 70)])
@pytest.mark.parametrize("multiple", [1, 32])
def test_inference_runs_the_model_at_the_input_size(size, multiple):
    # infer adds no padding of its own: new models see the image as is, old checkpoints pad to 32 in forward
    from transferdepth.inference.core import infer
    from transferdepth.recipe import depthnorm_to_depth

    model = _spread_model(pad_multiple=multiple)
    h, w = size
    rgb = _smooth_rgb(h, w)
    half = ((h + 1) // 2, (w + 1) // 2)
    got = infer(model, rgb, flip=False, output_size=half)  # same-size resize: identity
    x = model.normalize(rgb)
    dn = _unpadded(model, x) if multiple == 1 else _pad_reference(model, x)
    ref = depthnorm_to_depth(dn, model.max_depth, model.min_depth).clamp(model.min_depth, model.max_depth)
    assert ((ref > model.min_depth) & (ref < model.max_depth)).float().mean() > 0.9  # not all clamped
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    other = _pad_reference(model, x) if multiple == 1 else _unpadded(model, x)[..., : half[0], : half[1]]
    other = depthnorm_to_depth(other, model.max_depth, model.min_depth)
    assert (other - ref).abs().max() > 1e-2  # padding or not is visible at this size


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
    from transferdepth.weights.build import build_model

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


@pytest.mark.parametrize(("decoder", "decoder_momentum"), [("unet", {0.1}), ("fastdepth", {0.1}), ("bts", {0.01})])
def test_bn_momentum_sets_the_encoder_only(decoder, decoder_momentum):
    """`bn_momentum` (DenseDepth's Keras 0.99) is the encoder's; each decoder keeps its reference's (smp and
    FastDepth: torch's 0.1; BTS: 0.01)."""
    model = create_model("mobilenetv2", 0.25, decoder=decoder, bn_momentum=0.05)
    bns = lambda m: {b.momentum for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)}  # noqa: E731
    assert bns(model.encoder) == {0.05}
    assert bns(model.decoder) == decoder_momentum
