"""hubconf.py: `torch.hub.load(repo, "depth_estimator", checkpoint=...)`, run here from the repository folder
(source="local"), as torch.hub runs it from its download of the GitHub repository."""

from __future__ import annotations

import numpy as np
import torch
from helpers import REPO, tiny_model

from transferdepth.api.estimator import DepthEstimator
from transferdepth.inference.checkpoint import save_checkpoint


def test_torch_hub_loads_a_checkpoint_from_the_repository(tmp_path):
    ckpt = save_checkpoint(tiny_model(seed=2), tmp_path / "ckpt")
    est = torch.hub.load(str(REPO), "depth_estimator", source="local", checkpoint=str(ckpt), device="cpu",
                         flip=False)
    assert isinstance(est, DepthEstimator) and est.flip is False
    rgb = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    ref = DepthEstimator(tiny_model(seed=2), device="cpu", flip=False).predict(rgb)
    depth = est.predict(rgb)
    assert depth.shape == (40, 56) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, ref, atol=1e-5)  # metres, the same model
    net = torch.hub.load(str(REPO), "depth_net", source="local", checkpoint=str(ckpt))
    assert net.encoder_name == "mobilenetv2" and not net.training
