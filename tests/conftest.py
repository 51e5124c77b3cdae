"""Test settings: never touch a hub; one ImageNet-weights cache shared by the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO

RGBD = REPO.parent / "shared" / "data" / "rgbd"

os.environ["TRANSFERDEPTH_OFFLINE"] = "1"
os.environ.setdefault("TRANSFERDEPTH_CACHE", str(REPO / ".pytest_cache" / "transferdepth-cache"))


@pytest.fixture(scope="session")
def rgbd_root() -> Path:
    if not RGBD.is_dir():
        pytest.skip(f"real RGB-D data not found at {RGBD}")
    return RGBD


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """An isolated, empty weights cache for tests that corrupt or inspect it."""
    monkeypatch.setenv("TRANSFERDEPTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
