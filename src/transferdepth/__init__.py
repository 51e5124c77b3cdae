"""transferdepth: monocular depth estimation by transfer learning (DenseDepth with many encoders)."""

from __future__ import annotations

from typing import Any

from transferdepth._version import __version__

__all__ = ["DepthEstimator", "__version__", "build_model"]


def __getattr__(name: str) -> Any:
    # `from transferdepth import DepthEstimator` (or build_model) imports torch on first use only: `import transferdepth`
    # (and `transferdepth --version`) stay light.
    if name == "DepthEstimator":
        from transferdepth.api.estimator import DepthEstimator

        return DepthEstimator
    if name == "build_model":
        from transferdepth.weights.build import build_model

        return build_model
    raise AttributeError(f"module 'transferdepth' has no attribute {name!r}")
