"""`rgbd:NAME`: preset folder options for the shared real RGB-D data (see shared/data/rgbd/README.md).

ROOT is $TRANSFERDEPTH_RGBD, else ../shared/data/rgbd from the cwd, else next to the repository; any folder
option may be added or overridden in the spec (`rgbd:7scenes-redkitchen?index=800:&max_depth=5`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transferdepth.data.base import DatasetError
from transferdepth.data.folder import FOLDER_OPTIONS, Folder, open_folder
from transferdepth.data.registry import register_source, suggest
from transferdepth.recipe import NYU_CX, NYU_CY, NYU_FX, NYU_FY

RGBD_ENV = "TRANSFERDEPTH_RGBD"

RGBD_PRESETS: dict[str, dict[str, str]] = {
    "7scenes-redkitchen": {"rgb": "*.color.jpg", "depth": "*.depth.png", "scale": "0.001",
                           "invalid": "0,65535"},  # intrinsics: camera-intrinsics.txt
    "sun3d-office": {"rgb": "*.color.png", "depth": "*.depth.png", "scale": "0.001", "invalid": "0"},
    "kinect-dining": {"rgb": "color/*.png", "depth": "depth/*.pgm", "scale": "0.001", "invalid": "0",
                      "intrinsics": "518,519,325.5,253.5"},
    "nyu-samples": {"rgb": "rgb/rgb_*.jpg", "depth": "depth/sync_depth_*.png", "scale": "0.001",
                    "invalid": "0", "max_depth": "10",
                    "intrinsics": f"{NYU_FX},{NYU_FY},{NYU_CX},{NYU_CY}"},  # NYU's camera at 640x480
}


def rgbd_root() -> Path:
    """Folder of the shared real RGB-D sets: $TRANSFERDEPTH_RGBD, else ../shared/data/rgbd from the cwd,
    else from the repository root."""
    env = os.environ.get(RGBD_ENV)
    if env:
        return Path(env).expanduser()
    tried = [Path.cwd().parent / "shared/data/rgbd",
             Path(__file__).resolve().parents[3].parent / "shared/data/rgbd"]
    for p in tried:
        if p.is_dir():
            return p
    raise DatasetError("rgbd", f"shared RGB-D folder not found; set {RGBD_ENV} (tried {[str(p) for p in tried]})")


def _open(spec: str, path: str, split: str | None, opts: dict[str, Any]) -> Folder:
    if path not in RGBD_PRESETS:
        raise DatasetError(spec, f"unknown rgbd preset {path!r}{suggest(path, list(RGBD_PRESETS))} "
                           f"(valid presets: {', '.join(RGBD_PRESETS)})")
    preset = {k: FOLDER_OPTIONS[k](v) for k, v in RGBD_PRESETS[path].items()}
    return open_folder(spec, str(rgbd_root() / path), split, {**preset, **opts})


register_source("rgbd", _open, FOLDER_OPTIONS)
