"""One inference path: a real 7-Scenes frame through every caller gives the same metres as `infer`.

DepthEstimator (API, predict CLI, serve's torch engine), evaluate, the export wrapper (and its ONNX file),
training validation and the demo's evaluation all go through `transferdepth.inference.core.infer`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
