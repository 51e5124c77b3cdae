"""Fixtures shared by the deploy tests: a tiny checkpoint and a real frame at two sizes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from transferdepth.inference.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def kitchen(rgbd_root) -> list[np.ndarray]:
    """A real 640x480 frame and an odd-sized (321x237) resize of it."""
    with Image.open(rgbd_root / "7scenes-redkitchen" / "frame-000000.color.jpg") as im:
        rgb = im.convert("RGB")
        return [np.asarray(rgb), np.asarray(rgb.resize((321, 237), Image.BILINEAR))]
