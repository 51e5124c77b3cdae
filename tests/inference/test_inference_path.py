"""One inference path: a real 7-Scenes frame through every caller gives the same metres as `infer`.

DepthEstimator (API, predict CLI, serve's torch engine), evaluate, the export wrapper (and its ONNX file),
training validation and the demo's evaluation all go through `transferdepth.inference.core.infer`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model
from PIL import Image

from transferdepth import DepthEstimator
from transferdepth.cli import main
from transferdepth.data.transforms import EvalTransform
from transferdepth.deploy.export import MetricDepth
from transferdepth.evaluation.evaluate import predict_dataset
from transferdepth.inference.checkpoint import save_checkpoint
from transferdepth.inference.core import infer, rgb_to_tensor
from transferdepth.training.validation import validate


@pytest.fixture(scope="module")
def frame(rgbd_root):
    rgb = np.asarray(Image.open(rgbd_root / "7scenes-redkitchen" / "frame-000100.color.jpg").convert("RGB"))
    depth = np.asarray(Image.open(rgbd_root / "7scenes-redkitchen" / "frame-000100.depth.png")).astype(np.float32)
    valid = (depth > 0) & (depth < 65535)
    return {"rgb": rgb[::4, ::4].copy(), "depth": np.where(valid, depth / 1000.0, 0)[::4, ::4].astype(np.float32),
            "valid": valid[::4, ::4].copy(), "intrinsics": None, "name": "frame-000100"}


@pytest.fixture(scope="module")
def model():
    return tiny_model().eval()


def test_every_caller_gives_infers_metres(model, frame, tmp_path):
    x = rgb_to_tensor([frame["rgb"]])
    reference = infer(model, x)[0, 0].numpy()  # flip-averaged, at the frame's size
    assert reference.shape == (120, 160) and reference.std() > 0.05  # an informative map, not a clamp

    api = DepthEstimator(model, device="cpu").predict(frame["rgb"])
    np.testing.assert_array_equal(api, reference)

    evaluated = predict_dataset(model, [frame], device="cpu").pred[0]
    np.testing.assert_allclose(evaluated, reference, atol=1e-6)

    exported = MetricDepth(model)(x)[0, 0].detach().numpy()  # the export graph: no flip inside
    np.testing.assert_allclose(exported, infer(model, x, flip=False)[0, 0].numpy(), atol=1e-6)

    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    Image.fromarray(frame["rgb"]).save(tmp_path / "frame.png")
    assert main(["predict", str(tmp_path / "frame.png"), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "out"), "--format", "npy", "--device", "cpu"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out" / "frame_depth_m.npy"), reference, atol=1e-6)


def test_training_validation_is_infer_on_the_normalised_batch(model, frame):
    t = EvalTransform(model.mean.flatten().tolist(), model.std.flatten().tolist())(frame)
    batch = {"image": t["image"][None], "depth": t["depth"][None], "valid": t["valid"][None]}
    _, first = validate(model, [batch], torch.device("cpu"))
    expected = infer(model, rgb_to_tensor([frame["rgb"]]), flip=False, output_size=(60, 80))
    np.testing.assert_allclose(first["pred"].numpy(), expected.numpy(), atol=1e-5)


def _upsampled_from_half(model, small: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The stated path for an image the network sees at `small`'s size: its half-resolution metres (no clamp
    yet), bilinear to `size`, then clamped to the model's range."""
    h, w = small.shape[-2:]
    half = infer(model, small, flip=False, output_size=((h + 1) // 2, (w + 1) // 2), min_depth=-np.inf, max_depth=np.inf)
    full = F.interpolate(half, size=size, mode="bilinear", align_corners=False)
    return full.clamp(model.min_depth, model.max_depth)[0, 0].numpy()


def test_input_size_is_an_antialiased_resize(model, frame):
    """infer(input_size=...) = the network on the image shrunk with an antialiased filter: against PIL's
    bilinear resize (antialiased when shrinking; an independent implementation, uint8) within 5 mm on
    average, and against torch's antialiased resize exactly. A plain (aliasing) resize is 3 cm off."""
    rgb = frame["rgb"]  # 120x160 -> the network sees 40x56 (a 3x shrink: aliasing would show)
    got = infer(model, rgb_to_tensor([rgb]), flip=False, input_size=(40, 56))[0, 0].numpy()
    pil_small = np.asarray(Image.fromarray(rgb).resize((56, 40), Image.BILINEAR))
    assert np.abs(got - _upsampled_from_half(model, rgb_to_tensor([pil_small]), rgb.shape[:2])).mean() < 0.005
    x = rgb_to_tensor([rgb])
    smooth = F.interpolate(x, size=(40, 56), mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_allclose(got, _upsampled_from_half(model, smooth, rgb.shape[:2]), atol=1e-5)


def test_a_lower_max_depth_caps_the_predictions(model, frame):
    """DepthEstimator(max_depth=2.52) below the model's 10 m: no value above 2.52 m, the others unchanged."""
    free = DepthEstimator(model, device="cpu").predict(frame["rgb"])
    capped = DepthEstimator(model, device="cpu", max_depth=2.52).predict(frame["rgb"])
    assert free.max() > 3.0  # the cap has something to cut
    assert capped.max() == pytest.approx(2.52)
    np.testing.assert_array_equal(capped, np.minimum(free, np.float32(2.52)))
