"""The decoder zoo: each decoder's parameters against its reference implementation's, the strides it needs,
shapes at any size, every output space through the one inference path, and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferdepth.models import available_decoders, create_model, get_decoder
from transferdepth.models.decoders import build_decoder
from transferdepth.models.depthnet import half_resolution
from transferdepth.recipe import OUTPUT_SPACES, depth_to_output, output_to_depth

DECODERS = available_decoders()

# Parameter counts of the reference implementations' decoders with their own encoders' channels (stride ->
# channels), counted by building the reference code (random init) with the file and commit in
# docs/faithfulness.md ("Decoders"). dpt: MiDaS small's scratch (14,898,529) less the residual unit its top
# fusion block builds and never calls (4,719,616).
REFERENCE_COUNTS = [
    ("bts", "densenet161_bts", {2: 96, 4: 96, 8: 192, 16: 384, 32: 2208}, 20_528_688),
    ("bts", "resnet50_bts", {2: 64, 4: 256, 8: 512, 16: 1024, 32: 2048}, 23_973_936),
    ("fastdepth", "MobileNetSkipAdd", {2: 64, 4: 128, 8: 256, 32: 1024}, 753_954),
    ("dpt", "MidasNet_small (Lite3)", {4: 32, 8: 48, 16: 136, 32: 384}, 14_898_529 - 4_719_616),
    ("unet", "smp.Unet resnet34", {2: 64, 4: 64, 8: 128, 16: 256, 32: 512}, 3_151_552 + 145),
    ("unet", "smp.Unet mobilenet_v2", {2: 16, 4: 24, 8: 32, 16: 96, 32: 1280}, 4_404_928 + 145),
    ("fpn", "smp.FPN resnet34", {2: 64, 4: 64, 8: 128, 16: 256, 32: 512}, 1_870_592 + 129),
    ("fpn", "smp.FPN mobilenet_v2", {2: 16, 4: 24, 8: 32, 16: 96, 32: 1280}, 1_991_424 + 129),
    # DenseDepth's released DenseNet-169 decoder (width 1.0), as tests/models/test_models.py checks in full
    ("densedepth", "DenseDepth nyu.h5", {2: 64, 4: 64, 8: 128, 16: 256, 32: 1664}, 30_173_209),
]


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(("decoder", "reference", "channels", "expected"), REFERENCE_COUNTS,
                         ids=[f"{d}-{r}" for d, r, _, _ in REFERENCE_COUNTS])
def test_decoder_parameters_match_the_reference_implementation(decoder, reference, channels, expected):
    options = {"act_a": False} if decoder == "densedepth" else {}
    n = _count(build_decoder(decoder, reference, channels, width=1.0, max_depth=10.0, **options))
    assert abs(n - expected) <= 0.01 * expected, (n, expected)
    assert n == expected  # built from the same facts, the counts agree exactly


def test_bts_whole_model_matches_the_reference_with_densenet161():
    """Our DenseNet-161 encoder taps the same five features as BTS's `densenet161_bts`: the whole network
    has the reference's 47,000,688 parameters."""
    model = create_model("densenet161", 1.0, decoder="bts")
    assert _count(model) == 47_000_688


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("size", [(64, 96), (65, 97), (33, 47)])
def test_every_decoder_gives_half_resolution_at_any_size_and_trains(name, size):
    model = create_model("mobilenetv2", 0.25, decoder=name)
    x = torch.randn(2, 3, *size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1, (size[0] + 1) // 2, (size[1] + 1) // 2)
    out.float().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert model.output_space == get_decoder(name).output_space


def test_half_resolution_is_the_mean_of_each_2x2_block_and_keeps_an_odd_edge():
    x = torch.arange(5 * 7, dtype=torch.float32).view(1, 1, 5, 7)
    y = half_resolution(x)
    assert y.shape == (1, 1, 3, 4)
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].mean()
    assert y[0, 0, 2, 3] == x[0, 0, 4, 6]  # the corner pixel of odd sides is its own mean
    assert torch.allclose(y[0, 0, 2, :3], x[0, 0, 4, :6].view(3, 2).mean(1))


def test_a_decoder_that_needs_a_stride_the_encoder_lacks_is_refused_in_one_line():
    with pytest.raises(ValueError) as e:
        build_decoder("bts", "timm:convnext_atto", {4: 40, 8: 80, 16: 160, 32: 320}, width=1.0, max_depth=10.0)
    msg = str(e.value)
    assert "\n" not in msg and "'bts'" in msg and "timm:convnext_atto" in msg and "no stride 2" in msg


def test_an_encoder_without_stride_2_works_with_a_decoder_that_does_not_need_it():
    model = create_model("timm:convnext_atto", 0.25, decoder="fpn")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="needs encoder features at strides"):
        create_model("timm:convnext_atto", 0.25, decoder="fastdepth")


def test_an_unknown_decoder_lists_the_registered_ones():
    with pytest.raises(ValueError) as e:
        create_model("mobilenetv2", decoder="unett")
    assert "did you mean 'unet'" in str(e.value)
    assert all(name in str(e.value) for name in DECODERS)


def test_an_output_space_the_head_cannot_give_is_refused():
    with pytest.raises(ValueError, match="cannot output 'depthnorm'"):
        create_model("mobilenetv2", decoder="bts", output_space="depthnorm")


@pytest.mark.parametrize("space", OUTPUT_SPACES)
def test_output_spaces_convert_to_metres_and_back(space):
    d = torch.tensor([0.1, 0.5, 1.0, 3.7, 10.0])
    v = depth_to_output(d, space)
    assert torch.allclose(output_to_depth(v, space), d, rtol=1e-6)
    independent = {"depthnorm": 10.0 / d, "metric": d, "log": torch.log(d), "disparity": 1.0 / d}[space]
    assert torch.allclose(v, independent, rtol=1e-6)


def _spread(model: nn.Module) -> nn.Module:
    """Random decoders saturate at the range's ends; put their last layer's output near 3 (DepthNorm 3 =
    3.3 m) with some variation so that comparisons are informative."""
    last_bn = [m for m in model.decoder.modules() if isinstance(m, nn.BatchNorm2d) and m.num_features == 1]
    convs = [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 1]
    with torch.no_grad():
        if last_bn:
            last_bn[-1].bias.fill_(3.0)
            last_bn[-1].weight.fill_(0.3)
        elif convs[-1].bias is not None:
            convs[-1].weight.mul_(10.0)
            convs[-1].bias.fill_(3.0)
    return model


@pytest.mark.parametrize("name", DECODERS)
def test_every_decoder_through_predict_and_an_onnx_export(name, tmp_path):
    pytest.importorskip("onnxruntime")
    from transferdepth.api.estimator import DepthEstimator
    from transferdepth.deploy.export import export_onnx

    torch.manual_seed(0)
    model = _spread(create_model("mobilenetv2", 0.25, decoder=name)).eval()
    rgb = (np.random.default_rng(0).random((45, 70, 3)) * 255).astype(np.uint8)
    torch_depth = DepthEstimator(model, "cpu", flip=False).predict(rgb)
    assert torch_depth.shape == (45, 70) and np.isfinite(torch_depth).all()
    assert torch_depth.std() > 1e-3, "the prediction should not be constant"
    path = export_onnx(model, tmp_path / "m.onnx")
    onnx_depth = DepthEstimator.from_onnx(path, flip=False).predict(rgb)
    assert np.abs(onnx_depth - torch_depth).max() < 1e-3


@pytest.mark.parametrize("name", DECODERS)
def test_every_decoder_can_start_its_output_near_a_value(name):
    """`output_init=targets` (training) starts the network at the targets' mean through the decoder's last
    layer. Heads with a bias (or a last BatchNorm) start at the value; BTS's bias-free sigmoid head starts flat
    at max_depth / 2."""
    torch.manual_seed(0)
    model = create_model("mobilenetv2", 0.25, decoder=name, max_depth=10.0).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        model.init_output_(4.0)
        after = model(x)
    if name == "bts":  # metres through sigmoid x max_depth: flat near 5 m
        assert after.std() < 0.05 * before.std() and abs(float(after.mean()) - 5.0) < 0.1
    else:
        assert abs(float(before.mean()) - 4.0) > 2.5  # it did not start there
        assert abs(float(after.mean()) - 4.0) < 1.0, float(after.mean())
